"""Reads the dashboard needs beyond the REST resources: curves, compute spent, importances.

Everything here aggregates on the server and returns only what a view draws, so a study of
10,000 trials never ships its whole history to a browser.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from typing import Any

import optuna
from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import algorithms
from ..storage import Database, MetricRow, RunRow, TrialRow, latest_attempt
from ..vocabulary import TrialState
from ._common import find_study, spec_of
from ._lifecycle import transact

Curve = list[tuple[int, float]]


def objective_curves(
    db: Database, *, ref: str | int, numbers: list[int] | None = None, metric: str | None = None
) -> dict[int, Curve]:
    """Per trial (``numbers``, default all), the metric (default: the objective) per step of
    its latest attempt."""

    def read(session: Session) -> dict[int, Curve]:
        row = find_study(session, ref)
        name = metric or spec_of(db, row).objective.metric
        query = (
            select(MetricRow.trial_number, MetricRow.step, MetricRow.value)
            .join(RunRow, RunRow.id == MetricRow.run_id)
            .join(TrialRow, latest_attempt())
            .where(MetricRow.study_id == row.id, MetricRow.name == name)
            .order_by(MetricRow.trial_number, MetricRow.step)
        )
        if numbers is not None:
            query = query.where(MetricRow.trial_number.in_(numbers))
        curves: dict[int, Curve] = defaultdict(list)
        for number, step, value in session.execute(query):
            curves[number].append((step, value))
        return dict(curves)

    return transact(db, read)


def compute_spent(db: Database, *, ref: str | int) -> dict[int, tuple[int, float | None]]:
    """Per trial: epochs trained over all its attempts, and GPU-seconds when it used GPUs."""

    def read(session: Session) -> tuple[float, list[Any]]:
        row = find_study(session, ref)
        runs = session.execute(
            select(
                RunRow.trial_number, RunRow.last_step, RunRow.worker_started_at, RunRow.finished_at
            ).where(RunRow.study_id == row.id)
        ).all()
        return spec_of(db, row).resources.gpus_per_trial, list(runs)

    gpus, runs = transact(db, read)
    epochs: dict[int, int] = defaultdict(int)
    seconds: dict[int, float] = defaultdict(float)
    for number, last_step, started, finished in runs:
        epochs[number] += last_step or 0
        if gpus and started and finished:
            seconds[number] += (finished - started).total_seconds() * gpus
    return {n: (e, seconds[n] if gpus else None) for n, e in epochs.items()}


def param_importances(db: Database, *, ref: str | int, max_trials: int = 1000) -> dict[str, float]:
    """Importance of each parameter for the objective, over the last ``max_trials`` completed
    trials; kept in the database handle's cache until more trials complete.

    Optuna's PED-ANOVA evaluator: on 1,000 trials here it took 0.02 s where fANOVA took 25 s,
    which a page cannot wait for.
    """

    def read(session: Session) -> tuple[int, Any, list[Any]]:
        row = find_study(session, ref)
        done = session.execute(
            select(TrialRow.params, TrialRow.value)
            .where(TrialRow.study_id == row.id, TrialRow.state == TrialState.COMPLETED)
            .order_by(TrialRow.number)
        ).all()
        return row.id, spec_of(db, row), list(done)

    study_id, spec, completed = transact(db, read)
    return db.cache.get_or_build(
        study_id,
        "importances",
        max_trials,
        lambda: _importances(spec, completed[-max_trials:]),
        version=len(completed),
    )


def _importances(spec: Any, completed: list[Any]) -> dict[str, float]:
    result: dict[str, float] = {}
    if len(completed) >= 2:
        dists = algorithms.distributions(spec.space, grid=algorithms.in_force(spec).name == "grid")
        study = optuna.create_study(direction=spec.objective.direction)
        study.add_trials(
            optuna.trial.create_trial(params=t.params, distributions=dists, value=t.value)
            for t in completed
        )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                evaluator = optuna.importance.PedAnovaImportanceEvaluator()
                result = dict(optuna.importance.get_param_importances(study, evaluator=evaluator))
        except (RuntimeError, ValueError):  # e.g. every trial has the same params
            result = {}
    return result


__all__ = ["compute_spent", "objective_curves", "param_importances"]
