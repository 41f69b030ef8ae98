"""The one vocabulary of hpo: trial states, study statuses, failure kinds, algorithm and
early-stopping names.

Every layer takes its words from here: the spec and wire schemas, the service, the API's
filters, the CLI's choices, and the dashboard (its pages carry :func:`as_json` for the
JavaScript). Each enum is a ``str`` enum, so a member compares equal to its value and
serializes as it.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

__all__ = [
    "FINISHED_TRIAL_STATES",
    "LIVE_TRIAL_STATES",
    "RETRYABLE_FAILURES",
    "AlgorithmName",
    "EarlyStopping",
    "FailureKind",
    "OnOom",
    "Role",
    "SamplerModel",
    "StudyStatus",
    "TrialState",
    "as_json",
    "values",
]


class _Word(str, Enum):
    """A word of the vocabulary: prints and formats as its value."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class TrialState(_Word):
    """Where a trial stands, as the API, the CLI and the dashboard show it."""

    #: a retry of the trial, waiting for a worker to take it
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    #: stopped early by the study's early-stopping rule
    PRUNED = "pruned"
    FAILED = "failed"
    #: ended because its study was cancelled or ran out of time
    CANCELLED = "cancelled"


class StudyStatus(_Word):
    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class FailureKind(_Word):
    """Why an attempt at a trial ended without completing."""

    #: the worker process died (killed, segfault); the trial is retried
    CRASH = "crash"
    #: the worker went silent past the heartbeat timeout; the trial is retried
    HEARTBEAT = "heartbeat"
    #: the node running the worker left the cluster; the trial is retried
    NODE_LOST = "node_lost"
    #: the training code raised
    EXCEPTION = "exception"
    #: the GPU ran out of memory
    OOM = "oom"
    #: the loss became NaN or infinite
    NONFINITE = "nonfinite"
    #: the worker called fail without saying more
    REPORTED = "reported"
    #: the study was cancelled
    CANCELLED = "cancelled"
    #: the study reached budget.max_wall_seconds
    TIME_LIMIT = "time_limit"


class AlgorithmName(_Word):
    #: picks one of the others from the space, the budget and max_epochs (the default)
    AUTO = "auto"
    GRID = "grid"
    RANDOM = "random"
    BAYESIAN = "bayesian"
    #: random search with successive-halving early stopping
    ASHA = "asha"


class OnOom(_Word):
    """What a study does when an attempt runs out of GPU memory (``resources.on_oom``)."""

    #: the trial fails with kind ``oom``
    FAIL = "fail"
    #: the trial is retried at half the batch with twice the gradient accumulation
    ACCUMULATE = "accumulate"


class SamplerModel(_Word):
    """The model of ``bayesian``: multivariate TPE, a Gaussian process, or TPE fit the way
    BOHB fits it (on the values at the longest budget that has enough of them; see
    ``hpo.algorithms._bohb``)."""

    TPE = "tpe"
    GP = "gp"
    BOHB = "bohb"


class EarlyStopping(_Word):
    ASHA = "asha"
    HYPERBAND = "hyperband"
    MEDIAN = "median"
    NONE = "none"


#: a trial in one of these states still has work to do
LIVE_TRIAL_STATES = frozenset({TrialState.PENDING, TrialState.RUNNING})
FINISHED_TRIAL_STATES = frozenset(set(TrialState) - LIVE_TRIAL_STATES)
#: failures of the infrastructure, not of the configuration: worth another attempt
RETRYABLE_FAILURES = frozenset({FailureKind.CRASH, FailureKind.HEARTBEAT, FailureKind.NODE_LOST})


def values(words: type[_Word]) -> list[str]:
    """The values of one enum, in definition order."""
    return [str(w.value) for w in words]


class Role(_Word):
    """What an API key may do (``hpo keys create --role``)."""

    ADMIN = "admin"  # everything, API keys included
    MEMBER = "member"  # create studies, cancel and delete its own, read all
    VIEWER = "viewer"  # read only
    WORKER = "worker"  # the trial protocol, on the studies it may run


def as_json() -> dict[str, Any]:
    """The whole vocabulary as plain lists, for the dashboard's JavaScript and the API."""
    return {
        "trial_states": values(TrialState),
        "live_trial_states": [s for s in values(TrialState) if s in LIVE_TRIAL_STATES],
        "study_statuses": values(StudyStatus),
        #: the status of a study that still changes (pages refresh while it holds)
        "live_study_status": str(StudyStatus.RUNNING),
        "failure_kinds": values(FailureKind),
        "retryable_failures": [k for k in values(FailureKind) if k in RETRYABLE_FAILURES],
        "algorithms": values(AlgorithmName),
        "sampler_models": values(SamplerModel),
        "early_stopping": values(EarlyStopping),
        "on_oom": values(OnOom),
        "roles": values(Role),
    }
