"""How runs end: finishing, retrying, reaping lost workers, stopping a study's runs."""

from __future__ import annotations

from datetime import datetime, timedelta

from optuna.trial import TrialState
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from ..budget import decide_retry, is_finished, wall_clock_spent
from ..spec import StudySpec
from ..storage import Database, RunRow, StudyRow, utcnow
from ._common import load_optuna_study, size_of, spec_of

LIVE_STATES = ("running", "pending")


def finish_run(session: Session, row: StudyRow, run: RunRow, spec: StudySpec, state: str) -> None:
    """Record the end of ``run``; complete the study when that was the last thing to do."""
    now = utcnow()
    run.state, run.finished_at, run.heartbeat_at = state, now, now
    row.updated_at = now
    live = session.scalar(
        select(func.count())
        .select_from(RunRow)
        .where(RunRow.study_id == row.id, RunRow.state.in_(LIVE_STATES))
    )
    if row.status == "running" and is_finished(
        handed_out=row.handed_out, size=size_of(spec), running=int(live or 0)
    ):
        row.status, row.finished_at = "completed", now


def end_attempt(
    db: Database,
    session: Session,
    row: StudyRow,
    run: RunRow,
    spec: StudySpec,
    *,
    reason: str,
    kind: str,
) -> None:
    """End a failed attempt: retry the trial as a new attempt if the policy allows, else
    fail the trial."""
    retry = row.status == "running" and decide_retry(
        kind=kind, attempt=run.attempt, max_retries=spec.budget.max_retries
    )
    if not retry:
        study = load_optuna_study(db, row, spec)
        db.optuna_storage.set_trial_system_attr(run.optuna_trial_id, "fail_reason", reason)
        study.tell(run.trial_number, state=TrialState.FAIL, skip_if_finished=True)
    run.error, run.failure_kind = reason, kind
    if not retry:
        finish_run(session, row, run, spec, "failed")
        return
    now = utcnow()
    run.state, run.finished_at, row.updated_at = "failed", now, now
    session.add(
        RunRow(
            study_id=row.id,
            trial_number=run.trial_number,
            optuna_trial_id=run.optuna_trial_id,
            attempt=run.attempt + 1,
            state="pending",
            token_hash="",  # no token until a worker takes it
        )
    )


def stop_runs(
    db: Database, session: Session, row: StudyRow, *, kind: str, reason: str, status: str
) -> None:
    """End every live run of the study as cancelled and set the study's ``status``."""
    runs = session.scalars(
        select(RunRow)
        .where(RunRow.study_id == row.id, RunRow.state.in_(LIVE_STATES))
        .with_for_update()
    ).all()
    study = load_optuna_study(db, row, spec_of(row))
    for run in runs:
        study.tell(run.trial_number, state=TrialState.FAIL, skip_if_finished=True)
    now = utcnow()
    for run in runs:
        run.state, run.failure_kind, run.error, run.finished_at = "cancelled", kind, reason, now
    row.status, row.updated_at, row.finished_at = status, now, now


def reap(
    db: Database,
    *,
    heartbeat_timeout: float,
    start_timeout: float | None = None,
    now: datetime | None = None,
) -> int:
    """Retry (or fail) runs whose worker went silent, and close studies out of time.

    A run whose worker has said it started is lost after ``heartbeat_timeout`` seconds of
    silence; one still waiting for its worker to start (queued on Ray, a cold worker process)
    gets ``start_timeout`` (default: ten times the heartbeat timeout). Returns how many runs and
    studies it ended. Safe to run from several controllers at once.
    """
    now = now or utcnow()
    start_timeout = start_timeout if start_timeout is not None else 10 * heartbeat_timeout
    ended = 0
    with db.transaction() as session:
        silent = RunRow.heartbeat_at < now - timedelta(seconds=heartbeat_timeout)
        never_started = RunRow.heartbeat_at < now - timedelta(seconds=start_timeout)
        stale = session.execute(
            select(RunRow.id, RunRow.study_id, RunRow.worker_started_at).where(
                RunRow.state == "running",
                or_(
                    and_(RunRow.worker_started_at.is_not(None), silent),
                    and_(RunRow.worker_started_at.is_(None), never_started),
                ),
            )
        ).all()
        timed = [
            s.id
            for s in session.scalars(select(StudyRow).where(StudyRow.status == "running"))
            if wall_clock_spent(
                elapsed_seconds=(now - s.created_at).total_seconds(),
                max_wall_seconds=spec_of(s).budget.max_wall_seconds,
            )
        ]
    for run_id, study_id, started in stale:
        timeout = heartbeat_timeout if started is not None else start_timeout
        ended += _reap_run(db, run_id, study_id, now - timedelta(seconds=timeout), now)
    for study_id in timed:
        ended += _close_out_of_time(db, study_id)
    return ended


def _reap_run(db: Database, run_id: int, study_id: int, deadline: datetime, now: datetime) -> int:
    with db.transaction(write=True) as session:
        row = session.get(StudyRow, study_id)
        run = session.scalars(select(RunRow).where(RunRow.id == run_id).with_for_update()).first()
        if row is None or run is None or run.state != "running" or run.heartbeat_at >= deadline:
            return 0  # finished, or heard from, since we looked
        silent = (now - run.heartbeat_at).total_seconds()
        reason = (
            f"no heartbeat from worker {run.worker or '?'} for {silent:.0f} s"
            if run.worker_started_at
            else f"no worker started the trial within {silent:.0f} s of handing it out"
        )
        end_attempt(
            db,
            session,
            row,
            run,
            spec_of(row),
            kind="heartbeat",
            reason=reason,
        )
        return 1


def _close_out_of_time(db: Database, study_id: int) -> int:
    with db.transaction(write=True) as session:
        row = session.scalars(
            select(StudyRow).where(StudyRow.id == study_id).with_for_update()
        ).first()
        if row is None or row.status != "running":
            return 0
        limit = spec_of(row).budget.max_wall_seconds
        stop_runs(
            db,
            session,
            row,
            kind="time_limit",
            status="completed",
            reason=f"the study reached its time budget of {limit} s",
        )
        return 1
