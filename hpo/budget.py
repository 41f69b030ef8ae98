"""Budget accounting: pure functions from counts to decisions (no storage, no Optuna)."""

from __future__ import annotations

from dataclasses import dataclass

from .spec import StudySpec

__all__ = ["AskDecision", "decide_ask", "study_size", "is_finished"]


def study_size(spec: StudySpec, grid_size: int | None) -> int | None:
    """How many trials a study hands out at most: ``max_trials``, capped by the grid's size."""
    limits = [n for n in (spec.budget.max_trials, grid_size) if n is not None]
    return min(limits) if limits else None


@dataclass(frozen=True)
class AskDecision:
    allowed: bool
    reason: str = ""


def decide_ask(*, status: str, handed_out: int, size: int | None, name: str) -> AskDecision:
    """May one more trial be handed out of study ``name``?"""
    if status != "running":
        return AskDecision(False, f"study {name!r} is {status}; it hands out no more trials")
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
