"""Wire schemas, one per direction (``...In`` from callers, ``...Public`` to them).

Shared by the API and the Python client; they import nothing but pydantic and the spec.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from .spec import MAX_METRIC_NAME, AlgorithmSpec, StudySpec
from .vocabulary import FailureKind, Role, StudyStatus, TrialState, values

__all__ = [
    "DispatchPublic",
    "LeaseGrant",
    "LeaseRequest",
    "LeasesReleased",
    "ApiKeyCreate",
    "KeyCreate",
    "WorkerKeyCreate",
    "ApiKeyCreated",
    "ApiKeyPublic",
    "BudgetUsed",
    "AskIn",
    "AlgorithmChoice",
    "BestTrial",
    "CompleteIn",
    "ErrorPublic",
    "FailIn",
    "HealthPublic",
    "HeartbeatIn",
    "MAX_METRICS",
    "MAX_METRIC_NAME",
    "MAX_REASON_CHARS",
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
    "WhoAmI",
    "checked_text",
    "cut_reason",
]

T = TypeVar("T")
#: the largest step or trial number the database's integer columns hold
MAX_STEP = 2**31 - 1
#: metrics one report may carry
MAX_METRICS = 256
#: characters of a failure reason kept; a longer one is stored cut, never refused, so that a
#: worker's traceback is not lost for being long (the runner sends its last 20,000)
MAX_REASON_CHARS = 20_000


def checked_text(value: str, *, line: bool = True) -> str:
    """Refuse what a database cannot store or a person cannot read: NUL and other control
    characters (only tabs and newlines in free text, with ``line=False``), and lone UTF-16
    surrogates (which are not text in any encoding)."""
    allowed = "" if line else "\t\n\r"
    bad = next((c for c in value if (ord(c) < 32 or ord(c) == 127) and c not in allowed), None)
    if bad is not None:
        raise ValueError(f"must not contain control characters (found {bad!r})")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (it holds a lone surrogate)") from None
    return value


def _free_text(value: str) -> str:
    return checked_text(value, line=False)


def cut_reason(reason: str) -> str:
    """``reason`` within :data:`MAX_REASON_CHARS`: its head (what failed) and its tail (a
    traceback's innermost frames and the exception), with a line that says how much was cut
    between them."""
    if len(reason) <= MAX_REASON_CHARS:
        return reason
    marker = f"\n[... {len(reason) - MAX_REASON_CHARS:,} characters cut: a reason keeps "
    marker += f"at most {MAX_REASON_CHARS:,} ...]\n"
    keep = MAX_REASON_CHARS - len(marker)
    head = keep // 4
    return reason[:head] + marker + reason[len(reason) - (keep - head) :]


#: what :func:`checked_text` lets through, as JSON Schema patterns for the API document (the
#: check itself stays :func:`checked_text`, whose message names the character)
LINE_PATTERN = r"^[^\u0000-\u001f\u007f]*$"
FREE_TEXT_PATTERN = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]*$"

#: one line of text: a worker name, a metric name
Line = Annotated[
    str, AfterValidator(checked_text), Field(json_schema_extra={"pattern": LINE_PATTERN})
]
#: free text that may span lines: a failure reason
FreeText = Annotated[
    str, AfterValidator(_free_text), Field(json_schema_extra={"pattern": FREE_TEXT_PATTERN})
]
#: how the API document states the rules of :func:`_finite` on a report's metrics
_METRICS_DOC: dict[str, Any] = {
    "maxProperties": MAX_METRICS,
    "propertyNames": {"minLength": 1, "maxLength": 64, "pattern": LINE_PATTERN},
}


class ErrorPublic(BaseModel):
    """The body of every error the API answers (4xx and 5xx alike)."""

    detail: str = Field(
        description="what was wrong, and how to fix it; a request that broke a rule names "
        "the field and the rule",
        examples=["no study 'bert-finetune'; list the studies with GET /api/v1/studies"],
    )


class HealthPublic(BaseModel):
    """The health check's answer."""

    status: Literal["ok", "unavailable"]
    database: str = Field(description="the database's dialect: sqlite or postgresql")
    detail: str | None = Field(default=None, description="why the database is unreachable")


#: a failure reason: free text, stored cut to MAX_REASON_CHARS
Reason = Annotated[FreeText, AfterValidator(cut_reason)]


class Page(BaseModel, Generic[T]):
    """The list envelope of every collection endpoint."""

    data: list[T]
    count: int = Field(description="how many items match, over all pages")


class BestTrial(BaseModel):
    number: int
    value: float
    params: dict[str, Any]


class AlgorithmChoice(BaseModel):
    """What ``algorithm: {name: auto}`` runs for a study, and why."""

    algorithm: AlgorithmSpec = Field(description="the algorithm in force, as a spec would name it")
    summary: str = Field(description="one line, e.g. 'bayesian (TPE) + hyperband (...)'")
    reason: str = Field(description="why auto chose it for this space, budget and max_epochs")


class BudgetUsed(BaseModel):
    """Progress toward every budget of a study (a limit of null: that budget is unlimited)."""

    trials: int = Field(description="trials handed out")
    max_trials: int | None = Field(description="trials the budget allows (the grid's size too)")
    epochs: int = Field(description="epochs all attempts reported, retries included")
    max_total_epochs: int | None = None
    device: Literal["GPU", "CPU"] = Field(
        description="what device_hours counts: GPU-hours, or CPU-hours for a study without GPUs"
    )
    device_hours: float = Field(
        description="devices held x wall time of every attempt, retries included, a running "
        "one up to its last heartbeat or report"
    )
    max_gpu_hours: float | None = None
    max_wall_seconds: float | None = Field(
        default=None, description="the time budget; the time used runs from created_at"
    )
    room_for_a_trial: bool = Field(
        default=True,
        description="whether one more new trial fits the compute budgets (epochs, GPU-hours) "
        "now, beside the trials in flight each counted as running to max_epochs; while false, "
        "an ask hands out only a retry already waiting for a worker (the dispatcher asks then "
        "only for those)",
    )

    def parts(self, *, wall_seconds: float, limited_only: bool = False) -> list[str]:
        """``trials 5/20``, ``epochs 45/100``, ``GPU-hours 0.12/1``, ``wall 1:05/10:00``: used
        against the limit, for every budget (``limited_only``: those with a limit), the study
        having run ``wall_seconds``."""
        rows: list[tuple[str, str, str | None]] = [
            ("trials", str(self.trials), _or_none(self.max_trials, str)),
            ("epochs", f"{self.epochs:,}", _or_none(self.max_total_epochs, "{:,}".format)),
            (
                f"{self.device}-hours",
                f"{self.device_hours:.3g}",
                _or_none(self.max_gpu_hours, "{:g}".format),
            ),
            ("wall", _clock(wall_seconds), _or_none(self.max_wall_seconds, _clock)),
        ]
        return [
            f"{name} {used}" + (f"/{limit}" if limit is not None else "")
            for name, used, limit in rows
            if limit is not None or not limited_only
        ]


def _or_none(value: Any, show: Any) -> str | None:
    return None if value is None else str(show(value))


def _clock(seconds: float) -> str:
    """``1:05`` (minutes:seconds), or ``2:01:05`` past an hour."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class DispatchPublic(BaseModel):
    """Which dispatcher runs a study's trials, and why they wait, if they do."""

    holder: str = Field(description="the dispatcher holding the study's lease")
    until: datetime = Field(description="when the lease runs out unless its holder renews it")
    waiting: str | None = Field(
        default=None, description="why the study's trials wait for the Ray cluster (null: not)"
    )


_StudyName = Annotated[Line, Field(max_length=128)]
_Reason = Annotated[Line, Field(max_length=1000)]


class LeaseRequest(BaseModel):
    """A dispatcher claims (or renews) the studies it runs, ``POST /api/v1/leases``."""

    model_config = ConfigDict(extra="forbid")

    holder: Line = Field(min_length=1, max_length=128, description="the dispatcher's name")
    studies: list[_StudyName] = Field(
        max_length=10_000,
        description="the running studies this dispatcher can run (its workloads); leases are "
        "granted among these",
    )
    waiting: dict[str, _Reason] = Field(
        default_factory=dict,
        json_schema_extra={"propertyNames": {"maxLength": 128, "pattern": LINE_PATTERN}},
        max_length=10_000,
        description="study name -> why its trials wait for the Ray cluster, for the studies "
        "the dispatcher holds",
    )
    ttl_seconds: float = Field(
        default=15.0, ge=1.0, le=3600.0, description="how long the lease lasts unless renewed"
    )

    @field_validator("waiting")
    @classmethod
    def _study_names(cls, waiting: dict[str, str]) -> dict[str, str]:
        for name in waiting:
            if len(name) > 128:
                raise ValueError(f"a study name has at most 128 characters (got {len(name)})")
            checked_text(name)
        return waiting


class LeaseGrant(BaseModel):
    holder: str
    studies: list[str] = Field(description="the studies whose trials this dispatcher runs now")
    until: datetime
    dispatchers: int = Field(description="dispatchers seen within ttl_seconds, this one included")


class LeasesReleased(BaseModel):
    holder: str
    released: int = Field(description="how many studies' leases were given back")


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
    budget_used: BudgetUsed | None = Field(
        default=None, description="progress toward every budget: trials, epochs, GPU-hours, time"
    )
    version: int = Field(
        default=1,
        description="changes whenever the study's own record does (a trial handed out, its "
        "status); a cache of the study's views is keyed by it",
    )
    created_by: str | None = Field(
        default=None,
        description="the name of the API key that created the study (null: created while "
        "access control was off)",
    )
    algorithm_choice: AlgorithmChoice | None = Field(
        default=None, description="what auto chose (null unless the algorithm is auto)"
    )
    parent: str | None = Field(
        default=None, description="the study this one was forked from (null: not a fork)"
    )
    inherited: int = Field(
        default=0,
        description="trials copied from the parent at the fork (numbered first; not counted "
        "in n_trials nor against the budget)",
    )
    children: list[str] = Field(default_factory=list, description="the studies forked from it")
    dispatch: DispatchPublic | None = Field(
        default=None,
        description="the dispatcher that runs its trials (null: none holds it, e.g. no "
        "controller dispatches, or the study ended) and why they wait, if they do",
    )

    def budget_parts(self, *, now: datetime, limited_only: bool = False) -> list[str]:
        """Progress toward every budget as ``name used/limit`` strings (see BudgetUsed)."""
        if self.budget_used is None:
            return []
        wall = ((self.finished_at or now) - self.created_at).total_seconds()
        return self.budget_used.parts(wall_seconds=max(wall, 0.0), limited_only=limited_only)


class ReportPublic(BaseModel):
    step: int
    metrics: dict[str, float]


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
    failure_kind: FailureKind | None = None
    batch_size: int | None = Field(
        default=None,
        description="the per-device batch this attempt trained with (halved on each retry "
        "after running out of memory, with resources.on_oom: accumulate); null when the "
        "space has no batch_size",
    )
    gradient_accumulation_steps: int | None = Field(
        default=None, description="the gradient-accumulation steps this attempt trained with"
    )
    reports: list[ReportPublic] = Field(
        default_factory=list, description="every metric this attempt reported, per step"
    )


class TrialPublic(BaseModel):
    number: int
    state: TrialState
    params: dict[str, Any]
    value: float | None = None
    last_step: int | None = None
    attempts: int = 1
    started_at: datetime | None = None
    finished_at: datetime | None = None
    inherited_from: int | None = Field(
        default=None,
        description="for a trial copied from the parent study at a fork: its number there",
    )


class TrialDetail(TrialPublic):
    reports: list[ReportPublic] = Field(
        description="every metric the latest attempt reported, per step (each attempt's "
        "own are under runs)"
    )
    final_metrics: dict[str, float] | None = None
    runs: list[RunPublic]


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    if len(metrics) > MAX_METRICS:
        raise ValueError(f"has {len(metrics)} metrics, but one report holds at most {MAX_METRICS}")
    for name in metrics:
        if not 1 <= len(name) <= MAX_METRIC_NAME:
            shown = repr(name) if len(name) <= 40 else repr(name[:37]) + "..."
            raise ValueError(
                f"metric name {shown} has {len(name)} characters, but must have 1-{MAX_METRIC_NAME}"
            )
        try:
            checked_text(name)
        except ValueError as exc:
            raise ValueError(f"metric name {name!r} {exc}") from None
    bad = [name for name, value in metrics.items() if not math.isfinite(value)]
    if bad:
        raise ValueError(
            f"metrics {', '.join(bad)} are not finite numbers; report a diverged trial with "
            "POST .../fail instead"
        )
    return metrics


class AskIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    worker: Line | None = Field(default=None, max_length=256, description="who runs the trial")


class TrialAssignment(BaseModel):
    """The answer to ask: what to train, and the token its reports must carry."""

    study: str
    number: int
    params: dict[str, Any]
    token: str
    attempt: int = Field(default=1, description="1 for a first run, more for a retry")


class ReportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    step: int = Field(ge=0, le=MAX_STEP, description="the epoch (or other step) this report is for")
    metrics: dict[str, float] = Field(min_length=1, json_schema_extra=_METRICS_DOC)

    _check = field_validator("metrics")(_finite)


class HeartbeatIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    worker: Line | None = Field(default=None, max_length=256)
    gpus: Line | None = Field(default=None, max_length=64)


class ReportOut(BaseModel):
    should_stop: bool


class CompleteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    metrics: dict[str, float] = Field(min_length=1, json_schema_extra=_METRICS_DOC)

    _check = field_validator("metrics")(_finite)


class FailIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Reason = Field(
        min_length=1,
        description=f"what went wrong; one over {MAX_REASON_CHARS:,} characters is stored cut "
        "(its start and its end kept)",
    )
    kind: FailureKind = Field(
        default=FailureKind.REPORTED,
        description="why the attempt failed; crash, heartbeat and node_lost are retried",
    )

    @field_validator("kind", mode="before")
    @classmethod
    def _known_kind(cls, kind: Any) -> Any:
        if isinstance(kind, str) and kind not in values(FailureKind):
            raise ValueError(
                f"unknown failure kind {kind[:40]!r}; use one of {', '.join(values(FailureKind))}"
            )
        return kind


class SearchSpacePublic(BaseModel):
    name: str
    description: str
    parameters: dict[str, Any]


KeyName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]*$",
        description="unique, for ever: a revoked key's name stays taken",
    ),
]


