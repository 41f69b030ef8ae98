"""The dashboard's HTML pages. Each is a small shell; the browser fetches the JSON."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

import jinja2
import plotly
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

import hpo
from hpo import StudyNotFound, TrialNotFound, service, vocabulary

from ..deps import DbDep
from ..docs import html_errors

router = APIRouter(tags=["dashboard"])
_PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
#: what the dashboard's own files are, said rather than guessed from the system's MIME table
_STATIC_TYPES = {".css": "text/css", ".js": "text/javascript"}
_TEXT: dict[str, object] = {"schema": {"type": "string"}}


@lru_cache(maxsize=1)
def _templates() -> jinja2.Environment:
    folder = resources.files("dashboards").joinpath("templates")
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)), autoescape=True, auto_reload=False
    )


def _page(name: str, status: int = 200, **context: object) -> HTMLResponse:
    html = (
        _templates()
        .get_template(name)
        .render(version=hpo.__version__, vocabulary=vocabulary.as_json(), **context)
    )
    return HTMLResponse(html, status_code=status)


def _not_found(message: str) -> HTMLResponse:
    return _page("404.html", status=404, message=message)


@router.get("/", response_class=HTMLResponse)
def studies_page() -> HTMLResponse:
    return _page("studies.html", title="Studies")


@router.get(
    "/studies/{study}", response_class=HTMLResponse, responses=html_errors(404, 409, 422, 503)
)
def study_page(study: str, db: DbDep, request: Request) -> HTMLResponse:
    try:
        found = service.get_study(db, ref=study)
    except StudyNotFound as exc:
        return _not_found(exc.message)
    return _page("study.html", title=found.name, study=found, base_url=str(request.base_url))


@router.get(
    "/studies/{study}/trials/{number}",
    response_class=HTMLResponse,
    responses=html_errors(404, 409, 422, 503),
)
def trial_page(study: str, number: int, db: DbDep) -> HTMLResponse:
    try:
        found = service.get_study(db, ref=study)
        service.get_trial(db, ref=found.id, number=number)
    except (StudyNotFound, TrialNotFound) as exc:
        return _not_found(exc.message)
    return _page("trial.html", title=f"{found.name} · trial {number}", study=found, number=number)


@router.get(
    "/studies/{study}/compare",
    response_class=HTMLResponse,
    responses=html_errors(404, 409, 422, 503),
)
def compare_trials_page(study: str, db: DbDep, trials: str = "") -> HTMLResponse:
    try:
        found = service.get_study(db, ref=study)
    except StudyNotFound as exc:
        return _not_found(exc.message)
    return _page("compare_trials.html", title=f"{found.name} · compare", study=found, trials=trials)


@router.get("/compare", response_class=HTMLResponse, responses=html_errors(422))
def compare_studies_page(studies: str = "") -> HTMLResponse:
    return _page("compare_studies.html", title="Compare studies", studies=studies)


@router.get(
    "/static/plotly.min.js",
    response_class=Response,
    responses={200: {"content": {"text/javascript": _TEXT}}},
)
def plotly_js() -> Response:
    return FileResponse(
        _PLOTLY_JS, media_type="text/javascript", headers={"Cache-Control": "public, max-age=86400"}
    )


@router.get(
    "/static/{name}",
    response_class=Response,
    responses={
        200: {"content": {media: _TEXT for media in _STATIC_TYPES.values()}},
        **html_errors(404, 422),
    },
)
def static(name: str) -> Response:
    folder = Path(str(resources.files("dashboards").joinpath("static")))
    path = (folder / name).resolve()
    media = _STATIC_TYPES.get(path.suffix)
    if path.parent != folder.resolve() or not path.is_file() or media is None:
        return _not_found(f"no static file {name!r}")
    return FileResponse(path, media_type=media, headers={"Cache-Control": "no-cache"})
