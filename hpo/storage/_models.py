"""Our own tables, beside Optuna's in the same database (all prefixed ``hpo_``).

Ours are the truth: the study spec and status, one row per trial (its parameters, state and
value), one run record per attempt at it, every metric reported per step, and the values
recorded at each successive-halving rung. Every operation writes them in one transaction.
Optuna's tables are a mirror derived from them (:mod:`hpo.service._mirror`), so that
``optuna.load_study`` works on our studies; nothing is ever decided from the mirror.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp on every backend (SQLite stores no zone: it is UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(timezone.utc)
            if dialect.name == "sqlite":
                value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


class Base(DeclarativeBase):
    pass


class StudyRow(Base):
    __tablename__ = "hpo_studies"
    # never reuse the id of a deleted study: ids are addresses (/api/v1/studies/{id})
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="running")
    #: trials handed out so far; the budget is counted against it, and it numbers the next one
    handed_out: Mapped[int] = mapped_column(Integer, default=0)
    #: trials the budget allows (max_trials, capped by the grid); null is unlimited
    size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    #: bumped by every change of the study's own row (a trial handed out, its status)
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: the name of the API key that created it (null: created with access control off)
    created_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: the study this one was forked from (null: not a fork, or its parent was deleted)
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("hpo_studies.id", ondelete="SET NULL", name="fk_hpo_studies_parent_id"),
        nullable=True,
        index=True,
    )
    #: trials copied from the parent at the fork, numbered 0 to inherited - 1; new trials are
    #: numbered after them, and the budget (``handed_out``/``size``) counts new trials only
    inherited: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


#: a trial whose row differs from what the Optuna mirror last wrote of it
UNMIRRORED = "mirrored IS NULL OR mirrored <> state"


class TrialRow(Base):
    """One trial: a configuration, and where it stands over all its attempts."""

    __tablename__ = "hpo_trials"
    __table_args__ = (
        UniqueConstraint("study_id", "number"),
        Index("ix_hpo_trials_study_state", "study_id", "state"),
        Index(
            "ix_hpo_trials_unmirrored",
            "study_id",
            postgresql_where=text(UNMIRRORED),
            sqlite_where=text(UNMIRRORED),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("hpo_studies.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    #: see hpo.vocabulary.TrialState
    state: Mapped[str] = mapped_column(String(16))
    #: the parameters, as the API shows them
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: the objective: the completed value, or a pruned trial's value at its last step
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: attempts so far; the run record with this ``attempt`` is the latest (``latest_attempt``)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: the state the Optuna mirror last wrote for this trial; null before it wrote any
    mirrored: Mapped[str | None] = mapped_column(String(16), nullable=True)
    #: for a trial copied from the parent study at a fork: its number there (it has no runs)
    inherited_from: Mapped[int | None] = mapped_column(Integer, nullable=True)


class RunRow(Base):
    """One attempt at running one trial."""

    __tablename__ = "hpo_trial_runs"
    __table_args__ = (
        UniqueConstraint("study_id", "trial_number", "attempt"),
        Index("ix_hpo_trial_runs_study_state", "study_id", "state"),
        Index("ix_hpo_trial_runs_trial_attempt", "trial_id", "attempt", unique=True),
        # room on each page for the row's next version: a report's update (last step,
        # heartbeat) then touches no index (PostgreSQL's HOT updates)
        {"postgresql_with": {"fillfactor": 70}},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("hpo_studies.id", ondelete="CASCADE"))
    #: null only for runs carried over from before migration 0003 whose trial vanished
    trial_id: Mapped[int | None] = mapped_column(
        ForeignKey("hpo_trials.id", ondelete="CASCADE", name="fk_hpo_trial_runs_trial_id"),
        nullable=True,
    )
    trial_number: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    #: pending (a retry waiting for a worker) | running | completed | pruned | failed | cancelled
    state: Mapped[str] = mapped_column(String(16), default="running")
    token_hash: Mapped[str] = mapped_column(String(64))
    worker: Mapped[str | None] = mapped_column(String(256), nullable=True)
    #: the GPU ids the worker saw in CUDA_VISIBLE_DEVICES ("" for none)
    gpus: Mapped[str | None] = mapped_column(String(64), nullable=True)
    last_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: the first successive-halving rung this attempt has not passed yet
    next_rung: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    final_metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: see hpo.vocabulary.FailureKind
    failure_kind: Mapped[str | None] = mapped_column(String(32), nullable=True)
    #: the per-device batch and accumulation this attempt trains with, when they differ from
    #: the trial's parameters (a retry after running out of memory); null: the trial's own
    batch_size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    gradient_accumulation_steps: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    #: when a worker first said it started (its first heartbeat); null until then
    worker_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class MetricRow(Base):
    """One metric value of one report (step) of one run."""

    __tablename__ = "hpo_metrics"
    __table_args__ = (
        UniqueConstraint("run_id", "step", "name"),
        Index("ix_hpo_metrics_study_name_step", "study_id", "name", "step"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("hpo_trial_runs.id", ondelete="CASCADE"))
    #: the run's study (for the indexed reads by study); no foreign key of its own: checking
    #: one locked the study's row for every metric inserted, which every ask updates
    study_id: Mapped[int] = mapped_column(Integer)
    trial_number: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)


class RungRow(Base):
    """The objective an attempt had when it reached a successive-halving rung.

    A rung decision reads the values recorded at that rung (an indexed query), never every
    trial's history, so a report costs the same with 20 or 2,000 trials in flight.
    """

    __tablename__ = "hpo_rungs"
    __table_args__ = (
        Index("ix_hpo_rungs_study_bracket_rung_value", "study_id", "bracket", "rung", "value"),
    )

    run_id: Mapped[int] = mapped_column(
        ForeignKey("hpo_trial_runs.id", ondelete="CASCADE"), primary_key=True
    )
    rung: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: the run's study; no foreign key of its own, for the same reason as hpo_metrics'
    study_id: Mapped[int] = mapped_column(Integer)
    #: the Hyperband bracket of the trial (0 for plain successive halving)
    bracket: Mapped[int] = mapped_column(Integer)
    trial_number: Mapped[int] = mapped_column(Integer)
    value: Mapped[float] = mapped_column(Float)


class OptunaStudyRow(Base):
    """How far the Optuna mirror of a study got: its study in Optuna's tables."""

    __tablename__ = "hpo_optuna_studies"

    study_id: Mapped[int] = mapped_column(
        ForeignKey("hpo_studies.id", ondelete="CASCADE"), primary_key=True
    )
    #: null until the mirror has created the study in Optuna's tables
    optuna_study_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: the mirror pass working on this study (one at a time, over every controller)...
    claimed_by: Mapped[str | None] = mapped_column(String(32), nullable=True)
    #: ...until then, unless it renews its claim (a pass that died frees it this way)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class OptunaTombstone(Base):
    """A deleted study whose Optuna mirror is still to be removed."""

    __tablename__ = "hpo_optuna_tombstones"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


