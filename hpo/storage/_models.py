"""Our own tables, beside Optuna's in the same database (all prefixed ``hpo_``).

Optuna's tables hold each trial's parameters, state, objective value and intermediate values;
ours hold what Optuna does not: the study spec and status, one run record per trial attempt,
and every metric reported per step.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
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
    optuna_study_id: Mapped[int] = mapped_column(Integer)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="running")
    #: trials handed out so far (Optuna trials created); the budget is counted against it.
    handed_out: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class RunRow(Base):
    """One attempt at running one trial."""

    __tablename__ = "hpo_trial_runs"
    __table_args__ = (UniqueConstraint("study_id", "trial_number", "attempt"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[int] = mapped_column(
        ForeignKey("hpo_studies.id", ondelete="CASCADE"), index=True
    )
    trial_number: Mapped[int] = mapped_column(Integer)
    optuna_trial_id: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    #: pending (a retry waiting for a worker) | running | completed | pruned | failed | cancelled
    state: Mapped[str] = mapped_column(String(16), default="running")
    token_hash: Mapped[str] = mapped_column(String(64))
    worker: Mapped[str | None] = mapped_column(String(256), nullable=True)
    #: the GPU ids the worker saw in CUDA_VISIBLE_DEVICES ("" for none)
    gpus: Mapped[str | None] = mapped_column(String(64), nullable=True)
    last_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    final_metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: see hpo.budget.FAILURE_KINDS
    failure_kind: Mapped[str | None] = mapped_column(String(32), nullable=True)
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
        Index("ix_hpo_metrics_study_trial", "study_id", "trial_number"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("hpo_trial_runs.id", ondelete="CASCADE"))
    study_id: Mapped[int] = mapped_column(ForeignKey("hpo_studies.id", ondelete="CASCADE"))
    trial_number: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)
