"""``charlm-gpt``: a character-level GPT-2 trained from scratch on a text.

The text is option ``text_path`` (UTF-8), or by default the top-level ``*.py`` modules of the
running Python's standard library, in file-name order, up to ``max_chars``: always there, never
downloaded, and the same on every worker that runs the same Python version.

The first 90% of the text trains, the last 10% validates. An epoch is ``windows_per_epoch``
windows of ``context_length + 1`` characters drawn at seeded random positions of the training
text (so ``samples_per_second`` counts windows); validation uses fixed, non-overlapping windows.
"""

from __future__ import annotations

import math
import sysconfig
from pathlib import Path
from typing import Any

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from ._base import InvalidHyperparameters, Reporter
from ._training import (
    Batch,
    Hyperparameters,
    TrainingJob,
    batches_of,
    check_options,
    fit,
    int_option,
    int_param,
    pick_device,
    resolve_hyperparameters,
    seed_everything,
)

__all__ = ["OPTIONS", "default_text", "train"]

OPTIONS = ("text_path", "max_chars", "windows_per_epoch")
DEFAULT_MAX_CHARS = 200_000
DEFAULT_WINDOWS_PER_EPOCH = 2000
DEFAULT_CONTEXT_LENGTH = 64
#: validation cost stays bounded on a large text
MAX_VAL_WINDOWS = 512
VAL_FRACTION = 0.1
MIN_CHARS = 1000


def default_text(max_chars: int) -> str:
    """The first ``max_chars`` characters of the stdlib's top-level modules, by file name."""
    parts: list[str] = []
    size = 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        if size >= max_chars:
            break
        part = path.read_text(encoding="utf-8", errors="replace")
        parts.append(part)
        size += len(part)
    if not parts:
        raise ValueError(
            "found no Python standard-library sources to train on; give option 'text_path'"
        )
    return "".join(parts)[:max_chars]


def load_text(options: dict[str, Any]) -> str:
    max_chars = int_option(options, "max_chars", default=DEFAULT_MAX_CHARS, minimum=MIN_CHARS)
    text_path = options.get("text_path")
    if text_path is None:
        return default_text(max_chars)
    path = Path(text_path)
    if not path.is_file():
        raise ValueError(f"workload option 'text_path' is {str(path)!r}, which is not a file")
    try:
        with path.open(encoding="utf-8") as f:
            return f.read(max_chars)
    except UnicodeDecodeError:  # its message would quote a byte of the file
        raise ValueError(
            f"workload option 'text_path': {path} is not UTF-8 text; save it as UTF-8"
        ) from None


def _val_batches(data: torch.Tensor, context: int, batch_size: int) -> list[Batch]:
    starts = torch.arange(0, len(data) - context, context)
    if len(starts) > MAX_VAL_WINDOWS:
        starts = starts[torch.linspace(0, len(starts) - 1, MAX_VAL_WINDOWS).long()]
    windows = torch.stack([data[s : s + context + 1] for s in starts.tolist()])
    return batches_of({"input_ids": windows[:, :-1]}, windows[:, 1:], batch_size)


def _train_batches(
    data: torch.Tensor, context: int, count: int, batch_size: int, generator: torch.Generator
) -> list[Batch]:
    starts = torch.randint(0, len(data) - context, (count,), generator=generator)
    windows = data[starts.unsqueeze(1) + torch.arange(context + 1)]
    return batches_of({"input_ids": windows[:, :-1]}, windows[:, 1:], batch_size)


def build_model(hp: Hyperparameters, *, vocab_size: int, context: int) -> GPT2LMHeadModel:
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=context,
        n_embd=hp.hidden_size,
        n_layer=hp.num_layers,
        n_head=hp.num_heads,
        n_inner=hp.intermediate_size,
        resid_pdrop=hp.dropout,
        embd_pdrop=hp.dropout,
        attn_pdrop=hp.dropout,
        bos_token_id=None,
        eos_token_id=None,
    )
    return GPT2LMHeadModel(config)


def _perplexity_metrics(loss: float, _accuracy: float) -> dict[str, float]:
    # exp overflows past ~709 nats; inf is then refused by fit as a diverged model
    return {"val_loss": loss, "val_perplexity": math.exp(loss) if loss < 700 else math.inf}


def train(
    params: dict[str, Any],
    reporter: Reporter,
    *,
    options: dict[str, Any],
    max_epochs: int,
    seed: int,
) -> dict[str, float] | None:
    """Train the character LM; reports ``val_loss``, ``val_perplexity`` and epoch metrics."""
    hp = resolve_hyperparameters(params, extra=("context_length",))
    context = int_param(params, "context_length", default=DEFAULT_CONTEXT_LENGTH, minimum=2)
    check_options(options, OPTIONS)
    windows = int_option(options, "windows_per_epoch", default=DEFAULT_WINDOWS_PER_EPOCH, minimum=1)
    text = load_text(options)
    if len(text) < MIN_CHARS or len(set(text)) < 2:
        raise ValueError(
            f"the text has {len(text)} characters ({len(set(text))} distinct); "
            f"a language model needs at least {MIN_CHARS}, and 2 distinct ones"
        )
    vocab = {c: i for i, c in enumerate(sorted(set(text)))}
    data = torch.tensor([vocab[c] for c in text], dtype=torch.long)
    split = int(len(data) * (1 - VAL_FRACTION))
    train_data, val_data = data[:split], data[split:]
    if len(val_data) <= context:
        raise InvalidHyperparameters(
            f"context_length is {context}, but the validation text has only {len(val_data)} "
            f"characters (10% of {len(data)}); context_length must be < {len(val_data)}, "
            "or give a longer text"
        )
    device = pick_device()
    seed_everything(seed)
    generator = torch.Generator().manual_seed(seed)
    job = TrainingJob(
        model=build_model(hp, vocab_size=len(vocab), context=context),
        train_batches=lambda: _train_batches(
            train_data, context, windows, hp.batch_size, generator
        ),
        train_samples=windows,
        val_batches=_val_batches(val_data, context, 128),
        val_metrics=_perplexity_metrics,
    )
    return fit(job, hp, reporter, max_epochs=max_epochs, device=device)