#: the tables themselves, for the hot paths of the trial protocol: a Core statement on a table
#: skips the ORM's per-statement work (about a third of a report's cost)
studies = cast(Table, StudyRow.__table__)
trials = cast(Table, TrialRow.__table__)
runs = cast(Table, RunRow.__table__)
metrics = cast(Table, MetricRow.__table__)
rungs = cast(Table, RungRow.__table__)


def latest_attempt() -> ColumnElement[bool]:
    """The join of a trial (``hpo_trials``) to the run record of its latest attempt."""
    return and_(runs.c.trial_id == trials.c.id, runs.c.attempt == trials.c.attempts)


class ApiKeyRow(Base):
    """An API key: only its SHA-256 is kept; the key itself is shown once, at creation.

    Keys are 256-bit random strings, so a fast hash is as safe as a slow one (nothing to
    guess), and it keeps the check of every request cheap. A revoked key keeps its row, so its
    name stays taken and the studies it created still say who made them.
    """

    __tablename__ = "hpo_api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    #: see hpo.vocabulary.Role
    role: Mapped[str] = mapped_column(String(16))
    #: the first characters of the key, to recognise it in a list
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: for a worker key: the studies (name patterns) it may run; null is all of them
    studies: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    #: made by a controller for its own dispatcher (not an operator's key)
    builtin: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class SessionRow(Base):
    """A dashboard sign-in: the cookie's SHA-256, the key it was made with, its CSRF token."""

    __tablename__ = "hpo_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[int] = mapped_column(ForeignKey("hpo_api_keys.id", ondelete="CASCADE"))
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class DispatchRow(Base):
    """Which dispatcher runs a study's trials (a lease it renews), and why they wait, if so.

    With several controllers on one database, only the holder of an unexpired lease asks for
    a study's trials, so two dispatchers never fill the same study at once; a controller that
    stops renewing loses its studies to the others when the lease runs out.
    """

    __tablename__ = "hpo_dispatch"

    study_id: Mapped[int] = mapped_column(
        ForeignKey("hpo_studies.id", ondelete="CASCADE"), primary_key=True
    )
    #: the dispatcher's name (``dispatcher@host-pid-xxxxxx``)
    holder: Mapped[str] = mapped_column(String(128))
    until: Mapped[datetime] = mapped_column(UTCDateTime())
    #: why the holder's trials of the study wait for the Ray cluster (null: they do not)
    waiting: Mapped[str | None] = mapped_column(Text, nullable=True)


class DispatcherRow(Base):
    """A dispatcher seen lately: how many share the running studies."""

    __tablename__ = "hpo_dispatchers"

    holder: Mapped[str] = mapped_column(String(128), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
