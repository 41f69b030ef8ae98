"""What each dashboard view shows: reads through :mod:`hpo.service`, draws with
:mod:`dashboards.figures`.

Each function returns one view as JSON. They choose what to send: a study of 10,000 trials
gets its curves for a few hundred chosen trials, its parallel coordinates for at most a
thousand lines, and its table a page at a time. A study's views are kept, serialized, until
the study changes (a running one's for two seconds), so a page opened again, or by a second
person, costs a lookup. They are kept in the database handle's cache (:class:`hpo.cache.
StudyCache`, owned by the app, bounded, emptied when a study is deleted).
"""

from __future__ import annotations

import functools
import importlib
import json
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

from hpo import algorithms, service
from hpo.schemas import StudyPublic, TrialPublic
from hpo.storage import Database
from hpo.vocabulary import LIVE_TRIAL_STATES, StudyStatus

ALL = 1_000_000
MAX_CURVES = 200
#: markers a scatter view draws at most (a 10,000-trial history is thinned, its best line exact)
MAX_POINTS = 2000


#: one thread at a time imports plotly (and Optuna's importance module): two importing its
#: circular lazy modules at once can end in the import system's _DeadlockError
_IMPORTING = threading.Lock()


def _figures() -> ModuleType:
    """The figure builders; plotly loads with the first figure, not when the app starts."""
    loaded = sys.modules.get("dashboards.figures")
    if loaded is not None:
        return loaded
    with _IMPORTING:
        return importlib.import_module("dashboards.figures")


def preload() -> None:
    """Import what the first view would otherwise wait for (plotly; Optuna's importance
    module, which pulls in scikit-learn), under the same lock as the views' own import."""
    with _IMPORTING:
        importlib.import_module("optuna.importance")
        importlib.import_module("dashboards.figures")


LIVE_TTL_S = 2.0
View = Callable[..., dict[str, Any]]


def cached(view: View) -> Callable[..., bytes]:
    """Serve ``view(db, study, **kwargs)`` as JSON bytes, kept in ``db.cache`` until the study
    changes (its version, or its trial counts: a trial that ends changes the views but not the
    study's own row) or, while it runs, for ``LIVE_TTL_S`` seconds."""

    @functools.wraps(view)
    def serve(db: Database, ref: str | int, **kwargs: Any) -> bytes:
        study = service.get_study(db, ref=ref)
        version = (study.version, tuple(sorted(study.trial_counts.items())))
        return db.cache.get_or_build(
            study.id,
            f"view:{view.__name__}",
            tuple(sorted(kwargs.items())),
            lambda: json.dumps(view(db, study, **kwargs), separators=(",", ":")).encode(),
            version=version,
            max_age=LIVE_TTL_S if study.status == StudyStatus.RUNNING else None,
        )

    return serve


def _trials(db: Database, study: StudyPublic) -> list[TrialPublic]:
    trials, _ = service.list_trials(db, ref=study.id, limit=ALL)
    return trials


@cached
def history(db: Database, study: StudyPublic) -> dict[str, Any]:
    trials = _trials(db, study)
    objective = study.spec.objective
    return _figures().optimization_history(
        trials, metric=objective.metric, direction=objective.direction, max_points=MAX_POINTS
    )


def rungs(study: StudyPublic) -> dict[int, list[int]] | None:
    """Where early stopping decides, per bracket (one for ASHA, several for Hyperband): the
    very function the rule itself uses, so the lines drawn are where trials are judged."""
    plan = algorithms.halving_plan(algorithms.in_force(study.spec), study.spec.budget)
    if plan is None:
        return None
    return {b: algorithms.rung_steps(plan, b) for b in range(plan.n_brackets)}


def curve_trials(study: StudyPublic, trials: list[TrialPublic], limit: int) -> list[TrialPublic]:
    """Which trials get a learning curve: every running one, the best, then the most recent."""
    maximize = study.spec.objective.direction == "maximize"
    running = [t for t in trials if t.state in LIVE_TRIAL_STATES]
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


@cached
def curves(db: Database, study: StudyPublic, *, limit: int = MAX_CURVES) -> dict[str, Any]:
    trials = _trials(db, study)
    chosen = curve_trials(study, trials, limit)
    data = service.objective_curves(db, ref=study.id, numbers=[t.number for t in chosen])
    figure = _figures().learning_curves(
        data,
        {t.number: t for t in chosen},
        metric=study.spec.objective.metric,
        max_epochs=study.spec.budget.max_epochs,
        rungs=rungs(study),
    )
    figure["meta"] = {"shown": len(chosen), "total": len(trials)}
    return figure


@cached
def parallel(db: Database, study: StudyPublic) -> dict[str, Any]:
    trials = _trials(db, study)
    objective = study.spec.objective
    return _figures().parallel_coordinates(
        trials, study.spec.space, metric=objective.metric, direction=objective.direction
    )


@cached
def importance(db: Database, study: StudyPublic) -> dict[str, Any]:
    return _figures().param_importance(service.param_importances(db, ref=study.id))


@cached
def slice_(db: Database, study: StudyPublic) -> dict[str, Any]:
    trials = _trials(db, study)
    objective = study.spec.objective
    return _figures().slice_plot(
        trials,
        study.spec.space,
        metric=objective.metric,
        direction=objective.direction,
        max_points=MAX_POINTS // 2,
    )


@cached
def contour(db: Database, study: StudyPublic, *, x: str | None, y: str | None) -> dict[str, Any]:
    trials = _trials(db, study)
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


@cached
def progress(db: Database, study: StudyPublic) -> dict[str, Any]:
    """One study's series of the comparison: its finished trials with the compute spent."""
    points = _figures().study_progress(_trials(db, study), service.compute_spent(db, ref=study.id))
    return {"name": study.name, "direction": study.spec.objective.direction, "points": points}


def compare_studies(db: Database, refs: list[str]) -> dict[str, Any]:
    # each study's series is kept like a view (about 0.3 s to build for 10,000 trials), so a
    # comparison of many big studies costs a lookup per study once they have been drawn
    series = [json.loads(progress(db, ref)) for ref in refs]
    return _figures().compare_studies(series)


def trial_metrics(db: Database, ref: str | int, number: int) -> dict[str, Any]:
    study = service.get_study(db, ref=ref)
    detail = service.get_trial(db, ref=study.id, number=number)
    return _figures().metric_curves(detail, objective=study.spec.objective.metric)
