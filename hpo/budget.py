"""Budget accounting: pure functions from counts to decisions (no storage, no Optuna)."""

from __future__ import annotations

from dataclasses import dataclass

from .spec import StudySpec
from .vocabulary import RETRYABLE_FAILURES, FailureKind

__all__ = [
    "FAILURE_KINDS",
    "RETRYABLE_KINDS",
    "AskDecision",
    "decide_ask",
    "decide_retry",
    "is_finished",
    "study_size",
    "wall_clock_spent",
]


def study_size(spec: StudySpec, grid_size: int | None) -> int | None:
    """How many trials a study hands out at most: ``max_trials``, capped by the grid's size."""
    limits = [n for n in (spec.budget.max_trials, grid_size) if n is not None]
    return min(limits) if limits else None


@dataclass(frozen=True)
class AskDecision:
    allowed: bool
    reason: str = ""


def decide_ask(
    *, status: str, handed_out: int, size: int | None, name: str, out_of_time: bool = False
) -> AskDecision:
    """May one more trial be handed out of study ``name``?"""
    if status != "running":
        return AskDecision(False, f"study {name!r} is {status}; it hands out no more trials")
    if out_of_time:
        return AskDecision(
            False, f"study {name!r} has used its time budget (budget.max_wall_seconds)"
        )
    if size is not None and handed_out >= size:
        return AskDecision(
            False,
            f"study {name!r} has used its budget: all {size} trials were handed out "
            "(raise budget.max_trials in a new study to search further)",
        )
    return AskDecision(True)


def is_finished(*, handed_out: int, size: int | None, running: int) -> bool:
    """A study is complete when its whole budget was handed out and nothing still runs."""
    return size is not None and handed_out >= size and running == 0


#: failure kinds caused by the infrastructure, not the trial's configuration: worth a retry
RETRYABLE_KINDS = RETRYABLE_FAILURES
#: every failure kind a run record may carry
FAILURE_KINDS = frozenset(FailureKind)


def decide_retry(*, kind: str, attempt: int, max_retries: int) -> bool:
    """Whether attempt ``attempt`` (from 1) that failed with ``kind`` gets another attempt."""
    return kind in RETRYABLE_KINDS and attempt <= max_retries


def wall_clock_spent(*, elapsed_seconds: float, max_wall_seconds: float | None) -> bool:
    return max_wall_seconds is not None and elapsed_seconds >= max_wall_seconds