class KeyCreate(BaseModel):
    """A new admin, member or viewer key (``POST /api/v1/keys``, admin only)."""

    model_config = ConfigDict(extra="forbid")

    name: KeyName
    role: Literal["admin", "member", "viewer"]


class WorkerKeyCreate(BaseModel):
    """A new worker key, for every study or only some (``POST /api/v1/keys``)."""

    model_config = ConfigDict(extra="forbid")

    name: KeyName
    role: Literal["worker"]
    studies: (
        list[Annotated[str, Field(min_length=1, max_length=128, pattern=LINE_PATTERN)]] | None
    ) = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="the study names or fnmatch patterns ('bert-*') it may run; null is every "
        "study",
    )


#: the body of ``POST /api/v1/keys``: only a worker key may be limited to studies
ApiKeyCreate = Annotated[KeyCreate | WorkerKeyCreate, Field(discriminator="role")]


class ApiKeyPublic(BaseModel):
    """An API key as listed: never the key itself, only its first characters."""

    name: str
    role: Role
    prefix: str = Field(description="the key's first characters, to recognise it")
    studies: list[str] | None = None
    builtin: bool = Field(description="made by a controller for its own dispatcher")
    created_at: datetime
    revoked_at: datetime | None = None


class ApiKeyCreated(ApiKeyPublic):
    key: str = Field(description="the key itself: shown this once, store it now")


class WhoAmI(BaseModel):
    """Who the API takes the caller for."""

    name: str | None = Field(description="the API key's name; null when access control is off")
    role: Role
    access_control: bool = Field(description="whether this controller asks for keys")
