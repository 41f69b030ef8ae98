"""Trial reads: the list of a study's trials and one trial in full."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import select

from .. import algorithms
from ..algorithms import Space
from ..schemas import ReportPublic, RunPublic, TrialDetail, TrialPublic
from ..storage import Database, MetricRow, RunRow
from ._common import find_study, latest_run, spec_of, trial_state
from ._summaries import trial_summaries


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
        state=trial_state(frozen.state.name, run.state if run else None),  # type: ignore[arg-type]
        params=algorithms.clean_params(space, frozen.params),
        value=frozen.value if frozen.state == TrialState.COMPLETE else None,
        last_step=frozen.last_step,
        attempts=len(attempts) or 1,
        started_at=attempts[0].started_at if attempts else None,
        finished_at=run.finished_at if run else None,
        **extra,
    )


def list_trials(
    db: Database,
    *,
    ref: str | int,
    state: str | None = None,
    limit: int = 100,
    offset: int = 0,
    sort: str = "number",
    descending: bool = False,
) -> tuple[list[TrialPublic], int]:
    """One page of a study's trials, filtered by state and sorted, and how many match.

    Trials without a value (or a step) sort after those with one, in either direction.
    """
    with db.transaction() as session:
        row = find_study(session, ref)
    trials = trial_summaries(db, row)
    if state:
        trials = [t for t in trials if t.state == state]
    if sort != "number" or descending:
        present = [t for t in trials if getattr(t, sort) is not None]
        missing = [t for t in trials if getattr(t, sort) is None]
        present.sort(key=lambda t: (getattr(t, sort), t.number), reverse=descending)
        trials = present + missing
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


__all__ = ["get_trial", "list_trials"]
