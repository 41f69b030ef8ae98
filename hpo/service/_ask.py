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

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from .. import algorithms
from .._errors import BudgetExhausted, StudyNotRunning
from ..algorithms import PastTrial
from ..budget import compute_limits, decide_ask, wall_clock_spent
from ..oom import attempt_batch, attempt_params
from ..schemas import TrialAssignment
from ..spec import StudySpec
from ..storage import Database, RungRow, RunRow, StudyRow, TrialRow, latest_attempt, utcnow
from ..vocabulary import FailureKind, StudyStatus, TrialState
from . import _statements as sql
from ._common import hash_token, spec_by_id, study_key, study_not_found
from ._compute import refused_before_drawing, within_compute_budget
from ._lifecycle import transact

_HISTORY_STATES = (TrialState.COMPLETED, TrialState.PRUNED, TrialState.RUNNING, TrialState.PENDING)


@dataclass
class _Snapshot:
    study_id: int
    name: str
    spec: StudySpec
    created_at: Any
    history: list[PastTrial] | None = None
    #: the index of the new trial the history was read at, and what the sampler drew for it
    guess: tuple[int, dict[str, Any]] | None = None
    #: trials a fork inherited from its parent (0: not a fork)
    inherited: int = 0


class _NeedsHistory(Exception):
    """The study's sampler models the history: read it, and draw, before the write."""


def ask(db: Database, *, ref: str | int, worker: str | None = None) -> TrialAssignment:
    """Hand out the next trial of a running study: a retry waiting for a worker first, else
    a new trial within the budget.

    Grid and random studies do it in one transaction. A model-based sampler first reads the
    history and draws in a read transaction, then writes (drawing again only if a concurrent
    ask took the number it expected).
    """
    try:
        result = transact(db, lambda s: _hand_out(db, s, ref, None, worker), write=True)
    except _NeedsHistory:
        result = None
    if result is None:
        snap, number = transact(db, lambda s: _snapshot(db, s, ref))
        snap.guess = (number, _draw(snap, number))
        result = transact(db, lambda s: _hand_out(db, s, ref, snap, worker), write=True)
    if isinstance(result, BudgetExhausted):
        raise result  # after the commit of what the refusal ended (the study, its retries)
    return result


def _study(session: Session, ref: str | int) -> Any:
    key = study_key(ref)
    row = None
    if key is not None:
        statement = sql.STUDY_BY_ID if key[0] else sql.STUDY_BY_NAME
        row = session.connection().execute(statement, {"b_ref": key[1]}).first()
    if row is None:
        raise study_not_found(ref)
    return row


def _snapshot(db: Database, session: Session, ref: str | int) -> tuple[_Snapshot, int]:
    """The study and its history, and the index (among new trials, not counting inherited
    ones) the next trial will have if no other ask takes it first."""
    row = _study(session, ref)
    spec = spec_by_id(db, session, row.id)
    _refuse_if_over(row.name, row.status, row.created_at, spec)
    refused = refused_before_drawing(session, row.id, row.name, spec, utcnow())
    if refused is not None:
        raise refused
    history = _history(session, row.id, spec)
    snap = _Snapshot(row.id, row.name, spec, row.created_at, history, inherited=row.inherited)
    return snap, row.handed_out


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


def _history(session: Session, study_id: int, spec: StudySpec) -> list[PastTrial]:
    """What the sampler learns from: trials that ran or run, and those that ran out of memory
    (the sampler learns that their region does not fit); for a sampler that models them, the
    values each trial's latest attempt recorded at the rungs it reached."""
    out_of_memory = and_(
        TrialRow.state == TrialState.FAILED, RunRow.failure_kind == FailureKind.OOM
    )
    rows = session.execute(
        select(
            TrialRow.number,
            TrialRow.state,
            TrialRow.params,
            TrialRow.value,
            RunRow.last_step,
            RunRow.failure_kind,
        )
        .join(RunRow, latest_attempt(), isouter=True)
        .where(
            TrialRow.study_id == study_id,
            or_(TrialRow.state.in_(_HISTORY_STATES), out_of_memory),
        )
        .order_by(TrialRow.number)
    ).all()
    rungs = _rung_values(session, study_id, spec)
    return [
        PastTrial(
            r.number,
            r.state,
            r.params,
            r.value,
            r.last_step,
            r.failure_kind,
            tuple(rungs.get(r.number, ())),
        )
        for r in rows
    ]


