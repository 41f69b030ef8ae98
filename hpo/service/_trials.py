"""The trial protocol: ask, report, heartbeat, complete, fail."""

from __future__ import annotations

import secrets
from datetime import datetime

from optuna.trial import TrialState
from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import algorithms
from .._errors import (
    BudgetExhausted,
    Forbidden,
    InvalidSpec,
    OutOfOrderReport,
    StudyNotRunning,
    TrialFinished,
    Unauthorized,
)
from ..budget import FAILURE_KINDS, decide_ask, wall_clock_spent
from ..schemas import TrialAssignment, TrialPublic
from ..spec import StudySpec
from ..storage import Database, MetricRow, RunRow, StudyRow, utcnow
from ._common import find_study, hash_token, latest_run, load_optuna_study, size_of, spec_of
from ._lifecycle import end_attempt, finish_run
from ._trial_reads import get_trial


def ask(db: Database, *, ref: str | int, worker: str | None = None) -> TrialAssignment:
    """Hand out the next trial of a running study: a retry waiting for a worker first, else
    a new trial within the budget."""
    with db.transaction(write=True) as session:
        row = find_study(session, ref, lock=True)
        spec = spec_of(row)
        if row.status == "running":
            retry = _pending_retry(session, row)
            if retry is not None:
                return _hand_out_retry(db, row, spec, retry, worker)
        elapsed = (utcnow() - row.created_at).total_seconds()
        decision = decide_ask(
            status=row.status,
            handed_out=row.handed_out,
            size=size_of(spec),
            name=row.name,
            out_of_time=wall_clock_spent(
                elapsed_seconds=elapsed, max_wall_seconds=spec.budget.max_wall_seconds
            ),
        )
        if not decision.allowed:
            error = StudyNotRunning if row.status != "running" else BudgetExhausted
            raise error(decision.reason)
        sampler = algorithms.build_sampler(spec.algorithm, spec.space, trial_number=row.handed_out)
        study = load_optuna_study(db, row, spec, sampler=sampler)
        trial = study.ask(algorithms.distributions(spec.space, grid=spec.algorithm.name == "grid"))
        token = secrets.token_urlsafe(32)
        try:
            session.add(
                RunRow(
                    study_id=row.id,
                    trial_number=trial.number,
                    optuna_trial_id=trial._trial_id,
                    attempt=1,
                    state="running",
                    token_hash=hash_token(token),
                    worker=worker,
                )
            )
            row.handed_out, row.updated_at = row.handed_out + 1, utcnow()
            session.flush()
        except BaseException:
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            raise
        params = algorithms.clean_params(spec.space, trial.params)
        return TrialAssignment(study=row.name, number=trial.number, params=params, token=token)


def _pending_retry(session: Session, row: StudyRow) -> RunRow | None:
    query = (
        select(RunRow)
        .where(RunRow.study_id == row.id, RunRow.state == "pending")
        .order_by(RunRow.trial_number)
        .limit(1)
        .with_for_update()
    )
    return session.scalars(query).first()


def _hand_out_retry(
    db: Database, row: StudyRow, spec: StudySpec, run: RunRow, worker: str | None
) -> TrialAssignment:
    params = db.optuna_storage.get_trial(run.optuna_trial_id).params
    token = secrets.token_urlsafe(32)
    now = utcnow()
    run.state, run.token_hash, run.worker = "running", hash_token(token), worker
    run.started_at = run.heartbeat_at = now
    row.updated_at = now
    return TrialAssignment(
        study=row.name,
        number=run.trial_number,
        params=algorithms.clean_params(spec.space, params),
        token=token,
        attempt=run.attempt,
    )


def _authorized_run(session: Session, row: StudyRow, number: int, token: str | None) -> RunRow:
    run = latest_run(session, row, number, lock=True)
    if not token:
        raise Unauthorized(
            f"trial {number} of study {row.name!r} needs its token: send the header "
            "'Authorization: Bearer <token>' with the token that ask returned"
        )
    if not secrets.compare_digest(hash_token(token), run.token_hash):
        raise Forbidden(
            f"the token does not belong to the current attempt of trial {number} of study "
            f"{row.name!r}; use the token that ask returned for it (a retried trial gets a new "
            "token, and the old attempt must stop)"
        )
    return run


def _require_running(run: RunRow, row: StudyRow, action: str) -> None:
    if run.state != "running":
        raise TrialFinished(
            f"trial {run.trial_number} of study {row.name!r} is already {run.state}, so it "
            f"cannot {action}; ask for a new trial with POST /api/v1/studies/{row.name}/trials"
        )


