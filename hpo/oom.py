"""Out-of-memory retries (``resources.on_oom: accumulate``): pure rules over plain values.

An attempt that runs out of GPU memory is retried at half the per-device batch with twice the
gradient-accumulation steps, so the effective batch (batch x accumulation) stays the same; the
batch is halved down to ``resources.min_batch_size`` and no further, after which the trial
fails with kind ``oom``. Such retries are counted apart from ``budget.max_retries``, which is
meant for failures of the infrastructure (a crash, a lost node): a retry for memory is bounded
by the floor instead (at most log2(batch) of them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "ACCUMULATION",
    "BATCH",
    "AttemptBatch",
    "attempt_batch",
    "attempt_params",
    "halved",
]

#: the parameter names the rule reads and overrides
BATCH = "batch_size"
ACCUMULATION = "gradient_accumulation_steps"


@dataclass(frozen=True)
class AttemptBatch:
    """The per-device batch and gradient-accumulation steps one attempt trains with."""

    batch_size: int
    accumulation: int

    @property
    def effective(self) -> int:
        return self.batch_size * self.accumulation


def _whole(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value) if float(value).is_integer() and value >= 1 else None


def attempt_batch(
    params: dict[str, Any], batch_size: int | None = None, accumulation: int | None = None
) -> AttemptBatch | None:
    """What an attempt trains with: the run record's own values where it has them (an
    out-of-memory retry), else the trial's parameters (accumulation 1 when the space has no
    ``gradient_accumulation_steps``); None when the trial has no whole ``batch_size``."""
    batch = batch_size if batch_size is not None else _whole(params.get(BATCH))
    if batch is None:
        return None
    steps = accumulation if accumulation is not None else _whole(params.get(ACCUMULATION))
    return AttemptBatch(batch, steps or 1)


def halved(current: AttemptBatch | None, *, floor: int) -> AttemptBatch | None:
    """The next attempt after an out-of-memory one: half the batch (floor division), twice the
    accumulation; None when that would go below ``floor`` (or there is no batch to halve)."""
    if current is None or current.batch_size // 2 < max(floor, 1):
        return None
    return AttemptBatch(current.batch_size // 2, current.accumulation * 2)


def attempt_params(params: dict[str, Any], batch: AttemptBatch | None) -> dict[str, Any]:
    """The parameters handed to the worker for an attempt: the trial's, with the attempt's own
    batch and accumulation when it has them (both names are then always given)."""
    if batch is None:
        return dict(params)
    return {**params, BATCH: batch.batch_size, ACCUMULATION: batch.accumulation}
