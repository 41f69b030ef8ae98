"""An ask of a study with a compute budget (epochs, GPU-hours): hand out, or refuse and end.

When no new trial fits and nothing of the study runs, the refusing ask completes the study
itself; when the budget is all spent, the retries still waiting for a worker are cancelled,
so that the study can complete. The caller commits those writes and raises the refusal after.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from .._errors import BudgetExhausted
from ..budget import ComputeLimits, compute_limits, decide_compute
from ..spec import StudySpec
from ..storage import RunRow, StudyRow, TrialRow
from ..vocabulary import FailureKind, StudyStatus, TrialState
from ._lifecycle import complete_study, note
from ._usage import compute_usage


def within_compute_budget(
    session: Session,
    study_id: int,
    spec: StudySpec,
    limits: ComputeLimits,
    *,
    begun: bool,
    now: datetime,
) -> BudgetExhausted | None:
    """None when one more trial (``begun``: a retry waiting for a worker) fits the budget of
    study ``study_id``, whose row the caller locked; else the refusal to raise once the
    transaction committed."""
    usage = compute_usage(session, study_id=study_id, spec=spec, now=now)
    study = session.get(StudyRow, study_id)
    if study is None or study.status != StudyStatus.RUNNING:
        return None  # the ask's own checks refuse it
    decision = decide_compute(usage=usage, limits=limits, name=study.name, begun=begun)
    if decision.allowed:
        return None
    in_flight = usage.in_flight
    if begun:  # all spent: the retries waiting for a worker will never start
        in_flight -= _cancel_waiting_retries(session, study, decision.reason, now)
    if in_flight <= 0:
        complete_study(session, study, now, "its compute budget has no room for another trial")
    return BudgetExhausted(decision.reason)


def _cancel_waiting_retries(session: Session, study: StudyRow, reason: str, now: datetime) -> int:
    waiting = (RunRow.study_id == study.id, RunRow.state == TrialState.PENDING)
    trial_ids = list(session.scalars(select(RunRow.trial_id).where(*waiting)).all())
    session.execute(
        update(RunRow)
        .where(*waiting)
        .values(
            state=TrialState.CANCELLED,
            failure_kind=FailureKind.CANCELLED,
            error=f"not retried: {reason}",
            finished_at=now,
        )
    )
    session.execute(
        update(TrialRow)
        .where(TrialRow.id.in_(trial_ids))
        .values(state=TrialState.CANCELLED, finished_at=now)
    )
    note(session, logging.INFO, "study %s: %d retries not started", study.name, len(trial_ids))
    return len(trial_ids)


def refused_before_drawing(
    session: Session, study_id: int, name: str, spec: StudySpec, now: datetime
) -> BudgetExhausted | None:
    """The refusal a model-based ask can give before it reads the history and draws: no new
    trial fits, no retry waits, and trials still run (with none running, the writing ask
    completes the study)."""
    limits = compute_limits(spec)
    if not limits.limited:
        return None
    usage = compute_usage(session, study_id=study_id, spec=spec, now=now)
    if usage.waiting or not usage.in_flight:
        return None
    decision = decide_compute(usage=usage, limits=limits, name=name)
    return None if decision.allowed else BudgetExhausted(decision.reason)


__all__ = ["refused_before_drawing", "within_compute_budget"]
