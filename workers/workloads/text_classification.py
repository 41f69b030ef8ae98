"""``text-classification``: BERT for sequence classification on a CSV or JSONL file.

Option ``data_path`` names the file: a CSV with a header, or JSON Lines, with fields ``text``
and ``label`` (strings or integers; ids follow the sorted labels). A stratified 80/20 split
(seeded) gives the validation set.

Without option ``pretrained``, a lowercase WordPiece tokenizer (about 2000 tokens) is trained on
the training texts and a small BERT is built from scratch with the trial's architecture. With
``pretrained``, a local directory holding a saved BERT and its tokenizer, both are loaded from
it (``local_files_only``: nothing is downloaded) and fine-tuned, the classic recipe; the
architecture then comes from the directory, and the default learning rate is 2e-5.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import BertWordPieceTokenizer
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from ._base import InvalidHyperparameters, Reporter
from ._training import (
    Hyperparameters,
    TrainingJob,
    batches_of,
    check_options,
    fit,
    int_param,
    pick_device,
    resolve_hyperparameters,
    seed_everything,
    stratified_split,
)

__all__ = ["OPTIONS", "load_examples", "train", "train_wordpiece"]

OPTIONS = ("data_path", "pretrained")
DEFAULT_MAX_LENGTH = 64
VOCAB_SIZE = 2000
FINE_TUNING_LEARNING_RATE = 2e-5
FIELDS = ("text", "label")
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
#: fixed by a pretrained model
ARCHITECTURE_PARAMS = ("num_heads", "num_layers", "hidden_size", "head_dim")


def _read_utf8(path: Path, option: str) -> str:
    """The text of ``path``; an error says where it is not UTF-8, never which bytes are there.

    No message here or below quotes the file: a path that slipped past the data roots, or a
    file with secrets in it, must not come back to the caller in a failure reason.
    """
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"workload option {option!r}: {path} is not UTF-8 text (byte {exc.start} cannot "
            "be decoded); save it as UTF-8"
        ) from None


def _rows(path: Path) -> list[dict[str, Any]]:
    content = _read_utf8(path, "data_path")
    is_jsonl = path.suffix.lower() in (".jsonl", ".ndjson", ".json") or (
        path.suffix.lower() != ".csv" and content.lstrip().startswith("{")
    )
    return _jsonl_rows(path, content) if is_jsonl else _csv_rows(path, content)


def _csv_rows(path: Path, content: str) -> list[dict[str, Any]]:
    reader = csv.DictReader(io.StringIO(content, newline=""))
    try:
        header = reader.fieldnames or []
        missing = [f for f in FIELDS if f not in header]
        if missing:
            raise ValueError(
                f"{path}: the CSV header has {len(header)} column(s), but it needs the columns "
                f"{', '.join(map(repr, FIELDS))} (missing {', '.join(map(repr, missing))})"
            )
        return list(reader)
    except csv.Error as exc:  # the module's messages name the rule broken, not the text
        raise ValueError(f"{path}, line {reader.line_num}: not valid CSV ({exc})") from None


def _jsonl_rows(path: Path, content: str) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(content.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            # the rule only: a message may go on to quote the offending character
            rule = exc.msg.partition(":")[0]
            raise ValueError(
                f"{path}, line {number}, column {exc.colno}: not valid JSON ({rule})"
            ) from None
        missing = [f for f in FIELDS if not isinstance(row, dict) or f not in row]
        if missing:
            raise ValueError(
                f"{path}, line {number}: every line needs the fields 'text' and 'label' "
                f"(missing {', '.join(map(repr, missing))})"
            )
        rows.append(row)
    return rows


def _label_order(label: str) -> tuple[int, int, str]:
    """Integer labels sort numerically ("2" before "10"), then the others as text."""
    try:
        return (0, int(label), "")
    except ValueError:
        return (1, 0, label)


def load_examples(data_path: Any) -> tuple[list[str], np.ndarray, list[str]]:
    """Texts, label ids and the labels (index = id) of a CSV/JSONL file."""
    if data_path is None:
        raise ValueError(
            "workload option 'data_path' is required: a CSV (with a header) or JSONL file "
            "with the fields 'text' and 'label'"
        )
    path = Path(data_path)
    if not path.is_file():
        raise ValueError(f"workload option 'data_path' is {str(path)!r}, which is not a file")
    rows = _rows(path)
    if not rows:
        raise ValueError(f"{path} holds no examples")
    for number, row in enumerate(rows, 1):
        empty = [f for f in FIELDS if row[f] is None]
        if empty:
            raise ValueError(f"{path}: example {number} has no {' and no '.join(empty)}")
    texts = [str(row["text"]) for row in rows]
    raw = [str(row["label"]).strip() for row in rows]
    labels = sorted(set(raw), key=_label_order)
    if len(labels) < 2:
        raise ValueError(f"{path}: every example has the same label; it needs 2 or more labels")
    ids = {label: i for i, label in enumerate(labels)}
    return texts, np.array([ids[label] for label in raw], dtype=np.int64), labels


Encoder = Callable[[list[str]], dict[str, torch.Tensor]]


def train_wordpiece(texts: list[str]) -> BertWordPieceTokenizer:
    """A lowercase WordPiece tokenizer trained on ``texts``, the same on every run.

    The trainer numbers the ``##x`` continuation tokens in hash-map order and breaks ties
    between merges by those numbers, so two runs can learn different vocabularies
    (huggingface/tokenizers#1794). Declaring every ``##x`` up front, in sorted order, fixes
    their numbers; the tokenizer is then rebuilt from the vocabulary, where they are plain
    tokens again.
    """
    trainee = BertWordPieceTokenizer(lowercase=True)
    normalizer, pre_tokenizer = trainee.normalizer, trainee.pre_tokenizer
    inner = {
        char
        for text in texts
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))
        for char in word[1:]
    }
    trainee.train_from_iterator(
        texts,
        vocab_size=VOCAB_SIZE,
        special_tokens=[*SPECIAL_TOKENS, *(f"##{c}" for c in sorted(inner))],
        show_progress=False,
    )
    return BertWordPieceTokenizer(trainee.get_vocab(), lowercase=True)


def _wordpiece_encoder(texts: list[str], max_length: int) -> tuple[Encoder, int]:
    """A WordPiece tokenizer trained on ``texts`` as an encoder, and its vocabulary size."""
    tokenizer = train_wordpiece(texts)
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]"), pad_token="[PAD]")

    def encode(batch: list[str]) -> dict[str, torch.Tensor]:
        encodings = tokenizer.encode_batch(batch)  # padded to the longest of ``batch``
        return {
            "input_ids": torch.tensor([e.ids for e in encodings]),
            "attention_mask": torch.tensor([e.attention_mask for e in encodings]),
        }

    return encode, tokenizer.get_vocab_size()


def _from_scratch(
    texts: list[str], labels: list[str], hp: Hyperparameters, max_length: int
) -> tuple[BertForSequenceClassification, Encoder]:
    encode, vocab_size = _wordpiece_encoder(texts, max_length)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=hp.hidden_size,
        num_hidden_layers=hp.num_layers,
        num_attention_heads=hp.num_heads,
        intermediate_size=hp.intermediate_size,
        hidden_dropout_prob=hp.dropout,
        attention_probs_dropout_prob=hp.dropout,
        max_position_embeddings=max_length,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    return BertForSequenceClassification(config), encode


def _pretrained_config(pretrained: Any, params: dict[str, Any], max_length: int) -> BertConfig:
    """The saved model's config, checked against the trial before anything heavy loads."""
    directory = Path(pretrained)
    if not directory.is_dir():
        raise ValueError(
            f"workload option 'pretrained' is {str(pretrained)!r}, which is not a local "
            "directory; give the directory of a BERT and tokenizer saved with save_pretrained "
            "(nothing is downloaded)"
        )
    fixed = sorted(set(params) & set(ARCHITECTURE_PARAMS))
    if fixed:
        raise InvalidHyperparameters(
            f"{', '.join(fixed)} cannot be set when fine-tuning: the architecture comes from "
            f"the pretrained model in {str(directory)!r}; remove them from the search space"
        )
    if not (directory / "config.json").is_file():
        raise ValueError(
            f"workload option 'pretrained' is {str(directory)!r}, which holds no config.json; "
            "save the model there with save_pretrained (and its tokenizer likewise)"
        )
    config = BertConfig.from_pretrained(directory, local_files_only=True)
    if max_length > config.max_position_embeddings:
        raise InvalidHyperparameters(
            f"max_length is {max_length}, but the pretrained model takes at most "
            f"max_position_embeddings={config.max_position_embeddings} tokens"
        )
    return config


def _fine_tune(
    pretrained: Any, labels: list[str], hp: Hyperparameters, max_length: int
) -> tuple[BertForSequenceClassification, Encoder]:
    tokenizer = AutoTokenizer.from_pretrained(pretrained, local_files_only=True)
    model = BertForSequenceClassification.from_pretrained(
        pretrained,
        local_files_only=True,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        ignore_mismatched_sizes=True,  # a saved classifier head with other labels is replaced
        hidden_dropout_prob=hp.dropout,
        attention_probs_dropout_prob=hp.dropout,
    )

    def encode(batch: list[str]) -> dict[str, torch.Tensor]:
        return dict(
            tokenizer(
                batch, truncation=True, max_length=max_length, padding=True, return_tensors="pt"
            )
        )

    return model, encode


def train(
    params: dict[str, Any],
    reporter: Reporter,
    *,
    options: dict[str, Any],
    max_epochs: int,
    seed: int,
) -> dict[str, float] | None:
    """Train (or fine-tune) BERT; reports ``val_accuracy``, ``val_loss`` and epoch metrics."""
    check_options(options, OPTIONS)
    pretrained = options.get("pretrained")
    hp = resolve_hyperparameters(
        params,
        extra=("max_length",),
        learning_rate=1e-3 if pretrained is None else FINE_TUNING_LEARNING_RATE,
    )
    max_length = int_param(params, "max_length", default=DEFAULT_MAX_LENGTH, minimum=3)
    if pretrained is not None:
        _pretrained_config(pretrained, params, max_length)
    texts, targets, labels = load_examples(options.get("data_path"))
    train_idx, val_idx = stratified_split(targets, seed=seed)
    train_texts = [texts[i] for i in train_idx]
    device = pick_device()
    seed_everything(seed)
    if pretrained is None:
        model, encode = _from_scratch(train_texts, labels, hp, max_length)
    else:
        model, encode = _fine_tune(pretrained, labels, hp, max_length)
    train_inputs, train_y = encode(train_texts), torch.from_numpy(targets[train_idx])
    generator = torch.Generator().manual_seed(seed)
    job = TrainingJob(
        model=model,
        train_batches=lambda: batches_of(train_inputs, train_y, hp.batch_size, generator=generator),
        train_samples=len(train_y),
        val_batches=batches_of(
            encode([texts[i] for i in val_idx]), torch.from_numpy(targets[val_idx]), 256
        ),
    )
    return fit(job, hp, reporter, max_epochs=max_epochs, device=device)
