"""Plotly figure JSON for the dashboard's views (``Plotly.newPlot(el, fig.data, fig.layout)``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response

from dashboards import views
from hpo import InvalidSpec
from hpo.access import Action

from ..auth import requires
from ..deps import MAX_INT, DbDep, TrialNumber

# every figure is a read: any role but worker
router = APIRouter(tags=["figures"], dependencies=[Depends(requires(Action.READ))])
Figure = dict[str, Any]
# the study views come serialized from the dashboard's cache: no re-validation per request
_JSON_DOC: dict[int | str, dict[str, Any]] = {200: {"content": {"application/json": {}}}}


def _json(body: bytes) -> Response:
    return Response(content=body, media_type="application/json")


@router.get("/api/v1/studies/{study}/figures/history", response_class=Response, responses=_JSON_DOC)
def history(study: str, db: DbDep) -> Response:
    """Objective per completed trial, with the best so far."""
    return _json(views.history(db, study))


@router.get("/api/v1/studies/{study}/figures/curves", response_class=Response, responses=_JSON_DOC)
def curves(
    study: str, db: DbDep, limit: Annotated[int, Query(ge=1, le=1000)] = views.MAX_CURVES
) -> Response:
    """Learning curves (objective per epoch) of up to ``limit`` trials: the running ones, the
    best, then the most recent; ``meta`` says how many were shown of how many."""
    return _json(views.curves(db, study, limit=limit))


@router.get(
    "/api/v1/studies/{study}/figures/parallel", response_class=Response, responses=_JSON_DOC
)
def parallel(study: str, db: DbDep) -> Response:
    """Parallel coordinates of parameters and objective (at most 1,000 lines)."""
    return _json(views.parallel(db, study))


@router.get(
    "/api/v1/studies/{study}/figures/importance", response_class=Response, responses=_JSON_DOC
)
def importance(study: str, db: DbDep) -> Response:
    """Parameter importance for the objective (Optuna's PED-ANOVA)."""
    return _json(views.importance(db, study))


@router.get("/api/v1/studies/{study}/figures/slice", response_class=Response, responses=_JSON_DOC)
def slice_(study: str, db: DbDep) -> Response:
    """Objective against each parameter."""
    return _json(views.slice_(db, study))


@router.get("/api/v1/studies/{study}/figures/contour", response_class=Response, responses=_JSON_DOC)
def contour(study: str, db: DbDep, x: str | None = None, y: str | None = None) -> Response:
    """Objective over two parameters (default: the two most important)."""
    try:
        return _json(views.contour(db, study, x=x, y=y))
    except ValueError as exc:
        raise InvalidSpec(str(exc)) from None


#: trials (or studies) one comparison shows at most
MAX_COMPARED = 20


def _numbers(trials: str) -> list[int]:
    parts = [part.strip() for part in trials.split(",") if part.strip()]
    if not all(p.isascii() and p.isdigit() and int(p) <= MAX_INT for p in parts):
        raise InvalidSpec(
            f"trials must be trial numbers separated by commas, like 3,7,12 (got {trials[:80]!r})"
        )
    numbers = list(dict.fromkeys(int(p) for p in parts))
    if not 2 <= len(numbers) <= MAX_COMPARED:
        raise InvalidSpec(
            f"compare needs 2 to {MAX_COMPARED} different trial numbers, like ?trials=3,7 "
            f"(got {len(numbers)})"
        )
    return numbers


@router.get("/api/v1/studies/{study}/figures/compare", response_model=Figure)
def compare_trials(study: str, trials: str, db: DbDep) -> Figure:
    """Two or more trials side by side: parameters (differences flagged) and overlaid curves
    for every metric they all reported. ``?trials=3,7,12``."""
    return views.compare_trials(db, study, _numbers(trials))


@router.get("/api/v1/studies/{study}/trials/{number}/figures", response_model=Figure)
def trial_metrics(study: str, number: TrialNumber, db: DbDep) -> Figure:
    """One figure per metric the trial reported."""
    return views.trial_metrics(db, study, number)


@router.get("/api/v1/figures/compare-studies", response_model=Figure)
def compare_studies(studies: str, db: DbDep) -> Figure:
    """Best so far of several studies on one chart, against trials, epochs or GPU-seconds.
    ``?studies=grid-run,asha-run``."""
    names = list(dict.fromkeys(s.strip() for s in studies.split(",") if s.strip()))
    if not 1 <= len(names) <= MAX_COMPARED:
        raise InvalidSpec(
            f"studies must name 1 to {MAX_COMPARED} studies separated by commas (got {len(names)})"
        )
    return views.compare_studies(db, names)
