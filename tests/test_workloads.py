"""The model workloads, trained for real on tiny settings (CPU, a second or two per run).

Each test calls a workload's ``train`` as a worker would, with a reporter that records what it
is told, and checks what a study would see: one report per epoch, the metrics the catalog
(:data:`hpo.workloads.BUILTIN`) promises, learning, early stop, reproducibility, and clear
errors for configurations and data that cannot work.
"""

from __future__ import annotations

import csv
import importlib
import json
import math
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from hpo.workloads import BUILTIN
from workers.workloads._base import InvalidHyperparameters, NonFiniteLoss
from workers.workloads.text_classification import load_examples, train_wordpiece

MODEL_WORKLOADS = [name for name in BUILTIN if name != "synthetic"]
EPOCHS = 4
TIMING = {"epoch_seconds", "samples_per_second", "gpu_memory_peak_mb"}
POSITIVE = ["good", "great", "excellent", "wonderful", "lovely"]
NEGATIVE = ["bad", "awful", "terrible", "poor", "boring"]
FILLER = "the a movie film plot actors story was really quite very this that it and but".split()


class Recorder:
    """A reporter that remembers every report and asks to stop at ``stop_at``."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.stop_at = stop_at
        self.calls: list[tuple[int, dict[str, float]]] = []

    def report(self, step: int, metrics: dict[str, float]) -> bool:
        self.calls.append((step, dict(metrics)))
        return step == self.stop_at

    @property
    def steps(self) -> list[int]:
        return [step for step, _ in self.calls]

    def series(self, metric: str) -> list[float]:
        return [metrics[metric] for _, metrics in self.calls]


@pytest.fixture(scope="module", autouse=True)
def two_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def write_sentiment(path: Path, n: int = 300, seed: int = 0) -> Path:
    """``n`` short sentences labelled by the sentiment word each one contains."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as f:
        for _ in range(n):
            label = rng.choice(["positive", "negative"])
            words = rng.choices(FILLER, k=rng.randint(4, 9))
            cue = rng.choice(POSITIVE if label == "positive" else NEGATIVE)
            words.insert(rng.randrange(len(words) + 1), cue)
            f.write(json.dumps({"text": " ".join(words), "label": label}) + "\n")
    return path


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sentiment(tmp_path_factory.mktemp("data") / "sentiment.jsonl")


