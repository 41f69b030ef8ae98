"""Analytic learning curves: no model, just a known shape and a configurable epoch time.

For tests and overhead benchmarks. The final accuracy is highest at ``learning_rate=1e-3`` and
``dropout=0.1`` (when the space has them) and at ``x=0.6`` for a generic ``x``; every other
parameter is ignored. Curves rise as ``1 - exp(-epoch / 3)``, so early epochs rank trials
the way their last epoch does, which is what successive halving bets on.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any

from ._base import Reporter


def quality(params: dict[str, Any]) -> float:
    """The accuracy a trial would reach with infinitely many epochs (0.1 to 0.95)."""
    distance = 0.0
    if isinstance(params.get("learning_rate"), (int, float)) and params["learning_rate"] > 0:
        distance += ((math.log10(params["learning_rate"]) + 3) / 2) ** 2
    if isinstance(params.get("dropout"), (int, float)):
        distance += 4 * (params["dropout"] - 0.1) ** 2
    if isinstance(params.get("x"), (int, float)):
        distance += 4 * (params["x"] - 0.6) ** 2
    return 0.1 + 0.85 * math.exp(-distance)


#: the parameters the memory model multiplies (a missing one counts as 1)
MEMORY_PARAMS = ("batch_size", "num_layers", "hidden_size")


def memory_needed(params: dict[str, Any]) -> float:
    """The memory model of ``options.memory_limit``: batch_size x num_layers x hidden_size,
    of those the trial has."""
    needed = 1.0
    for name in MEMORY_PARAMS:
        value = params.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            needed *= value
    return needed


def out_of_memory(message: str) -> Exception:
    """The error torch raises when a GPU runs out of memory (a stand-in of the same name
    without torch): the runner reports either as kind ``oom``."""
    try:
        import torch
    except ImportError:
        return OutOfMemoryError(message)
    return torch.cuda.OutOfMemoryError(message)


class OutOfMemoryError(MemoryError):
    """``torch.cuda.OutOfMemoryError`` where torch is not installed."""


def _check(params: dict[str, Any], options: dict[str, Any]) -> None:
    for name, values in dict(options.get("raise_when", {})).items():
        if params.get(name) in list(values):
            raise ValueError(
                f"synthetic workload rejects {name}={params[name]!r} (options.raise_when)"
            )
    limit = options.get("memory_limit")
    if limit is None:
        return
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit <= 0:
        raise ValueError(f"options.memory_limit is {limit!r}, but must be a number > 0")
    needed = memory_needed(params)
    if needed > limit:
        raise out_of_memory(
            f"synthetic workload: batch_size x num_layers x hidden_size = {needed:g} exceeds "
            f"options.memory_limit = {limit:g} (CUDA out of memory, simulated)"
        )


def train(
    params: dict[str, Any],
    reporter: Reporter,
    *,
    options: dict[str, Any],
    max_epochs: int,
    seed: int,
) -> dict[str, float] | None:
    """Sleep ``options.epoch_seconds`` (default 0.2) per epoch and report the analytic curve.

    With ``options.memory_limit``, a trial whose :func:`memory_needed` exceeds it raises the
    out-of-memory error of torch before its first epoch, as a GPU would.
    """
    _check(params, options)
    epoch_seconds = float(options.get("epoch_seconds", 0.2))
    rng = random.Random(seed)
    top = quality(params)
    metrics: dict[str, float] = {}
    for epoch in range(1, max_epochs + 1):
        started = time.perf_counter()
        time.sleep(epoch_seconds)
        acc = top * (1 - math.exp(-epoch / 3)) + rng.gauss(0, 0.002)
        metrics = {
            "val_accuracy": acc,
            "val_loss": -math.log(max(acc, 1e-6)),
            "train_loss": -math.log(max(acc, 1e-6)) * 0.9,
            "epoch_seconds": time.perf_counter() - started,
        }
        if reporter.report(epoch, metrics):
            return None
    return metrics
