"""Early stopping against the database: the few rows a rung decision needs.

The rules themselves are pure (:mod:`hpo.algorithms`); this module feeds them. A successive
halving decision counts, in the database, how many values recorded at one rung of one bracket
beat the new one (index ``ix_hpo_rungs_study_bracket_rung_value``); a median decision reads
the completed trials' values at one step (``ix_hpo_metrics_study_name_step``). Neither grows
with the trials in flight.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .. import algorithms
from ..spec import StudySpec
from ..storage import MetricRow, RungRow, RunRow, TrialRow
from ..vocabulary import EarlyStopping, TrialState
from . import _statements as sql


@dataclass(frozen=True)
class Verdict:
    stop: bool
    #: the first rung the attempt has not passed, after this report
    next_rung: int


def judge(
    session: Session,
    *,
    study_id: int,
    study_name: str,
    spec: StudySpec,
    run_id: int,
    trial_number: int,
    next_rung: int,
    last_step: int | None,
    step: int,
    value: float,
) -> Verdict:
    """Decide whether attempt ``run_id`` stops after reporting ``value`` at ``step``; record
    what the rule keeps (the values at the rungs the step reached) in the caller's
    transaction."""
    if not algorithms.pruning_applies(step=step, max_epochs=spec.budget.max_epochs):
        return Verdict(False, next_rung)
    maximize = spec.objective.direction == "maximize"
    algorithm = algorithms.in_force(spec)
    plan = algorithms.halving_plan(algorithm, spec.budget)
    if plan is not None:
        bracket = algorithms.bracket_of(plan, study_name, trial_number)
        waits = algorithms.waits_at_first_rung(
            plan, bracket, next_rung=next_rung, last_step=last_step
        )
        waiting = _first_rung_value(session, run_id) if waits else None
        outcome = algorithms.successive_halving(
            plan=plan,
            bracket=bracket,
            next_rung=next_rung,
            step=step,
            value=value,
            standing=lambda rung, v: _standing(
                session,
                study_id,
                bracket,
                rung,
                v,
                maximize,
                own=waiting is not None and rung == 0,
            ),
            waiting=waiting,
        )
        if outcome.recorded:
            session.connection().execute(
                sql.ADD_RUNGS,
                [
                    {
                        "run_id": run_id,
                        "rung": rung,
                        "study_id": study_id,
                        "bracket": bracket,
                        "trial_number": trial_number,
                        "value": val,
                    }
                    for rung, val in outcome.recorded
                ],
            )
        return Verdict(outcome.stop, outcome.next_rung)
    if algorithm.pruner == EarlyStopping.MEDIAN:
        stop = _median(
            session, study_id, spec, run_id, step=step, value=value, warmup=algorithm.grace_period
        )
        return Verdict(stop, next_rung)
    return Verdict(False, next_rung)


def _standing(
    session: Session,
    study_id: int,
    bracket: int,
    rung: int,
    value: float,
    maximize: bool,
    *,
    own: bool = False,
) -> algorithms.Standing:
    """How many values other attempts recorded at the rung, and how many beat ``value``:
    counted by the database from the index alone, so no value travels. ``own``: the value
    judged is the attempt's own, recorded there while the first rung waited for its quorum;
    it is among those counted, and beats nothing (it is not better than itself)."""
    others, beating = (
        session.connection()
        .execute(
            sql.STANDING_MAXIMIZE if maximize else sql.STANDING_MINIMIZE,
            {"b_study": study_id, "b_bracket": bracket, "b_rung": rung, "b_value": value},
        )
        .one()
    )
    return algorithms.Standing(int(others) - own, int(beating))


def _first_rung_value(session: Session, run_id: int) -> float | None:
    """The value an attempt recorded at the first rung, which waits for its quorum (None if
    it recorded none there: it is then judged there now, on this report's value)."""
    value = session.scalar(select(RungRow.value).where(RungRow.run_id == run_id, RungRow.rung == 0))
    return None if value is None else float(value)


def _median(
    session: Session,
    study_id: int,
    spec: StudySpec,
    run_id: int,
    *,
    step: int,
    value: float,
    warmup: int,
) -> bool:
    completed = session.scalar(
        select(func.count())
        .select_from(TrialRow)
        .where(TrialRow.study_id == study_id, TrialRow.state == TrialState.COMPLETED)
    )
    if int(completed or 0) < algorithms.MEDIAN_STARTUP_TRIALS:
        return False
    metric = spec.objective.metric
    at_step = session.scalars(
        select(MetricRow.value)
        .join(RunRow, RunRow.id == MetricRow.run_id)
        .where(
            MetricRow.study_id == study_id,
            MetricRow.name == metric,
            MetricRow.step == step,
            RunRow.state == TrialState.COMPLETED,
        )
    ).all()
    own = session.scalars(
        select(MetricRow.value).where(MetricRow.run_id == run_id, MetricRow.name == metric)
    ).all()
    maximize = spec.objective.direction == "maximize"
    best = max([*own, value]) if maximize else min([*own, value])
    return algorithms.median_stops(
        step=step,
        best_so_far=best,
        completed_trials=int(completed or 0),
        completed_at_step=list(at_step),
        warmup_steps=warmup,
        maximize=maximize,
    )
