"""Plotly figure JSON for the dashboard's views (``Plotly.newPlot(el, fig.data, fig.layout)``)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response

from dashboards import views
from hpo import InvalidSpec
from hpo.access import Action

from ..auth import requires
from ..deps import DbDep, TrialNumber
from ..docs import ComparedTrials, PlotlyFigure, Responses, errors

# every figure is a read: any role but worker
router = APIRouter(tags=["figures"], dependencies=[Depends(requires(Action.READ))])
Figure = dict[str, Any]
# the study views come serialized from the dashboard's cache: documented, not re-validated
_JSON_DOC: Responses = {200: {"model": PlotlyFigure}, **errors(404, 409, 503)}


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
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_LIST = r"^{item}(,{item}){{0,{more}}}$"
#: the query strings, documented and checked alike: what the document accepts, the route does
TRIALS = _LIST.format(item="[0-9]{1,10}", more=MAX_COMPARED - 1)
STUDIES = _LIST.format(item=_NAME, more=MAX_COMPARED - 1)


def _listed(value: str, pattern: str, *, what: str, items: str, like: str) -> list[str]:
    """The items of a comma-separated list that matches ``pattern``, repeats dropped."""
    if not re.fullmatch(pattern, value):
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:76] + "...'"
        raise InvalidSpec(
            f"{what} must be 1 to {MAX_COMPARED} {items} separated by commas, without "
            f"spaces, like {like} (got {value.count(',') + 1} items: {shown})"
        )
    return list(dict.fromkeys(value.split(",")))


@router.get(
    "/api/v1/studies/{study}/figures/compare",
    response_model=None,
    responses={200: {"model": ComparedTrials}, **errors(404, 409, 503)},
)
def compare_trials(
    study: str,
    db: DbDep,
    trials: Annotated[
        str,
        Query(
            description=f"1 to {MAX_COMPARED} trial numbers, like 3,7,12",
            json_schema_extra={"pattern": TRIALS},
        ),
    ],
) -> Figure:
    """Trials side by side: parameters (differences flagged) and overlaid curves for every
    metric they all reported. ``?trials=3,7,12``; a number given twice counts once."""
    numbers = _listed(trials, TRIALS, what="trials", items="trial numbers", like="3,7,12")
    return views.compare_trials(db, study, [int(n) for n in numbers])


@router.get(
    "/api/v1/studies/{study}/trials/{number}/figures",
    response_model=None,
    responses={200: {"model": dict[str, PlotlyFigure]}, **errors(404, 409, 503)},
)
def trial_metrics(study: str, number: TrialNumber, db: DbDep) -> Figure:
    """One figure per metric the trial reported, the objective's first."""
    return views.trial_metrics(db, study, number)


@router.get(
    "/api/v1/figures/compare-studies",
    response_model=None,
    responses={200: {"model": PlotlyFigure}, **errors(404, 409, 503)},
)
def compare_studies(
    studies: Annotated[
        str,
        Query(
            description=f"1 to {MAX_COMPARED} study names or ids, like grid-run,asha-run",
            json_schema_extra={"pattern": STUDIES},
        ),
    ],
    db: DbDep,
) -> Figure:
    """Best so far of several studies on one chart, against trials, epochs or GPU-seconds.
    ``?studies=grid-run,asha-run``; a study named twice counts once."""
    names = _listed(
        studies, STUDIES, what="studies", items="study names or ids", like="grid-run,asha-run"
    )
    return views.compare_studies(db, names)
