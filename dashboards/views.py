"""What each dashboard view shows: reads through :mod:`hpo.service`, draws with
:mod:`dashboards.figures`.

Each function returns JSON-ready data for one view. They choose what to send: a study of
10,000 trials gets its curves for a few hundred chosen trials, its parallel coordinates for at
most a thousand lines, and its table a page at a time.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from hpo import service
from hpo.schemas import StudyPublic, TrialPublic
from hpo.storage import Database

ALL = 1_000_000
MAX_CURVES = 200


def _figures() -> ModuleType:
    """The figure builders; plotly loads with the first figure, not when the app starts."""
    return importlib.import_module("dashboards.figures")


def _study_and_trials(db: Database, ref: str | int) -> tuple[StudyPublic, list[TrialPublic]]:
    study = service.get_study(db, ref=ref)
    trials, _ = service.list_trials(db, ref=study.id, limit=ALL)
    return study, trials


def history(db: Database, ref: str | int) -> dict[str, Any]:
    study, trials = _study_and_trials(db, ref)
    objective = study.spec.objective
    return _figures().optimization_history(
        trials, metric=objective.metric, direction=objective.direction
    )


def _rungs(study: StudyPublic) -> list[int] | None:
    algorithm = study.spec.algorithm
    if algorithm.pruner not in ("asha", "hyperband"):
        return None
    rungs, step = [], algorithm.grace_period
    while step < study.spec.budget.max_epochs:
        rungs.append(step)
        step *= algorithm.reduction_factor
    return rungs


def curve_trials(study: StudyPublic, trials: list[TrialPublic], limit: int) -> list[TrialPublic]:
    """Which trials get a learning curve: every running one, the best, then the most recent."""
    maximize = study.spec.objective.direction == "maximize"
    running = [t for t in trials if t.state in ("running", "pending")]
    scored = sorted(
        (t for t in trials if t.value is not None),
        key=lambda t: t.value if t.value is not None else 0.0,
        reverse=maximize,
    )
    chosen: dict[int, TrialPublic] = {t.number: t for t in running[:limit]}
    for t in scored[: max(limit // 4, 1)]:
        chosen.setdefault(t.number, t)
    for t in reversed(trials):
        if len(chosen) >= limit:
            break
        chosen.setdefault(t.number, t)
    return sorted(chosen.values(), key=lambda t: t.number)


def curves(db: Database, ref: str | int, *, limit: int = MAX_CURVES) -> dict[str, Any]:
    study, trials = _study_and_trials(db, ref)
    chosen = curve_trials(study, trials, limit)
    data = service.objective_curves(db, ref=study.id, numbers=[t.number for t in chosen])
    figure = _figures().learning_curves(
        data,
        {t.number: t for t in chosen},
        metric=study.spec.objective.metric,
        max_epochs=study.spec.budget.max_epochs,
        rungs=_rungs(study),
    )
    figure["meta"] = {"shown": len(chosen), "total": len(trials)}
    return figure


def parallel(db: Database, ref: str | int) -> dict[str, Any]:
    study, trials = _study_and_trials(db, ref)
    objective = study.spec.objective
    return _figures().parallel_coordinates(
        trials, study.spec.space, metric=objective.metric, direction=objective.direction
    )


def importance(db: Database, ref: str | int) -> dict[str, Any]:
    return _figures().param_importance(service.param_importances(db, ref=ref))


def slice_(db: Database, ref: str | int) -> dict[str, Any]:
    study, trials = _study_and_trials(db, ref)
    objective = study.spec.objective
    return _figures().slice_plot(
        trials, study.spec.space, metric=objective.metric, direction=objective.direction
    )


def contour(db: Database, ref: str | int, *, x: str | None, y: str | None) -> dict[str, Any]:
    study, trials = _study_and_trials(db, ref)
    names = list(study.spec.space)
    if x is None or y is None:
        ranked = sorted(service.param_importances(db, ref=study.id).items(), key=lambda kv: -kv[1])
        ordered = [n for n, _ in ranked] + [n for n in names if n not in dict(ranked)]
        x = x or ordered[0]
        y = y or next((n for n in ordered if n != x), x)
    objective = study.spec.objective
    figure = _figures().contour(
        trials,
        study.spec.space,
        metric=objective.metric,
        direction=objective.direction,
        x=x,
        y=y,
    )
    figure["meta"] = {"x": x, "y": y, "params": names}
    return figure


def compare_trials(db: Database, ref: str | int, numbers: list[int]) -> dict[str, Any]:
    study = service.get_study(db, ref=ref)
    details = [service.get_trial(db, ref=study.id, number=n) for n in numbers]
    return _figures().compare_trials(
        details, study.spec.space, objective=study.spec.objective.metric
    )


def compare_studies(db: Database, refs: list[str]) -> dict[str, Any]:
    series = []
    for ref in refs:
        study, trials = _study_and_trials(db, ref)
        series.append(
            {
                "name": study.name,
                "direction": study.spec.objective.direction,
                "points": _figures().study_progress(
                    trials, service.compute_spent(db, ref=study.id)
                ),
            }
        )
    return _figures().compare_studies(series)


def trial_metrics(db: Database, ref: str | int, number: int) -> dict[str, Any]:
    study = service.get_study(db, ref=ref)
    detail = service.get_trial(db, ref=study.id, number=number)
    return _figures().metric_curves(detail, objective=study.spec.objective.metric)
