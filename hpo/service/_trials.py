"""The trial protocol (ask, report, complete, fail) and trial reads."""

from __future__ import annotations

import secrets
from collections import defaultdict
from typing import Any

from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import select

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
from ..algorithms._space import Space
from ..budget import decide_ask, is_finished
from ..schemas import (
    ReportPublic,
    RunPublic,
    TrialAssignment,
    TrialDetail,
    TrialPublic,
)
from ..spec import StudySpec
from ..storage import Database, MetricRow, RunRow, StudyRow, utcnow
from ._common import (
    find_study,
    hash_token,
    latest_run,
    load_optuna_study,
    running_count,
    size_of,
    spec_of,
)

_OPTUNA_STATE = {
    TrialState.RUNNING: "running",
    TrialState.WAITING: "running",
    TrialState.COMPLETE: "completed",
    TrialState.PRUNED: "pruned",
    TrialState.FAIL: "failed",
}


def ask(db: Database, *, ref: str | int, worker: str | None = None) -> TrialAssignment:
    """Hand out the next trial of a running study, within its budget."""
    with db.transaction(write=True) as session:
        row = find_study(session, ref, lock=True)
        spec = spec_of(row)
        decision = decide_ask(
            status=row.status, handed_out=row.handed_out, size=size_of(spec), name=row.name
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
        return TrialAssignment(
            study=row.name,
            number=trial.number,
            params=algorithms.clean_params(spec.space, trial.params),
            token=token,
        )


def _authorized_run(session: Any, row: StudyRow, number: int, token: str | None) -> RunRow:
    run = latest_run(session, row, number, lock=True)
    if not token:
        raise Unauthorized(
            f"trial {number} of study {row.name!r} needs its token: send the header "
            "'Authorization: Bearer <token>' with the token that ask returned"
        )
    if not secrets.compare_digest(hash_token(token), run.token_hash):
        raise Forbidden(
            f"the token does not belong to trial {number} of study {row.name!r}; use the token "
            "that ask returned for this trial"
        )
    return run


def _require_running(run: RunRow, row: StudyRow, action: str) -> None:
    if run.state != "running":
        raise TrialFinished(
            f"trial {run.trial_number} of study {row.name!r} is already {run.state}, so it "
            f"cannot {action}; ask for a new trial with POST /api/v1/studies/{row.name}/trials"
        )


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
        run = _authorized_run(session, row, number, token)
        if run.state == "cancelled":
            return True
        _require_running(run, row, "take more reports")
        spec = spec_of(row)
        value = _objective(spec, metrics, "report")
        if run.last_step is not None and step <= run.last_step:
            raise OutOfOrderReport(
                f"trial {number} already reported step {run.last_step}; steps must increase, "
                f"but this report is for step {step}"
            )
        running = running_count(session, row)
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
        run.last_step, run.heartbeat_at = step, now
        if stop:
            _finish(row, run, spec, "pruned", running=running)
        return stop


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
        running = running_count(session, row)
        study = load_optuna_study(db, row, spec)
        db.optuna_storage.set_trial_user_attr(run.optuna_trial_id, "metrics", metrics)
        study.tell(number, value)
        run.final_metrics = metrics
        _finish(row, run, spec, "completed", running=running)
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
    """Finish a trial as failed with ``reason``; the study goes on."""
    with db.transaction(write=True) as session:
        row = find_study(session, ref)
        run = _authorized_run(session, row, number, token)
        _require_running(run, row, "be failed")
        spec = spec_of(row)
        running = running_count(session, row)
        study = load_optuna_study(db, row, spec)
        db.optuna_storage.set_trial_system_attr(run.optuna_trial_id, "fail_reason", reason)
        study.tell(number, state=TrialState.FAIL)
        run.error, run.failure_kind = reason, kind
        _finish(row, run, spec, "failed", running=running)
    return get_trial(db, ref=row.id, number=number)


def _finish(row: StudyRow, run: RunRow, spec: StudySpec, state: str, *, running: int) -> None:
    now = utcnow()
    run.state, run.finished_at, run.heartbeat_at = state, now, now
    row.updated_at = now
    if row.status == "running" and is_finished(
        handed_out=row.handed_out, size=size_of(spec), running=running - 1
    ):
        row.status, row.finished_at = "completed", now


def _state(frozen: FrozenTrial, run: RunRow | None) -> str:
    if run is not None and run.state == "cancelled":
        return "cancelled"
    return _OPTUNA_STATE[frozen.state]


def _trial_public(
    frozen: FrozenTrial,
    attempts: list[RunRow],
    space: Space,
    cls: type[TrialPublic] = TrialPublic,
    **extra: Any,
) -> TrialPublic:
    run = attempts[-1] if attempts else None
    return cls(
        number=frozen.number,
        state=_state(frozen, run),  # type: ignore[arg-type]
        params=algorithms.clean_params(space, frozen.params),
        value=frozen.value if frozen.state == TrialState.COMPLETE else None,
        last_step=frozen.last_step,
        attempts=len(attempts) or 1,
        started_at=attempts[0].started_at if attempts else None,
        finished_at=run.finished_at if run else None,
        **extra,
    )


def list_trials(
    db: Database, *, ref: str | int, state: str | None = None, limit: int = 100, offset: int = 0
) -> tuple[list[TrialPublic], int]:
    """Trials in number order, filtered by state, one page of them, and how many match."""
    with db.transaction() as session:
        row = find_study(session, ref)
        runs = session.scalars(
            select(RunRow).where(RunRow.study_id == row.id).order_by(RunRow.attempt)
        ).all()
    by_number: dict[int, list[RunRow]] = defaultdict(list)
    for run in runs:
        by_number[run.trial_number].append(run)
    frozen = db.optuna_storage.get_all_trials(row.optuna_study_id, deepcopy=False)
    space = spec_of(row).space
    trials = [_trial_public(t, by_number.get(t.number, []), space) for t in frozen]
    if state:
        trials = [t for t in trials if t.state == state]
    return trials[offset : offset + limit], len(trials)


def get_trial(db: Database, *, ref: str | int, number: int) -> TrialDetail:
    """One trial with every reported metric per step and its run records."""
    with db.transaction() as session:
        row = find_study(session, ref)
        latest = latest_run(session, row, number)
        runs = session.scalars(
            select(RunRow)
            .where(RunRow.study_id == row.id, RunRow.trial_number == number)
            .order_by(RunRow.attempt)
        ).all()
        metric_rows = session.scalars(
            select(MetricRow).where(MetricRow.run_id == latest.id).order_by(MetricRow.step)
        ).all()
    steps: dict[int, dict[str, float]] = defaultdict(dict)
    for m in metric_rows:
        steps[m.step][m.name] = m.value
    frozen = db.optuna_storage.get_trial(latest.optuna_trial_id)
    detail = _trial_public(
        frozen,
        list(runs),
        spec_of(row).space,
        TrialDetail,
        reports=[ReportPublic(step=s, metrics=v) for s, v in sorted(steps.items())],
        final_metrics=latest.final_metrics,
        runs=[RunPublic.model_validate(r, from_attributes=True) for r in runs],
    )
    assert isinstance(detail, TrialDetail)
    return detail


__all__ = ["ask", "complete", "fail", "get_trial", "list_trials", "report"]
