"""Budget accounting: pure functions from counts to decisions (no storage, no Optuna)."""

from __future__ import annotations

from dataclasses import dataclass

from .spec import StudySpec
from .vocabulary import RETRYABLE_FAILURES, FailureKind

__all__ = [
    "FAILURE_KINDS",
    "RETRYABLE_KINDS",
    "AskDecision",
    "ComputeLimits",
    "ComputeUsage",
    "compute_finished",
    "compute_limits",
    "decide_ask",
    "decide_compute",
    "devices_held",
    "room_for_retry",
    "seconds_per_epoch",
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


# -- compute budgets: epochs and GPU-hours (CPU-hours for a study without GPUs) -------------


@dataclass(frozen=True)
class ComputeUsage:
    """What a study's attempts (run records, retries included) have used so far.

    ``device_seconds`` is devices held x wall time of every attempt a worker took, a running
    one counted up to now; ``in_flight`` counts the attempts that may still use compute
    (running, or a retry waiting for a worker), ``in_flight_epochs`` the epochs they already
    reported.
    """

    epochs: int = 0
    device_seconds: float = 0.0
    in_flight: int = 0
    in_flight_epochs: int = 0
    #: of those in flight, the retries waiting for a worker
    waiting: int = 0


@dataclass(frozen=True)
class ComputeLimits:
    """A study's compute budget, from its spec (``None``: that budget is unlimited)."""

    max_epochs: int
    parallelism: int
    max_total_epochs: int | None = None
    max_device_seconds: float | None = None
    #: ``GPU`` or ``CPU``: what a device-hour counts
    device: str = "GPU"

    @property
    def limited(self) -> bool:
        return self.max_total_epochs is not None or self.max_device_seconds is not None


def compute_limits(spec: StudySpec) -> ComputeLimits:
    """The compute budget of ``spec``: a study without GPUs counts CPU-hours the same way."""
    budget = spec.budget
    hours = budget.max_gpu_hours
    return ComputeLimits(
        max_epochs=budget.max_epochs,
        parallelism=budget.parallelism,
        max_total_epochs=budget.max_total_epochs,
        max_device_seconds=None if hours is None else hours * 3600.0,
        device="GPU" if spec.resources.gpus_per_trial > 0 else "CPU",
    )


def devices_held(spec: StudySpec) -> float:
    """GPUs one attempt holds, or its CPUs for a study that asks for no GPU."""
    resources = spec.resources
    return resources.gpus_per_trial if resources.gpus_per_trial > 0 else resources.cpus_per_trial


def seconds_per_epoch(usage: ComputeUsage) -> float | None:
    """Device-seconds one epoch has cost so far (start-up included), or None before any."""
    return usage.device_seconds / usage.epochs if usage.epochs > 0 else None


def decide_compute(
    *, usage: ComputeUsage, limits: ComputeLimits, name: str, begun: bool = False
) -> AskDecision:
    """May study ``name`` hand out one more trial within its compute budget? (``begun``: a
    retry waiting for a worker, already counted in flight.)

    A new trial goes out only when it fits beside the trials in flight, each counted as
    running to ``max_epochs``: so the epoch budget is never exceeded. GPU-hours are estimated
    from the device-seconds per epoch observed so far (before the first epoch, the first
    ``parallelism`` trials go). A retry already begun goes out unless the budget is all spent.
    """
    epochs_left = _epochs_left(usage, limits)
    seconds_left = _seconds_left(usage, limits)
    for left, text in ((epochs_left, _epochs_text), (seconds_left, _seconds_text)):
        if left is not None and left[0] <= 0:
            return AskDecision(False, _refusal(name, text(usage, limits), "is all spent"))
    if begun:
        return AskDecision(True)
    if epochs_left is not None and epochs_left[1] < limits.max_epochs:
        why = f"leaves no room for one more trial of {limits.max_epochs} epochs"
        return AskDecision(False, _refusal(name, _epochs_text(usage, limits), why))
    if seconds_left is not None and seconds_left[1] < 0:
        why = "leaves no room for one more trial at the cost per epoch seen so far"
        return AskDecision(False, _refusal(name, _seconds_text(usage, limits), why))
    return AskDecision(True)


def room_for_retry(*, usage: ComputeUsage, limits: ComputeLimits) -> str | None:
    """Why a failed attempt may not be retried within the compute budget (None: it may).

    ``usage`` is read after the failed attempt ended. A retry is a whole new attempt: it must
    fit the epoch budget beside the trials in flight, as a new trial must; GPU-hours, which
    are an estimate, only need to be not all spent.
    """
    epochs_left = _epochs_left(usage, limits)
    if epochs_left is not None and epochs_left[1] < limits.max_epochs:
        return f"{_epochs_text(usage, limits)} has no room for another attempt"
    seconds_left = _seconds_left(usage, limits)
    if seconds_left is not None and seconds_left[0] <= 0:
        return f"{_seconds_text(usage, limits)} is all spent"
    return None


def _epochs_left(usage: ComputeUsage, limits: ComputeLimits) -> tuple[float, float] | None:
    """Epochs unspent, and unspent after the trials in flight ran to ``max_epochs``."""
    if limits.max_total_epochs is None:
        return None
    left = limits.max_total_epochs - usage.epochs
    in_flight = usage.in_flight * limits.max_epochs - usage.in_flight_epochs
    return left, left - in_flight


def _seconds_left(usage: ComputeUsage, limits: ComputeLimits) -> tuple[float, float] | None:
    """Device-seconds unspent, and unspent after the trials in flight and one more."""
    if limits.max_device_seconds is None:
        return None
    left = limits.max_device_seconds - usage.device_seconds
    per_epoch = seconds_per_epoch(usage)
    if per_epoch is None:  # no cost seen yet: the first wave of trials goes
        return left, left if usage.in_flight < limits.parallelism else -1.0
    in_flight = max(usage.in_flight * limits.max_epochs - usage.in_flight_epochs, 0)
    return left, left - per_epoch * (in_flight + limits.max_epochs)


def _epochs_text(usage: ComputeUsage, limits: ComputeLimits) -> str:
    return f"budget.max_total_epochs ({usage.epochs:,} of {limits.max_total_epochs:,} spent)"


def _seconds_text(usage: ComputeUsage, limits: ComputeLimits) -> str:
    limit = (limits.max_device_seconds or 0.0) / 3600.0
    spent = usage.device_seconds / 3600.0
    return f"budget.max_gpu_hours ({spent:.4g} of {limit:.4g} {limits.device}-hours spent)"


def _refusal(name: str, budget: str, why: str) -> str:
    return (
        f"study {name!r}: its {budget} {why}; the trials in flight finish and the study "
        "completes (give more budget in a new study to search further)"
    )


def compute_finished(*, usage: ComputeUsage, limits: ComputeLimits, name: str) -> bool:
    """A study with a compute budget is complete when nothing is in flight and its budget
    has no room for another trial."""
    if not limits.limited or usage.in_flight:
        return False
    return not decide_compute(usage=usage, limits=limits, name=name).allowed
