"""The trial protocol after ask: report, heartbeat, complete, fail.

Each call is one transaction over our tables, authorized by the attempt's token. Each is also
safe to send twice (a worker resends after a dropped connection): a report repeating the
last recorded step with the same metrics, a complete repeating the recorded metrics, or a
fail repeating the recorded reason answers as the first one did, and writes nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .._errors import Forbidden, InvalidSpec, OutOfOrderReport, TrialFinished, Unauthorized
from ..budget import compute_limits
from ..schemas import TrialDetail, cut_reason
from ..spec import StudySpec
from ..storage import Database, RunRow, StudyRow, TrialRow, utcnow
from ..vocabulary import FailureKind, TrialState
from . import _statements as sql
from ._common import (
    MAX_INT,
    check_number,
    find_study,
    hash_token,
    spec_by_id,
    spec_of,
    study_key,
    trial_not_found,
)
from ._early_stopping import judge
from ._lifecycle import NOT_RETRIED, complete_if_done, end_attempt, finish, transact
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


def _attempt(session: Session, ref: str | int, number: int, token: str | None) -> Any:
    """The attempt ``token`` was issued for (locked) with what a report needs of its study,
    in one query; the same errors as :func:`_authorized` when there is none."""
    key = study_key(ref)
    if token and key is not None and 0 <= number <= MAX_INT:
        by_id, value = key
        row = (
            session.connection()
            .execute(
                sql.ATTEMPT_BY_ID if by_id else sql.ATTEMPT_BY_NAME,
                {"b_ref": value, "b_number": number, "b_token": hash_token(token)},
            )
            .first()
        )
        if row is not None:
            return row
    _authorized(session, find_study(session, ref), number, token)
    raise AssertionError("unreachable: no attempt has this token, so _authorized raised")


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
    if trial is not None and trial.attempts != run.attempt:
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
        run = _attempt(session, ref, number, token)
        if run.last_step is not None and step <= run.last_step:
            if _recorded(session, run.id, step) == metrics:
                return bool(run.state != TrialState.RUNNING)  # a resent report: answer again
            raise OutOfOrderReport(
                f"trial {number} already reported step {run.last_step}; steps must increase, "
                f"but this report is for step {step}"
            )
        if run.state == TrialState.CANCELLED:
            return True
        if run.state != TrialState.RUNNING:
            study = find_study(session, ref)
            _require_running(session, study, _run(session, run.id), "take more reports")
        spec = spec_by_id(db, session, run.study_id)
        value = objective(spec, metrics, "report")
        verdict = judge(
            session,
            study_id=run.study_id,
            study_name=run.study_name,
            spec=spec,
            run_id=run.id,
            trial_number=number,
            next_rung=run.next_rung,
            last_step=run.last_step,
            step=step,
            value=value,
        )
        now = utcnow()
        conn = session.connection()
        conn.execute(
            sql.ADD_METRICS,
            [
                {
                    "run_id": run.id,
                    "study_id": run.study_id,
                    "trial_number": number,
                    "step": step,
                    "name": name,
                    "value": val,
                }
                for name, val in metrics.items()
            ],
        )
        conn.execute(
            sql.REPORTED_AND_PRUNED if verdict.stop else sql.REPORTED,
            {
                "b_run": run.id,
                "b_step": step,
                "b_next_rung": verdict.next_rung,
                "b_now": now,
                "b_now_too": now,
                **({"b_ended": now} if verdict.stop else {}),
            },
        )
        if verdict.stop:
            _prune(session, run, spec, value, now)
        return verdict.stop

    return transact(db, record, write=True)


def _prune(session: Session, run: Any, spec: StudySpec, value: float, now: datetime) -> None:
    """End a pruned trial (its attempt ended with the report's own update), and complete the
    study only when its budget is all handed out, or it has a compute budget (the common case
    reads nothing more)."""
    session.connection().execute(
        sql.TRIAL_PRUNED, {"b_trial": run.trial_id, "b_now": now, "b_value": value}
    )
    all_handed_out = run.study_size is not None and run.handed_out >= run.study_size
    if all_handed_out or compute_limits(spec).limited:
        study = session.get(StudyRow, run.study_id)
        if study is not None:
            complete_if_done(session, study, now, spec=spec)


def _run(session: Session, run_id: int) -> RunRow:
    run = session.get(RunRow, run_id, populate_existing=True)
    assert run is not None  # locked by this transaction
    return run


def _recorded(session: Session, run_id: int, step: int) -> dict[str, float]:
    rows = session.connection().execute(sql.RECORDED, {"b_run": run_id, "b_step": step}).all()
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
        run = _attempt(session, ref, number, token)
        if run.state == TrialState.CANCELLED:
            return True
        if run.state != TrialState.RUNNING:
            study = find_study(session, ref)
            _require_running(session, study, _run(session, run.id), "send heartbeats")
        now = utcnow()
        session.connection().execute(
            sql.HEARD_FROM,
            {"b_run": run.id, "b_now": now, "b_now_too": now, "b_worker": worker, "b_gpus": gpus},
        )
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
        spec = spec_of(db, study)
        value = objective(spec, metrics, "complete call")
        trial = _locked_trial(session, run)
        run.final_metrics = metrics
        finish(
            session,
            study,
            trial,
            run,
            spec=spec,
            state=TrialState.COMPLETED,
            now=utcnow(),
            value=value,
        )
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
    """End the current attempt as failed with ``reason`` (stored cut to
    ``MAX_REASON_CHARS``, its start and end kept).

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
    reason = cut_reason(reason)

    def end(session: Session) -> int:
        study = find_study(session, ref)
        run = _authorized(session, study, number, token)
        recorded = run.error or ""
        same = recorded == reason or recorded.startswith(reason + NOT_RETRIED)
        if same and run.failure_kind == kind and run.finished_at is not None:
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