def _live_run(
    session: Session, row: StudyRow, number: int, token: str | None, action: str
) -> RunRow | None:
    """The trial's running attempt, or None when its study was cancelled (the worker stops)."""
    run = _authorized_run(session, row, number, token)
    if run.state == "cancelled":
        return None
    _require_running(run, row, action)
    return run


def _mark_alive(run: RunRow, now: datetime) -> None:
    run.heartbeat_at = now
    run.worker_started_at = run.worker_started_at or now


def _objective(spec: StudySpec, metrics: dict[str, float], what: str) -> float:
    metric = spec.objective.metric
    if metric not in metrics:
        raise InvalidSpec(
            f"metrics: the {what} has no value for the objective metric {metric!r} "
            f"(it has {', '.join(sorted(metrics))}); include it"
        )
    return metrics[metric]


def report(
    db: Database,
    *,
    ref: str | int,
    number: int,
    token: str | None,
    step: int,
    metrics: dict[str, float],
) -> bool:
    """Record one step's metrics; return True when the trial should stop now."""
    with db.transaction(write=True) as session:
        row = find_study(session, ref)
        run = _live_run(session, row, number, token, "take more reports")
        if run is None:
            return True
        spec = spec_of(row)
        value = _objective(spec, metrics, "report")
        if run.last_step is not None and step <= run.last_step:
            raise OutOfOrderReport(
                f"trial {number} already reported step {run.last_step}; steps must increase, "
                f"but this report is for step {step}"
            )
        storage = db.optuna_storage
        storage.set_trial_intermediate_value(run.optuna_trial_id, step, value)
        stop = False
        if algorithms.pruning_applies(step=step, max_epochs=spec.budget.max_epochs):
            study = load_optuna_study(db, row, spec)
            stop = study.pruner.prune(study, storage.get_trial(run.optuna_trial_id))
            if stop:
                study.tell(number, state=TrialState.PRUNED)
        now = utcnow()
        session.add_all(
            MetricRow(
                run_id=run.id, study_id=row.id, trial_number=number, step=step, name=name, value=val
            )
            for name, val in metrics.items()
        )
        run.last_step = step
        _mark_alive(run, now)
        if stop:
            finish_run(session, row, run, spec, "pruned")
        return stop


def heartbeat(
    db: Database,
    *,
    ref: str | int,
    number: int,
    token: str | None,
    worker: str | None = None,
    gpus: str | None = None,
) -> bool:
    """A worker says it is alive (and where it runs); True means stop now."""
    with db.transaction(write=True) as session:
        row = find_study(session, ref)
        run = _live_run(session, row, number, token, "send heartbeats")
        if run is None:
            return True
        _mark_alive(run, utcnow())
        if worker is not None:
            run.worker = worker
        if gpus is not None:
            run.gpus = gpus
        return False


def complete(
    db: Database, *, ref: str | int, number: int, token: str | None, metrics: dict[str, float]
) -> TrialPublic:
    """Finish a trial with its final metrics; the objective metric becomes its value."""
    with db.transaction(write=True) as session:
        row = find_study(session, ref)
        run = _authorized_run(session, row, number, token)
        _require_running(run, row, "be completed")
        spec = spec_of(row)
        value = _objective(spec, metrics, "complete call")
        study = load_optuna_study(db, row, spec)
        db.optuna_storage.set_trial_user_attr(run.optuna_trial_id, "metrics", metrics)
        study.tell(number, value)
        run.final_metrics = metrics
        finish_run(session, row, run, spec, "completed")
    return get_trial(db, ref=row.id, number=number)


def fail(
    db: Database,
    *,
    ref: str | int,
    number: int,
    token: str | None,
    reason: str,
    kind: str = "reported",
) -> TrialPublic:
    """End the current attempt as failed with ``reason``.

    A failure of the infrastructure (``crash``, ``node_lost``) is retried as a new attempt
    while ``budget.max_retries`` allows; any other kind fails the trial. The study goes on.
    """
    if kind not in FAILURE_KINDS:
        raise InvalidSpec(
            f"kind: unknown failure kind {kind!r}; use one of {', '.join(sorted(FAILURE_KINDS))}"
        )
    with db.transaction(write=True) as session:
        row = find_study(session, ref)
        run = _authorized_run(session, row, number, token)
        _require_running(run, row, "be failed")
        end_attempt(db, session, row, run, spec_of(row), reason=reason, kind=kind)
    return get_trial(db, ref=row.id, number=number)
