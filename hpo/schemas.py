"""Wire schemas, one per direction (``...In`` from callers, ``...Public`` to them).

Shared by the API and the Python client; they import nothing but pydantic and the spec.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .spec import StudySpec

__all__ = [
    "AskIn",
    "BestTrial",
    "CompleteIn",
    "FailIn",
    "HeartbeatIn",
    "Page",
    "ReportIn",
    "ReportOut",
    "ReportPublic",
    "RunPublic",
    "SearchSpacePublic",
    "StudyPublic",
    "TrialAssignment",
    "TrialDetail",
    "TrialPublic",
    "TrialState",
]

T = TypeVar("T")
TrialState = Literal["pending", "running", "completed", "pruned", "failed", "cancelled"]
StudyStatus = Literal["running", "completed", "cancelled"]


class Page(BaseModel, Generic[T]):
    """The list envelope of every collection endpoint."""

    data: list[T]
    count: int = Field(description="how many items match, over all pages")


class BestTrial(BaseModel):
    number: int
    value: float
    params: dict[str, Any]


class StudyPublic(BaseModel):
    id: int
    name: str
    status: StudyStatus
    spec: StudySpec
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    size: int | None = Field(description="trials the budget allows; null is unlimited")
    n_trials: int = Field(description="trials handed out so far")
    trial_counts: dict[str, int] = Field(description="trials by state")
    best: BestTrial | None = None


class RunPublic(BaseModel):
    """One attempt at running a trial."""

    attempt: int
    state: TrialState
    worker: str | None = None
    gpus: str | None = Field(default=None, description="CUDA_VISIBLE_DEVICES the worker saw")
    started_at: datetime
    heartbeat_at: datetime
    worker_started_at: datetime | None = None
    finished_at: datetime | None = None
    last_step: int | None = None
    error: str | None = None
    failure_kind: str | None = None


class TrialPublic(BaseModel):
    number: int
    state: TrialState
    params: dict[str, Any]
    value: float | None = None
    last_step: int | None = None
    attempts: int = 1
    started_at: datetime | None = None
    finished_at: datetime | None = None


class ReportPublic(BaseModel):
    step: int
    metrics: dict[str, float]


class TrialDetail(TrialPublic):
    reports: list[ReportPublic] = Field(description="every reported metric, per step")
    final_metrics: dict[str, float] | None = None
    runs: list[RunPublic]


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    bad = [name for name, value in metrics.items() if not math.isfinite(value)]
    if bad:
        raise ValueError(
            f"metrics {', '.join(bad)} are not finite numbers; report a diverged trial with "
            "POST .../fail instead"
        )
    for name in metrics:
        if not 1 <= len(name) <= 64:
            raise ValueError(f"metric name {name!r} must be 1-64 characters long")
    return metrics


class AskIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    worker: str | None = Field(default=None, max_length=256, description="who runs the trial")


class TrialAssignment(BaseModel):
    """The answer to ask: what to train, and the token its reports must carry."""

    study: str
    number: int
    params: dict[str, Any]
    token: str
    attempt: int = Field(default=1, description="1 for a first run, more for a retry")


class ReportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    step: int = Field(ge=0, description="the epoch (or other step) this report is for")
    metrics: dict[str, float] = Field(min_length=1)

    _check = field_validator("metrics")(_finite)


class HeartbeatIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    worker: str | None = Field(default=None, max_length=256)
    gpus: str | None = Field(default=None, max_length=64)


class ReportOut(BaseModel):
    should_stop: bool


class CompleteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    metrics: dict[str, float] = Field(min_length=1)

    _check = field_validator("metrics")(_finite)


class FailIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=100_000)
    kind: str = Field(default="reported", max_length=32)


class SearchSpacePublic(BaseModel):
    name: str
    description: str
    parameters: dict[str, Any]
