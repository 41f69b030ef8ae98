"""The trial protocol after ask: report, heartbeat, complete, fail.

Each call is one transaction over our tables, authorized by the attempt's token. Each is also
safe to send twice (a worker resends after a dropped connection): a report repeating the
last recorded step with the same metrics, a complete repeating the recorded metrics, or a
fail repeating the recorded reason answers as the first one did, and writes nothing.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from .._errors import Forbidden, InvalidSpec, OutOfOrderReport, TrialFinished, Unauthorized
from ..schemas import TrialDetail
from ..spec import StudySpec
from ..storage import Database, MetricRow, RunRow, StudyRow, TrialRow, utcnow
from ..vocabulary import FailureKind, TrialState
from ._common import check_number, find_study, hash_token, spec_of, trial_not_found
from ._early_stopping import judge
from ._lifecycle import end_attempt, finish, transact
from ._reads import get_trial


def _authorized(session: Session, study: StudyRow, number: int, token: str | None) -> RunRow:
    """The attempt ``token`` was issued for, locked; 404, 401 or 403 otherwise (tokens are
    looked up by their SHA-256, so the lookup reveals nothing about a token's text)."""
    check_number(study, number)
    if token:
        run = session.scalars(
            select(RunRow)
            .where(
                RunRow.study_id == study.id,
                RunRow.trial_number == number,
                RunRow.token_hash == hash_token(token),
            )
            .with_for_update()
        ).first()
        if run is not None:
            return run
    exists = session.scalar(
        select(TrialRow.id).where(TrialRow.study_id == study.id, TrialRow.number == number)
    )
    if exists is None:
        raise trial_not_found(study, number)
    if not token:
        raise Unauthorized(
            f"trial {number} of study {study.name!r} needs its token: send the header "
            "'Authorization: Bearer <token>' with the token that ask returned"
        )
    raise Forbidden(_not_current(study, number))


def _not_current(study: StudyRow, number: int) -> str:
    return (
        f"the token does not belong to the current attempt of trial {number} of study "
        f"{study.name!r}; use the token that ask returned for it (a retried trial gets a new "
        "token, and the old attempt must stop)"
    )


def _require_running(session: Session, study: StudyRow, run: RunRow, action: str) -> None:
    if run.state == TrialState.RUNNING:
        return
    trial = session.get(TrialRow, run.trial_id)
    if trial is not None and trial.latest_run_id != run.id:
        raise Forbidden(_not_current(study, run.trial_number))
    raise TrialFinished(
        f"trial {run.trial_number} of study {study.name!r} is already {run.state}, so it "
        f"cannot {action}; ask for a new trial with POST /api/v1/studies/{study.name}/trials"
    )


def _locked_trial(session: Session, run: RunRow) -> TrialRow:
    trial = session.scalars(
        select(TrialRow).where(TrialRow.id == run.trial_id).with_for_update()
    ).one()
    return trial


def _mark_alive(run: RunRow, now: datetime) -> None:
    run.heartbeat_at = now
    run.worker_started_at = run.worker_started_at or now


def objective(spec: StudySpec, metrics: dict[str, float], what: str) -> float:
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

    def record(session: Session) -> bool:
        study = find_study(session, ref)
        run = _authorized(session, study, number, token)
        if run.last_step is not None and step <= run.last_step:
            if _recorded(session, run, step) == metrics:
                return run.state != TrialState.RUNNING  # a resent report: answer it again
            raise OutOfOrderReport(
                f"trial {number} already reported step {run.last_step}; steps must increase, "
                f"but this report is for step {step}"
            )
        if run.state == TrialState.CANCELLED:
            return True
        _require_running(session, study, run, "take more reports")
        spec = spec_of(db, study)
        value = objective(spec, metrics, "report")
        verdict = judge(session, study, spec, run, step=step, value=value)
        now = utcnow()
        session.add_all(
            MetricRow(
                run_id=run.id,
                study_id=study.id,
                trial_number=number,
                step=step,
                name=name,
                value=val,
            )
            for name, val in metrics.items()
        )
        run.last_step = step
        _mark_alive(run, now)
        if verdict.stop:
            trial = _locked_trial(session, run)
            finish(session, study, trial, run, state=TrialState.PRUNED, now=now, value=value)
        return verdict.stop

    return transact(db, record, write=True)


def _recorded(session: Session, run: RunRow, step: int) -> dict[str, float]:
    rows = session.execute(
        select(MetricRow.name, MetricRow.value).where(
            MetricRow.run_id == run.id, MetricRow.step == step
        )
    ).all()
    return {name: value for name, value in rows}


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

    def beat(session: Session) -> bool:
        study = find_study(session, ref)
        run = _authorized(session, study, number, token)
        if run.state == TrialState.CANCELLED:
            return True
        _require_running(session, study, run, "send heartbeats")
        _mark_alive(run, utcnow())
        if worker is not None:
            run.worker = worker
        if gpus is not None:
            run.gpus = gpus
        return False

    return transact(db, beat, write=True)


def complete(
    db: Database, *, ref: str | int, number: int, token: str | None, metrics: dict[str, float]
) -> TrialDetail:
    """Finish a trial with its final metrics; the objective metric becomes its value."""

    def end(session: Session) -> int:
        study = find_study(session, ref)
        run = _authorized(session, study, number, token)
        if run.state == TrialState.COMPLETED and run.final_metrics == metrics:
            return study.id  # a resent complete
        _require_running(session, study, run, "be completed")
        value = objective(spec_of(db, study), metrics, "complete call")
        trial = _locked_trial(session, run)
        run.final_metrics = metrics
        finish(session, study, trial, run, state=TrialState.COMPLETED, now=utcnow(), value=value)
        return study.id

    return get_trial(db, ref=transact(db, end, write=True), number=number)


def fail(
    db: Database,
    *,
    ref: str | int,
    number: int,
    token: str | None,
    reason: str,
    kind: FailureKind | str = FailureKind.REPORTED,
) -> TrialDetail:
    """End the current attempt as failed with ``reason``.

    A failure of the infrastructure (``crash``, ``heartbeat``, ``node_lost``) is retried as a
    new attempt while ``budget.max_retries`` allows; any other kind fails the trial. The study
    goes on.
    """
    try:
        kind = FailureKind(kind)
    except ValueError:
        raise InvalidSpec(
            f"kind: unknown failure kind {str(kind)[:40]!r}; use one of "
            f"{', '.join(k.value for k in FailureKind)}"
        ) from None

    def end(session: Session) -> int:
        study = find_study(session, ref)
        run = _authorized(session, study, number, token)
        if run.error == reason and run.failure_kind == kind and run.finished_at is not None:
            return study.id  # a resent fail
        _require_running(session, study, run, "be failed")
        trial = _locked_trial(session, run)
        end_attempt(
            session,
            study,
            spec_of(db, study),
            trial,
            run,
            reason=reason,
            kind=kind,
            now=utcnow(),
        )
        return study.id

    return get_trial(db, ref=transact(db, end, write=True), number=number)


__all__ = ["complete", "fail", "heartbeat", "objective", "report"]