def _rung_values(
    session: Session, study_id: int, spec: StudySpec
) -> dict[int, list[tuple[int, float]]]:
    """(epoch, value) at each rung, by trial number, of the trials' latest attempts; empty
    unless the sampler in force models them (``model: bohb``)."""
    algorithm = algorithms.in_force(spec)
    plan = algorithms.halving_plan(algorithm, spec.budget)
    if plan is None or not algorithms.needs_rungs(algorithm):
        return {}
    rows = session.execute(
        select(RungRow.trial_number, RungRow.bracket, RungRow.rung, RungRow.value)
        .join(RunRow, RunRow.id == RungRow.run_id)
        .join(TrialRow, latest_attempt())
        .where(RungRow.study_id == study_id)
    ).all()
    out: dict[int, list[tuple[int, float]]] = {}
    for r in rows:
        epoch = algorithms.rung_step(plan, r.bracket, r.rung)
        out.setdefault(r.trial_number, []).append((epoch, r.value))
    return out


def _draw(snap: _Snapshot, number: int) -> dict[str, Any]:
    algorithm = algorithms.in_force(snap.spec)
    if snap.inherited:  # a stream of its own, not its parent's draws again
        seed = algorithms.fork_seed(algorithm.seed, snap.name)
        algorithm = algorithm.model_copy(update={"seed": seed})
    return algorithms.sample_params(
        algorithm,
        snap.spec.space,
        number=number,
        direction=snap.spec.objective.direction,
        history=snap.history,
        constraints=snap.spec.constraints,
        study_name=snap.name,
    )


def _hand_out(
    db: Database, session: Session, ref: str | int, snap: _Snapshot | None, worker: str | None
) -> TrialAssignment | BudgetExhausted:
    if snap is None:
        row = _study(session, ref)
        spec = spec_by_id(db, session, row.id)
        if algorithms.needs_history(algorithms.in_force(spec)):
            raise _NeedsHistory
        snap = _Snapshot(row.id, row.name, spec, row.created_at, inherited=row.inherited)
        _refuse_if_over(row.name, row.status, row.created_at, spec)
    else:
        _refuse_if_over(snap.name, StudyStatus.RUNNING, snap.created_at, snap.spec)
    now = utcnow()
    token = secrets.token_urlsafe(32)
    conn = session.connection()
    limits = compute_limits(snap.spec)
    if limits.limited:  # two asks must not both take the last room in the budget
        conn.execute(sql.STUDY_LOCKED, {"b_study": snap.study_id})
    retry = conn.execute(sql.PENDING, {"b_study": snap.study_id}).first()
    if limits.limited:
        refused = within_compute_budget(
            session, snap.study_id, snap.spec, limits, begun=retry is not None, now=now
        )
        if refused is not None:
            return refused
    if retry is not None:
        return _hand_out_retry(session, snap, retry, token, worker, now)
    numbered = conn.execute(sql.NUMBERED, {"b_study": snap.study_id, "b_now": now}).first()
    if numbered is None:
        _refuse(session, snap)
    # the sampler draws the study's n-th new trial (a grid its n-th point); a fork numbers
    # it after the trials it inherited
    index = numbered.handed_out - 1
    number = index + numbered.inherited
    if snap.guess is not None and snap.guess[0] == index:
        params = snap.guess[1]
    else:
        params = _draw(snap, index)
    values = {
        "b_study": snap.study_id,
        "b_number": number,
        "b_params": params,
        "b_token": hash_token(token),
        "b_worker": worker,
        "b_now": now,
        "b_now_too": now,
    }
    if conn.dialect.name == "postgresql":
        conn.execute(sql.NEW_TRIAL_AND_RUN, values)
    else:
        values["b_trial"] = conn.execute(sql.NEW_TRIAL, values).scalar_one()
        conn.execute(sql.NEW_RUN, values)
    return TrialAssignment(study=snap.name, number=number, params=params, token=token)


def _hand_out_retry(
    session: Session, snap: _Snapshot, run: Any, token: str, worker: str | None, now: Any
) -> TrialAssignment:
    conn = session.connection()
    status = conn.execute(sql.STUDY_STATUS, {"b_study": snap.study_id}).scalar()
    if status is None:
        raise study_not_found(snap.name)
    if status != StudyStatus.RUNNING:
        raise StudyNotRunning(f"study {snap.name!r} is {status}; it hands out no more trials")
    conn.execute(
        sql.RETRY_TAKEN,
        {
            "b_run": run.id,
            "b_token": hash_token(token),
            "b_worker": worker,
            "b_now": now,
            "b_now_too": now,
        },
    )
    params = conn.execute(sql.RETRY_RUNNING, {"b_trial": run.trial_id}).scalar_one()
    if run.batch_size is not None:  # retried after running out of memory: a smaller batch
        params = attempt_params(
            params, attempt_batch(params, run.batch_size, run.gradient_accumulation_steps)
        )
    return TrialAssignment(
        study=snap.name,
        number=run.trial_number,
        params=params,
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
