"""Early stopping against the database: the few rows a rung decision needs.

The rules themselves are pure (:mod:`hpo.algorithms`); this module feeds them. A successive
halving decision reads the values recorded at one rung of one bracket (the index
``ix_hpo_rungs_study_bracket_rung``), and a median decision the completed trials' values at one
step (``ix_hpo_metrics_study_name_step``): neither grows with the trials in flight.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .. import algorithms
from ..spec import StudySpec
from ..storage import MetricRow, RungRow, RunRow, StudyRow, TrialRow
from ..vocabulary import EarlyStopping, TrialState


@dataclass(frozen=True)
class Verdict:
    stop: bool


def judge(
    session: Session, study: StudyRow, spec: StudySpec, run: RunRow, *, step: int, value: float
) -> Verdict:
    """Decide whether ``run`` stops after reporting ``value`` at ``step``; record what the
    rule keeps (the values at the rungs the step reached) in the caller's transaction."""
    if not algorithms.pruning_applies(step=step, max_epochs=spec.budget.max_epochs):
        return Verdict(False)
    maximize = spec.objective.direction == "maximize"
    plan = algorithms.halving_plan(spec.algorithm, spec.budget)
    if plan is not None:
        bracket = algorithms.bracket_of(plan, study.name, run.trial_number)
        outcome = algorithms.successive_halving(
            plan=plan,
            bracket=bracket,
            next_rung=run.next_rung,
            step=step,
            value=value,
            maximize=maximize,
            competitors=lambda rung: _rung_values(session, study.id, bracket, rung, run.id),
        )
        session.add_all(
            RungRow(
                run_id=run.id,
                rung=rung,
                study_id=study.id,
                bracket=bracket,
                trial_number=run.trial_number,
                value=val,
            )
            for rung, val in outcome.recorded
        )
        run.next_rung = outcome.next_rung
        return Verdict(outcome.stop)
    if spec.algorithm.pruner == EarlyStopping.MEDIAN:
        return Verdict(_median(session, study, spec, run, step=step, value=value))
    return Verdict(False)


def _rung_values(
    session: Session, study_id: int, bracket: int, rung: int, run_id: int
) -> list[float]:
    return list(
        session.scalars(
            select(RungRow.value).where(
                RungRow.study_id == study_id,
                RungRow.bracket == bracket,
                RungRow.rung == rung,
                RungRow.run_id != run_id,
            )
        )
    )


def _median(
    session: Session, study: StudyRow, spec: StudySpec, run: RunRow, *, step: int, value: float
) -> bool:
    completed = session.scalar(
        select(func.count())
        .select_from(TrialRow)
        .where(TrialRow.study_id == study.id, TrialRow.state == TrialState.COMPLETED)
    )
    if int(completed or 0) < algorithms.MEDIAN_STARTUP_TRIALS:
        return False
    metric = spec.objective.metric
    at_step = session.scalars(
        select(MetricRow.value)
        .join(RunRow, RunRow.id == MetricRow.run_id)
        .where(
            MetricRow.study_id == study.id,
            MetricRow.name == metric,
            MetricRow.step == step,
            RunRow.state == TrialState.COMPLETED,
        )
    ).all()
    own = session.scalars(
        select(MetricRow.value).where(MetricRow.run_id == run.id, MetricRow.name == metric)
    ).all()
    maximize = spec.objective.direction == "maximize"
    best = max([*own, value]) if maximize else min([*own, value])
    return algorithms.median_stops(
        step=step,
        best_so_far=best,
        completed_trials=int(completed or 0),
        completed_at_step=list(at_step),
        warmup_steps=spec.algorithm.grace_period,
        maximize=maximize,
    )