def tiny(name: str, sentiment: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Params and options that train ``name`` in about a second per epoch."""
    settings = {
        "digits-vit": ({"learning_rate": 3e-3, "batch_size": 16}, {"max_samples": 600}),
        "charlm-gpt": (
            {"learning_rate": 3e-3, "context_length": 32},
            {"max_chars": 20_000, "windows_per_epoch": 300},
        ),
        "text-classification": (
            {"learning_rate": 2e-3, "batch_size": 16},
            {"data_path": str(sentiment)},
        ),
    }
    assert name in settings, f"give the new built-in workload {name!r} tiny test settings here"
    return settings[name]


def workload(name: str) -> Callable[..., dict[str, float] | None]:
    module = importlib.import_module(f"workers.workloads.{name.replace('-', '_')}")
    return module.train


def train(
    name: str, sentiment: Path, *, params: dict[str, Any] | None = None, **kwargs: Any
) -> tuple[Recorder, dict[str, float] | None]:
    base_params, options = tiny(name, sentiment)
    recorder = Recorder(kwargs.pop("stop_at", None))
    kwargs = {"max_epochs": EPOCHS, "seed": 0, "options": options, **kwargs}
    result = workload(name)({**base_params, **(params or {})}, recorder, **kwargs)
    return recorder, result


@pytest.fixture(scope="module")
def full_run(sentiment: Path) -> Callable[[str], tuple[Recorder, dict[str, float] | None]]:
    """One EPOCHS-long run per workload, shared by the tests that only look at it."""
    runs: dict[str, tuple[Recorder, dict[str, float] | None]] = {}

    def get(name: str) -> tuple[Recorder, dict[str, float] | None]:
        if name not in runs:
            runs[name] = train(name, sentiment)
        return runs[name]

    return get


@pytest.mark.parametrize("name", MODEL_WORKLOADS)
def test_each_model_workload_reports_what_the_catalog_promises(name: str, full_run) -> None:
    recorder, result = full_run(name)
    promised = set(BUILTIN[name].metrics)
    if not torch.cuda.is_available():
        promised.discard("gpu_memory_peak_mb")
    assert recorder.steps == list(range(1, EPOCHS + 1))
    for _, metrics in recorder.calls:
        assert set(metrics) == promised
        assert all(math.isfinite(v) for v in metrics.values()), metrics
    assert result == recorder.calls[-1][1]


@pytest.mark.parametrize("name", MODEL_WORKLOADS)
def test_each_model_workload_learns(name: str, full_run) -> None:
    recorder, _ = full_run(name)
    assert recorder.series("val_loss")[-1] < recorder.series("val_loss")[0]
    assert recorder.series("train_loss")[-1] < recorder.series("train_loss")[0]
    if name == "digits-vit":
        assert recorder.series("val_accuracy")[-1] > 0.3  # chance is 0.1
    if name == "text-classification":
        assert recorder.series("val_accuracy")[-1] > 0.75  # chance is 0.5


def test_a_stop_request_ends_training_at_once(sentiment: Path) -> None:
    recorder, result = train(
        "digits-vit", sentiment, options={"max_samples": 100}, max_epochs=5, stop_at=2
    )
    assert recorder.steps == [1, 2]
    assert result is None


@pytest.mark.parametrize("name", MODEL_WORKLOADS)
def test_the_same_seed_gives_the_same_first_epoch(name: str, sentiment: Path) -> None:
    first, second, other = (train(name, sentiment, max_epochs=1, seed=s)[0] for s in (7, 7, 8))

    def untimed(recorder: Recorder) -> dict[str, float]:
        return {k: v for k, v in recorder.calls[0][1].items() if k not in TIMING}

    assert untimed(first) == untimed(second)
    assert untimed(first)["train_loss"] != untimed(other)["train_loss"]


@pytest.mark.parametrize("name", MODEL_WORKLOADS)
def test_heads_that_do_not_divide_the_hidden_size_are_refused_before_training(
    name: str, sentiment: Path
) -> None:
    recorder = Recorder()
    params, options = tiny(name, sentiment)
    with pytest.raises(InvalidHyperparameters, match="hidden_size is 64 and num_heads is 3"):
        workload(name)(
            {**params, "num_heads": 3, "hidden_size": 64},
            recorder,
            options=options,
            max_epochs=2,
            seed=0,
        )
    assert recorder.calls == []


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"batch_size": 0}, "'batch_size' is 0, but must be batch_size >= 1"),
        ({"dropout": -0.1}, "'dropout' is -0.1, but must be 0 <= dropout < 1"),
        ({"num_layers": 2.5}, "'num_layers' is 2.5, but must be a whole number"),
        ({"learning_rate": "fast"}, "'learning_rate' is 'fast', but must be a number"),
        ({"hidden_size": 64, "head_dim": 32}, "must be num_heads \\* head_dim = 128"),
        ({"hiden_size": 64}, "unknown hyperparameter\\(s\\) 'hiden_size'"),
    ],
)
def test_bad_values_are_refused_with_the_rule(
    params: dict[str, Any], message: str, sentiment: Path
) -> None:
    recorder = Recorder()
    with pytest.raises(InvalidHyperparameters, match=message):
        workload("digits-vit")(params, recorder, options={}, max_epochs=1, seed=0)
    assert recorder.calls == []


def test_whole_floats_count_as_ints_and_head_dim_sets_the_width(sentiment: Path) -> None:
    recorder, result = train(
        "digits-vit",
        sentiment,
        params={"num_heads": 2.0, "head_dim": 16, "num_layers": 1.0},
        options={"max_samples": 100},
        max_epochs=1,
    )
    assert recorder.steps == [1] and result is not None


@pytest.mark.parametrize("name", MODEL_WORKLOADS)
def test_a_diverging_learning_rate_fails_the_trial(name: str, sentiment: Path) -> None:
    recorder = Recorder()
    params, options = tiny(name, sentiment)
    with pytest.raises(NonFiniteLoss, match=r"at epoch \d+, batch \d+ of \d+, learning rate"):
        workload(name)(
            {**params, "learning_rate": 1e4}, recorder, options=options, max_epochs=3, seed=0
        )
    for _, metrics in recorder.calls:  # whatever got reported before was finite
        assert all(math.isfinite(v) for v in metrics.values())


def test_an_unknown_option_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown workload option\\(s\\) 'max_sample'"):
        workload("digits-vit")({}, Recorder(), options={"max_sample": 100}, max_epochs=1, seed=0)


def test_charlm_trains_on_a_given_text_file(tmp_path: Path) -> None:
    text = tmp_path / "poem.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 200, encoding="utf-8")
    recorder = Recorder()
    workload("charlm-gpt")(
        {"context_length": 16},
        recorder,
        options={"text_path": str(text), "windows_per_epoch": 64},
        max_epochs=1,
        seed=0,
    )
    assert recorder.steps == [1]
    # the 28 distinct characters of the text bound a uniform guess's perplexity
    assert recorder.calls[0][1]["val_perplexity"] < 28
    with pytest.raises(ValueError, match="'text_path' is .*missing.txt'?, which is not a file"):
        workload("charlm-gpt")(
            {},
            Recorder(),
            options={"text_path": str(tmp_path / "missing.txt")},
            max_epochs=1,
            seed=0,
        )


def test_text_classification_needs_a_data_path(tmp_path: Path) -> None:
    run = workload("text-classification")
    with pytest.raises(ValueError, match="option 'data_path' is required"):
        run({}, Recorder(), options={}, max_epochs=1, seed=0)
    missing = tmp_path / "missing.jsonl"
    with pytest.raises(ValueError, match="missing.jsonl'?, which is not a file"):
        run({}, Recorder(), options={"data_path": str(missing)}, max_epochs=1, seed=0)


def test_text_classification_names_the_missing_fields(tmp_path: Path) -> None:
    no_label = tmp_path / "no_label.csv"
    no_label.write_text("text,sentiment\ngood film,1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="needs the columns 'text', 'label' \\(missing 'label'\\)"):
        load_examples(no_label)
    bad_line = tmp_path / "bad.jsonl"
    bad_line.write_text('{"text": "good", "label": 1}\n{"text": "bad"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="line 2: .*missing 'label'"):
        load_examples(bad_line)


def test_text_classification_reads_csv_with_integer_labels(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    with data.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["label", "text"])
        writer.writerows([[10, "ten"], [2, "two"], [2, "deux"], [10, "dix"]])
    texts, ids, labels = load_examples(data)
    assert labels == ["2", "10"]  # numeric order, not "10" < "2"
    assert texts == ["ten", "two", "deux", "dix"]
    assert ids.tolist() == [1, 0, 0, 1]


def test_the_trained_tokenizer_is_the_same_on_every_run(sentiment: Path) -> None:
    # the tokenizers trainer alone numbers tokens differently from run to run
    texts, _, _ = load_examples(sentiment)
    vocabularies = [train_wordpiece(texts).get_vocab() for _ in range(5)]
    assert all(v == vocabularies[0] for v in vocabularies)
    assert vocabularies[0]["[PAD]"] == 0 and "wonderful" in vocabularies[0]


def save_tiny_bert(directory: Path, sentiment: Path) -> Path:
    """A small BERT and its tokenizer saved like a downloaded checkpoint would be."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    texts = [json.loads(line)["text"] for line in sentiment.read_text().splitlines()]
    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(texts, vocab_size=500, show_progress=False)
    directory.mkdir()
    wordpiece.save_model(str(directory))
    tokenizer = BertTokenizerFast(vocab_file=str(directory / "vocab.txt"))
    tokenizer.save_pretrained(directory)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertForMaskedLM(config).save_pretrained(directory)
    return directory


def test_text_classification_fine_tunes_a_local_pretrained_bert(
    tmp_path: Path, sentiment: Path
) -> None:
    pretrained = save_tiny_bert(tmp_path / "bert", sentiment)
    run = workload("text-classification")
    options = {"data_path": str(sentiment), "pretrained": str(pretrained)}
    recorder = Recorder()
    result = run({"batch_size": 16}, recorder, options=options, max_epochs=1, seed=0)
    assert recorder.steps == [1] and result is not None
    assert {"val_accuracy", "val_loss"} <= set(result)
    with pytest.raises(InvalidHyperparameters, match="num_layers cannot be set when fine-tuning"):
        run({"num_layers": 4}, Recorder(), options=options, max_epochs=1, seed=0)
    hub_name = {"data_path": str(sentiment), "pretrained": "bert-base-uncased"}
    with pytest.raises(ValueError, match="not a local directory"):
        run({}, Recorder(), options=hub_name, max_epochs=1, seed=0)
