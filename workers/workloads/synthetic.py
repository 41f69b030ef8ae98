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


def _check(params: dict[str, Any], options: dict[str, Any]) -> None:
    for name, values in dict(options.get("raise_when", {})).items():
        if params.get(name) in list(values):
            raise ValueError(
                f"synthetic workload rejects {name}={params[name]!r} (options.raise_when)"
            )


def train(
    params: dict[str, Any],
    reporter: Reporter,
    *,
    options: dict[str, Any],
    max_epochs: int,
    seed: int,
) -> dict[str, float] | None:
    """Sleep ``options.epoch_seconds`` (default 0.2) per epoch and report the analytic curve."""
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
