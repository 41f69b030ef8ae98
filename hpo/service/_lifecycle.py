"""How trials end: finishing, retrying, stopping a study's trials, reaping lost workers.

Every function here runs inside the caller's transaction and writes only through its session,
so an operation's writes land together or not at all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import and_, delete, false, func, or_, select, update
from sqlalchemy.orm import Session

from ..budget import (
    compute_finished,
    compute_limits,
    decide_retry,
    room_for_retry,
    wall_clock_spent,
)
from ..oom import AttemptBatch, attempt_batch, halved
from ..schemas import MAX_REASON_CHARS
from ..spec import StudySpec
from ..storage import Database, RungRow, RunRow, StudyRow, TrialRow, utcnow
from ..vocabulary import LIVE_TRIAL_STATES, FailureKind, OnOom, StudyStatus, TrialState
from ._common import live_trials, spec_of
from ._usage import compute_usage

log = logging.getLogger("hpo.service")
T = TypeVar("T")


def transact(db: Database, operation: Callable[[Session], T], *, write: bool = False) -> T:
    """Run one service operation in one transaction (again, if the database aborted it for
    losing a race), then log what it did: only what was committed is ever logged."""
    events: list[tuple[int, str, tuple[Any, ...]]] = []

    def attempt(session: Session) -> T:
        events.clear()
        session.info["events"] = events
        return operation(session)

    result = db.run(attempt, write=write)
    for level, message, args in events:
        log.log(level, message, *args)
    if write:
        db.changed.set()  # wakes the Optuna mirror
    return result


def note(session: Session, level: int, message: str, *args: Any) -> None:
    """Log ``message`` once the operation's transaction has committed."""
    session.info.setdefault("events", []).append((level, message, args))


def bump(study: StudyRow, now: datetime) -> None:
    """The study's own row changed: its cached views are stale."""
    study.version = study.version + 1
    study.updated_at = now


def finish(
    session: Session,
    study: StudyRow,
    trial: TrialRow,
    run: RunRow,
    *,
    spec: StudySpec,
    state: TrialState,
    now: datetime,
    value: float | None = None,
) -> None:
    """End ``run`` and its trial in ``state``; complete the study if that was its last."""
    run.state, run.finished_at, run.heartbeat_at = state, now, now
    trial.state, trial.finished_at = state, now
    if value is not None:
        trial.value = value
    complete_if_done(session, study, now, spec=spec)


def complete_if_done(session: Session, study: StudyRow, now: datetime, *, spec: StudySpec) -> bool:
    """Complete a running study whose budget is handed out and whose trials all ended.

    Only near its end does this lock the study row, so that of two trials finishing at once,
    the second to commit sees the first one's end and completes the study. A study with a
    compute budget (epochs, GPU-hours) is done when nothing runs and no trial fits any more.
    """
    if study.status != StudyStatus.RUNNING:
        return False
    all_handed_out = study.size is not None and study.handed_out >= study.size
    limits = compute_limits(spec)
    if not (all_handed_out or limits.limited):
        return False
    session.refresh(study, with_for_update={"key_share": True})
    if study.status != StudyStatus.RUNNING or live_trials(session, study.id):
        return False
    if all_handed_out:
        complete_study(session, study, now, f"all {study.size} trials ended")
        return True
    usage = compute_usage(session, study_id=study.id, spec=spec, now=now)
    if not compute_finished(usage=usage, limits=limits, name=study.name):
        return False
    complete_study(session, study, now, "its compute budget has no room for another trial")
    return True


def complete_study(session: Session, study: StudyRow, now: datetime, why: str) -> None:
    """Mark a running study completed (the caller checked that nothing of it runs)."""
    study.status, study.finished_at = StudyStatus.COMPLETED, now
    bump(study, now)
    note(session, logging.INFO, "study %s completed: %s", study.name, why)


