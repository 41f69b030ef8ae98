"""What each dashboard view shows: reads through :mod:`hpo.service`, draws with
:mod:`dashboards.figures`.

Each function returns one view as JSON. They choose what to send: a study of 10,000 trials
gets its curves for a few hundred chosen trials, its parallel coordinates for at most a
thousand lines, and its table a page at a time. A study's views are kept, serialized, until
the study changes (a running one's for two seconds), so a page opened again, or by a second
person, costs a lookup.
"""

from __future__ import annotations

import functools
import importlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from types import ModuleType
from typing import Any

from hpo import service
from hpo.schemas import StudyPublic, TrialPublic
from hpo.storage import Database

ALL = 1_000_000
MAX_CURVES = 200
#: markers a scatter view draws at most (a 10,000-trial history is thinned, its best line exact)
MAX_POINTS = 2000


def _figures() -> ModuleType:
    """The figure builders; plotly loads with the first figure, not when the app starts."""
    return importlib.import_module("dashboards.figures")


LIVE_TTL_S = 2.0
_CACHE_SIZE = 256
_cache: OrderedDict[tuple[Any, ...], tuple[Any, float, bytes]] = OrderedDict()
_lock = threading.Lock()
View = Callable[..., dict[str, Any]]


def cached(view: View) -> Callable[..., bytes]:
    """Serve ``view(db, study, **kwargs)`` as JSON bytes, kept until the study changes."""

    @functools.wraps(view)
    def serve(db: Database, ref: str | int, **kwargs: Any) -> bytes:
        study = service.get_study(db, ref=ref)
        key = (id(db), study.id, view.__name__, tuple(sorted(kwargs.items())))
        version = (study.updated_at, study.n_trials, tuple(sorted(study.trial_counts.items())))
        now = time.monotonic()
        with _lock:
            hit = _cache.get(key)
        if hit and hit[0] == version and (study.status != "running" or now - hit[1] < LIVE_TTL_S):
            return hit[2]
        body = json.dumps(view(db, study, **kwargs), separators=(",", ":")).encode()
        with _lock:
            _cache[key] = (version, now, body)
            _cache.move_to_end(key)
            while len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
        return body

    return serve


def _trials(db: Database, study: StudyPublic) -> list[TrialPublic]:
    trials, _ = service.list_trials(db, ref=study.id, limit=ALL)
    return trials


def _study_and_trials(db: Database, ref: str | int) -> tuple[StudyPublic, list[TrialPublic]]:
    study = service.get_study(db, ref=ref)
    return study, _trials(db, study)


@cached
def history(db: Database, study: StudyPublic) -> dict[str, Any]:
    trials = _trials(db, study)
    objective = study.spec.objective
    return _figures().optimization_history(
        trials, metric=objective.metric, direction=objective.direction, max_points=MAX_POINTS
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
        rungs=_rungs(study),
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
