"""Handing out trials: a retry waiting for a worker first, else a new trial within the budget.

An ask holds the study's row lock only while it numbers the new trial and writes it: a
model-based sampler reads the history and draws its suggestion before taking the lock (and
draws again under the lock only if a concurrent ask took the number it expected). Grid and
random draw from the seed and the trial number alone, which costs microseconds.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, NoReturn

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from .. import algorithms
from .._errors import BudgetExhausted, StudyNotRunning
from ..algorithms import PastTrial
from ..budget import decide_ask, wall_clock_spent
from ..schemas import TrialAssignment
from ..spec import StudySpec
from ..storage import Database, RunRow, StudyRow, TrialRow, utcnow
from ..vocabulary import StudyStatus, TrialState
from ._common import find_study, hash_token, spec_of, study_not_found
from ._lifecycle import transact

_HISTORY_STATES = (TrialState.COMPLETED, TrialState.PRUNED, TrialState.RUNNING, TrialState.PENDING)


@dataclass
class _Snapshot:
    study_id: int
    name: str
    spec: StudySpec
    created_at: Any
    history: list[PastTrial] | None
    guess: tuple[int, dict[str, Any]] | None = None


def ask(db: Database, *, ref: str | int, worker: str | None = None) -> TrialAssignment:
    """Hand out the next trial of a running study: a retry waiting for a worker first, else
    a new trial within the budget."""
    snap = transact(db, lambda s: _snapshot(db, s, ref))
    if snap.history is not None:
        number = snap.guess[0] if snap.guess else 0
        snap.guess = (number, _draw(snap, number))
    return transact(db, lambda s: _hand_out(s, snap, worker), write=True)


def _snapshot(db: Database, session: Session, ref: str | int) -> _Snapshot:
    row = find_study(session, ref)
    spec = spec_of(db, row)
    _refuse_if_over(row.name, row.status, row.created_at, spec)
    history = None
    if algorithms.needs_history(spec.algorithm):
        history = _history(session, row.id)
    snap = _Snapshot(row.id, row.name, spec, row.created_at, history)
    snap.guess = (row.handed_out, {}) if history is not None else None
    return snap


def _refuse_if_over(name: str, status: str, created_at: Any, spec: StudySpec) -> None:
    elapsed = (utcnow() - created_at).total_seconds()
    decision = decide_ask(
        status=status,
        handed_out=0,
        size=None,
        name=name,
        out_of_time=wall_clock_spent(
            elapsed_seconds=elapsed, max_wall_seconds=spec.budget.max_wall_seconds
        ),
    )
    if not decision.allowed:
        raise StudyNotRunning(decision.reason)


def _history(session: Session, study_id: int) -> list[PastTrial]:
    rows = session.execute(
        select(TrialRow.number, TrialRow.state, TrialRow.params, TrialRow.value, RunRow.last_step)
        .join(RunRow, RunRow.id == TrialRow.latest_run_id, isouter=True)
        .where(TrialRow.study_id == study_id, TrialRow.state.in_(_HISTORY_STATES))
        .order_by(TrialRow.number)
    ).all()
    return [PastTrial(r.number, r.state, r.params, r.value, r.last_step) for r in rows]


def _draw(snap: _Snapshot, number: int) -> dict[str, Any]:
    return algorithms.sample_params(
        snap.spec.algorithm,
        snap.spec.space,
        number=number,
        direction=snap.spec.objective.direction,
        history=snap.history,
    )


def _hand_out(session: Session, snap: _Snapshot, worker: str | None) -> TrialAssignment:
    now = utcnow()
    _refuse_if_over(snap.name, StudyStatus.RUNNING, snap.created_at, snap.spec)
    token = secrets.token_urlsafe(32)
    retry = session.scalars(
        select(RunRow)
        .where(RunRow.study_id == snap.study_id, RunRow.state == TrialState.PENDING)
        .order_by(RunRow.trial_number)
        .limit(1)
        .with_for_update(skip_locked=True)
    ).first()
    if retry is not None:
        return _hand_out_retry(session, snap, retry, token, worker, now)
    numbered = session.execute(
        update(StudyRow)
        .where(
            StudyRow.id == snap.study_id,
            StudyRow.status == StudyStatus.RUNNING,
            or_(StudyRow.size.is_(None), StudyRow.handed_out < StudyRow.size),
        )
        .values(handed_out=StudyRow.handed_out + 1, version=StudyRow.version + 1, updated_at=now)
        .returning(StudyRow.handed_out)
        .execution_options(synchronize_session=False)
    ).first()
    if numbered is None:
        _refuse(session, snap)
    number = numbered.handed_out - 1
    if snap.guess is not None and snap.guess[0] == number:
        params = snap.guess[1]
    else:
        params = _draw(snap, number)
    trial = TrialRow(
        study_id=snap.study_id,
        number=number,
        state=TrialState.RUNNING,
        params=params,
        attempts=1,
        started_at=now,
    )
    session.add(trial)
    session.flush()
    run = RunRow(
        study_id=snap.study_id,
        trial_id=trial.id,
        trial_number=number,
        attempt=1,
        state=TrialState.RUNNING,
        token_hash=hash_token(token),
        worker=worker,
        started_at=now,
        heartbeat_at=now,
    )
    session.add(run)
    session.flush()
    trial.latest_run_id = run.id
    return TrialAssignment(study=snap.name, number=number, params=params, token=token)


def _hand_out_retry(
    session: Session, snap: _Snapshot, run: RunRow, token: str, worker: str | None, now: Any
) -> TrialAssignment:
    status = session.scalar(select(StudyRow.status).where(StudyRow.id == snap.study_id))
    if status is None:
        raise study_not_found(snap.name)
    if status != StudyStatus.RUNNING:
        raise StudyNotRunning(f"study {snap.name!r} is {status}; it hands out no more trials")
    trial = session.get(TrialRow, run.trial_id)
    assert trial is not None  # the foreign key guarantees it
    run.state, run.token_hash, run.worker = TrialState.RUNNING, hash_token(token), worker
    run.started_at = run.heartbeat_at = now
    trial.state = TrialState.RUNNING
    return TrialAssignment(
        study=snap.name,
        number=run.trial_number,
        params=trial.params,
        token=token,
        attempt=run.attempt,
    )


def _refuse(session: Session, snap: _Snapshot) -> NoReturn:
    row = session.get(StudyRow, snap.study_id, populate_existing=True)
    if row is None:
        raise study_not_found(snap.name)
    decision = decide_ask(
        status=row.status, handed_out=row.handed_out, size=row.size, name=row.name
    )
    error = StudyNotRunning if row.status != StudyStatus.RUNNING else BudgetExhausted
    raise error(decision.reason or f"study {row.name!r} hands out no more trials")


__all__ = ["ask"]