def end_attempt(
    session: Session,
    study: StudyRow,
    spec: StudySpec,
    trial: TrialRow,
    run: RunRow,
    *,
    reason: str,
    kind: FailureKind,
    now: datetime,
) -> bool:
    """End a failed attempt: retry the trial as a new attempt if the policy allows (returns
    True), else fail the trial.

    With ``resources.on_oom: accumulate`` an out-of-memory attempt is retried at half the
    batch (:mod:`hpo.oom`); those retries do not count against ``budget.max_retries``.
    """
    smaller = _smaller_batch(spec, trial, run) if kind == FailureKind.OOM else None
    retry = study.status == StudyStatus.RUNNING and (
        smaller is not None
        or decide_retry(
            kind=kind,
            attempt=run.attempt - _memory_retries(session, spec, trial),
            max_retries=spec.budget.max_retries,
        )
    )
    run.error, run.failure_kind = reason, kind
    if retry:
        run.state, run.finished_at = TrialState.FAILED, now
        no_room = _no_room_for_retry(session, study, spec, now)
        if no_room is not None:
            retry = False
            run.error = not_retried(reason, no_room)
    if not retry:
        finish(session, study, trial, run, spec=spec, state=TrialState.FAILED, now=now)
        note(session, logging.INFO, "trial %s/%d failed (%s)", study.name, trial.number, kind)
        return False
    run.state, run.finished_at = TrialState.FAILED, now
    # the new attempt starts clean: the early-stopping rule never sees the old one's values
    session.execute(delete(RungRow).where(RungRow.run_id == run.id))
    session.add(
        RunRow(
            study_id=study.id,
            trial_id=trial.id,
            trial_number=trial.number,
            attempt=run.attempt + 1,
            state=TrialState.PENDING,
            token_hash="",  # no token until a worker takes it
            started_at=now,
            heartbeat_at=now,
            # a retry keeps the batch its attempt had come down to, or takes the smaller one
            batch_size=smaller.batch_size if smaller else run.batch_size,
            gradient_accumulation_steps=(
                smaller.accumulation if smaller else run.gradient_accumulation_steps
            ),
        )
    )
    trial.state, trial.finished_at = TrialState.PENDING, None
    trial.attempts = trial.attempts + 1  # the retry is now the latest attempt
    note(
        session,
        logging.WARNING,
        "trial %s/%d attempt %d lost (%s); retrying it as attempt %d",
        study.name,
        trial.number,
        run.attempt,
        kind,
        run.attempt + 1,
    )
    return True


def _smaller_batch(spec: StudySpec, trial: TrialRow, run: RunRow) -> AttemptBatch | None:
    """The batch to retry an out-of-memory attempt at, or None (on_oom: fail, or the floor)."""
    if spec.resources.on_oom != OnOom.ACCUMULATE:
        return None
    current = attempt_batch(trial.params, run.batch_size, run.gradient_accumulation_steps)
    return halved(current, floor=spec.resources.min_batch_size)


def _memory_retries(session: Session, spec: StudySpec, trial: TrialRow) -> int:
    """How many of the trial's attempts ran out of memory and were retried at a smaller batch:
    they are not infrastructure retries."""
    if spec.resources.on_oom != OnOom.ACCUMULATE:
        return 0
    count = session.scalar(
        select(func.count())
        .select_from(RunRow)
        .where(RunRow.trial_id == trial.id, RunRow.failure_kind == FailureKind.OOM)
    )
    return int(count or 0)


#: what a failure's reason is followed by when the compute budget leaves no room to retry
NOT_RETRIED = "; not retried: "


def not_retried(reason: str, why: str) -> str:
    """The reason recorded for an attempt not retried for want of budget (the worker's own
    reason alone if both would not fit the limit on a reason)."""
    text = f"{reason}{NOT_RETRIED}{why}"
    return text if len(text) <= MAX_REASON_CHARS else reason


def _no_room_for_retry(
    session: Session, study: StudyRow, spec: StudySpec, now: datetime
) -> str | None:
    """Why the compute budget leaves no room to retry (read after the attempt ended)."""
    limits = compute_limits(spec)
    if not limits.limited:
        return None
    session.flush()
    usage = compute_usage(session, study_id=study.id, spec=spec, now=now)
    return room_for_retry(usage=usage, limits=limits)


def stop_trials(
    session: Session,
    study: StudyRow,
    *,
    kind: FailureKind,
    reason: str,
    status: StudyStatus,
    now: datetime,
) -> None:
    """End every live trial of the study as cancelled and set the study's ``status``."""
    session.execute(
        update(RunRow)
        .where(RunRow.study_id == study.id, RunRow.state.in_(LIVE_TRIAL_STATES))
        .values(state=TrialState.CANCELLED, failure_kind=kind, error=reason, finished_at=now)
    )
    session.execute(
        update(TrialRow)
        .where(TrialRow.study_id == study.id, TrialRow.state.in_(LIVE_TRIAL_STATES))
        .values(state=TrialState.CANCELLED, finished_at=now)
    )
    study.status, study.finished_at = status, now
    bump(study, now)


