"""Trial reads: the list of a study's trials and one trial in full, both from our tables.

The list and the detail read the same rows (``hpo_trials`` and the latest attempt's run), so
they can never disagree; each read is one snapshot, so a read racing a delete sees the study
whole or answers 404.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session

from ..oom import attempt_batch
from ..schemas import ReportPublic, RunPublic, TrialDetail, TrialPublic
from ..storage import Database, MetricRow, RunRow, TrialRow, latest_attempt
from ..vocabulary import TrialState
from ._common import find_study, find_trial
from ._lifecycle import transact

#: the value the API shows: a completed trial's objective (a pruned one's is not a result)
SHOWN_VALUE = case((TrialRow.state == TrialState.COMPLETED, TrialRow.value), else_=None)
_SORTS: dict[str, Any] = {
    "number": TrialRow.number,
    "value": SHOWN_VALUE,
    "state": TrialRow.state,
    "last_step": RunRow.last_step,
}
_COLUMNS = (
    TrialRow.number,
    TrialRow.state,
    TrialRow.params,
    SHOWN_VALUE.label("value"),
    RunRow.last_step,
    TrialRow.attempts,
    TrialRow.started_at,
    TrialRow.finished_at,
    TrialRow.inherited_from,
)


def _public(row: Any) -> TrialPublic:
    return TrialPublic(
        number=row.number,
        state=TrialState(row.state),
        params=row.params,
        value=row.value,
        last_step=row.last_step,
        attempts=row.attempts,
        started_at=row.started_at,
        finished_at=row.finished_at,
        inherited_from=row.inherited_from,
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

    def read(session: Session) -> tuple[list[TrialPublic], int]:
        study = find_study(session, ref)
        where = [TrialRow.study_id == study.id]
        if state:
            where.append(TrialRow.state == state)
        total = session.scalar(select(func.count()).select_from(TrialRow).where(*where)) or 0
        key = _SORTS[sort]
        order = [key.is_(None), key.desc() if descending else key.asc(), TrialRow.number]
        rows = session.execute(
            select(*_COLUMNS)
            .join(RunRow, latest_attempt(), isouter=True)
            .where(*where)
            .order_by(*order)
            .limit(limit)
            .offset(offset)
        ).all()
        return [_public(r) for r in rows], int(total)

    return transact(db, read)


def get_trial(db: Database, *, ref: str | int, number: int) -> TrialDetail:
    """One trial with every attempt's run record and reports (the latest attempt's reports
    are also the trial's own ``reports``)."""

    def read(session: Session) -> TrialDetail:
        study = find_study(session, ref)
        trial = find_trial(session, study, number)
        runs = session.scalars(
            select(RunRow).where(RunRow.trial_id == trial.id).order_by(RunRow.attempt)
        ).all()
        metrics = session.execute(
            select(MetricRow.run_id, MetricRow.step, MetricRow.name, MetricRow.value)
            .join(RunRow, and_(RunRow.id == MetricRow.run_id, RunRow.trial_id == trial.id))
            .order_by(MetricRow.run_id, MetricRow.step)
        ).all()
        steps: dict[int, dict[int, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
        for run_id, step, name, value in metrics:
            steps[run_id][step][name] = value
        reports = {
            run_id: [ReportPublic(step=s, metrics=m) for s, m in sorted(by_step.items())]
            for run_id, by_step in steps.items()
        }
        latest = runs[-1] if runs else None
        public_runs = [
            RunPublic.model_validate(
                {
                    **{f: getattr(r, f) for f in RunPublic.model_fields if f != "reports"},
                    **_batch_of(trial.params, r),
                    "reports": reports.get(r.id, []),
                }
            )
            for r in runs
        ]
        return TrialDetail(
            number=trial.number,
            state=TrialState(trial.state),
            params=trial.params,
            value=trial.value if trial.state == TrialState.COMPLETED else None,
            last_step=latest.last_step if latest else None,
            attempts=trial.attempts,
            started_at=trial.started_at,
            finished_at=trial.finished_at,
            reports=reports.get(latest.id, []) if latest else [],
            final_metrics=latest.final_metrics if latest else None,
            runs=public_runs,
            inherited_from=trial.inherited_from,
        )

    return transact(db, read)


def _batch_of(params: dict[str, Any], run: RunRow) -> dict[str, int | None]:
    """The batch and accumulation an attempt trained with: its own after an out-of-memory
    retry, else the trial's parameters."""
    batch = attempt_batch(params, run.batch_size, run.gradient_accumulation_steps)
    return {
        "batch_size": batch.batch_size if batch else None,
        "gradient_accumulation_steps": batch.accumulation if batch else None,
    }


__all__ = ["get_trial", "list_trials"]