def reap(
    db: Database,
    *,
    heartbeat_timeout: float,
    start_timeout: float | None = None,
    now: datetime | None = None,
    silent_since: datetime | None = None,
) -> int:
    """Retry (or fail) runs whose worker went silent, close studies out of time, and
    complete studies whose last trial ended.

    A run whose worker has said it started is lost after ``heartbeat_timeout`` seconds of
    silence; one still waiting for its worker to start (queued on Ray, a cold worker process)
    gets ``start_timeout`` (default: ten times the heartbeat timeout). Silence is counted
    from ``silent_since`` at the earliest: after the controller could not reach its
    database, workers that could not report either are given a fresh timeout. Returns how
    many runs and studies it ended. Safe to run from several controllers at once.
    """
    now = now or utcnow()
    start_timeout = start_timeout if start_timeout is not None else 10 * heartbeat_timeout
    stale, timed, done = transact(
        db, lambda s: _overdue(db, s, now, heartbeat_timeout, start_timeout, silent_since)
    )
    ended = 0
    for run_id, started in stale:
        timeout = heartbeat_timeout if started is not None else start_timeout
        ended += transact(db, partial(_reap_run, db, run_id, now, timeout), write=True)
    for study_id in timed:
        ended += transact(db, partial(_close_out_of_time, db, study_id, now), write=True)
    for study_id in done:
        ended += transact(db, partial(_complete_done, db, study_id, now), write=True)
    return ended


def _overdue(
    db: Database,
    session: Session,
    now: datetime,
    heartbeat_timeout: float,
    start_timeout: float,
    silent_since: datetime | None,
) -> tuple[list[Any], list[int], list[int]]:
    def older(seconds: float) -> Any:
        deadline = now - timedelta(seconds=seconds)
        if silent_since is not None and silent_since > deadline:
            return false()  # nobody could be heard from before silent_since
        return RunRow.heartbeat_at < deadline

    stale = session.execute(
        select(RunRow.id, RunRow.worker_started_at).where(
            RunRow.state == TrialState.RUNNING,
            or_(
                and_(RunRow.worker_started_at.is_not(None), older(heartbeat_timeout)),
                and_(RunRow.worker_started_at.is_(None), older(start_timeout)),
            ),
        )
    ).all()
    running = session.scalars(select(StudyRow).where(StudyRow.status == StudyStatus.RUNNING)).all()
    timed = [
        s.id
        for s in running
        if wall_clock_spent(
            elapsed_seconds=(now - s.created_at).total_seconds(),
            max_wall_seconds=spec_of(db, s).budget.max_wall_seconds,
        )
    ]
    done = [
        s.id
        for s in running
        if s.size is not None and s.handed_out >= s.size and not live_trials(session, s.id)
    ]
    return list(stale), timed, [i for i in done if i not in timed]


def _reap_run(db: Database, run_id: int, now: datetime, timeout: float, session: Session) -> int:
    run = session.scalars(select(RunRow).where(RunRow.id == run_id).with_for_update()).first()
    deadline = now - timedelta(seconds=timeout)
    if run is None or run.state != TrialState.RUNNING or run.heartbeat_at >= deadline:
        return 0  # finished, or heard from, since we looked
    study = session.get(StudyRow, run.study_id)
    trial = session.get(TrialRow, run.trial_id)
    if study is None or trial is None:
        return 0
    silent = (now - run.heartbeat_at).total_seconds()
    reason = (
        f"no heartbeat from worker {run.worker or '?'} for {silent:.0f} s"
        if run.worker_started_at
        else f"no worker started the trial within {silent:.0f} s of handing it out"
    )
    end_attempt(
        session,
        study,
        spec_of(db, study),
        trial,
        run,
        kind=FailureKind.HEARTBEAT,
        reason=reason,
        now=now,
    )
    return 1


def _close_out_of_time(db: Database, study_id: int, now: datetime, session: Session) -> int:
    study = session.scalars(
        select(StudyRow).where(StudyRow.id == study_id).with_for_update(key_share=True)
    ).first()
    if study is None or study.status != StudyStatus.RUNNING:
        return 0
    limit = spec_of(db, study).budget.max_wall_seconds
    stop_trials(
        session,
        study,
        kind=FailureKind.TIME_LIMIT,
        status=StudyStatus.COMPLETED,
        reason=f"the study reached its time budget of {limit} s",
        now=now,
    )
    message = "study %s completed: its time budget of %s s ran out"
    note(session, logging.INFO, message, study.name, limit)
    return 1


def _complete_done(db: Database, study_id: int, now: datetime, session: Session) -> int:
    study = session.get(StudyRow, study_id)
    return int(study is not None and complete_if_done(session, study, now, spec=spec_of(db, study)))
