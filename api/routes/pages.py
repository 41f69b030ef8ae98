"""The dashboard's HTML pages. Each is a small shell; the browser fetches the JSON."""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qs, quote

import jinja2
import plotly
from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

import hpo
from hpo import StudyNotFound, TrialNotFound, Unauthorized, service, vocabulary
from hpo.access import Action, role_may

from ..auth import (
    SESSION_COOKIE,
    Caller,
    check_form_csrf,
    resolve,
    resolve_session_only,
    same_origin,
)
from ..deps import DbDep
from ..docs import html_errors
from ..errors import Answer
from ..headers import WEBGL_PAGE_POLICY

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


def _page(
    name: str,
    caller: Caller | None = None,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **context: object,
) -> HTMLResponse:
    html = (
        _templates()
        .get_template(name)
        .render(
            version=hpo.__version__,
            vocabulary=vocabulary.as_json(),
            caller=caller,
            csrf=caller.csrf if caller else None,
            **context,
        )
    )
    # a page shows one caller's view: never kept by a shared cache
    return HTMLResponse(
        html, status_code=status, headers={"Cache-Control": "no-store", **(headers or {})}
    )


def _not_found(message: str, caller: Caller | None = None) -> HTMLResponse:
    return _page("404.html", caller, status=404, message=message)


async def page_caller(request: Request) -> Caller:
    """The signed-in caller of a page; one who is not is sent to the sign-in page (no key, no
    session), a worker key gets a 403 page."""
    try:
        caller = await resolve(request)
    except Unauthorized:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise Answer(RedirectResponse(f"/signin?next={quote(target)}", status_code=303)) from None
    if not role_may(caller.principal.role, Action.READ):
        raise Answer(
            _page(
                "404.html",
                caller,
                status=403,
                title="Forbidden",
                message=f"{caller.principal.label} has role {caller.principal.role}, which may not "
                "read the dashboard",
            )
        )
    return caller


PageCaller = Annotated[Caller, Depends(page_caller)]


@router.get("/", response_class=HTMLResponse, responses=html_errors())
def studies_page(caller: PageCaller) -> Response:
    return _page("studies.html", caller, title="Studies")


@router.get(
    "/studies/{study}", response_class=HTMLResponse, responses=html_errors(404, 409, 422, 503)
)
def study_page(study: str, db: DbDep, request: Request, caller: PageCaller) -> Response:
    try:
        found = service.get_study(db, ref=study)
    except StudyNotFound as exc:
        return _not_found(exc.message, caller)
    return _page(
        "study.html",
        caller,
        # the parallel coordinates are drawn with WebGL, whose regl needs eval (api/headers.py)
        headers={"Content-Security-Policy": WEBGL_PAGE_POLICY},
        title=found.name,
        study=found,
        base_url=str(request.base_url),
    )


@router.get(
    "/studies/{study}/trials/{number}",
    response_class=HTMLResponse,
    responses=html_errors(404, 409, 422, 503),
)
def trial_page(study: str, number: int, db: DbDep, caller: PageCaller) -> Response:
    try:
        found = service.get_study(db, ref=study)
        service.get_trial(db, ref=found.id, number=number)
    except (StudyNotFound, TrialNotFound) as exc:
        return _not_found(exc.message, caller)
    return _page(
        "trial.html", caller, title=f"{found.name} · trial {number}", study=found, number=number
    )


@router.get(
    "/studies/{study}/compare",
    response_class=HTMLResponse,
    responses=html_errors(404, 409, 422, 503),
)
def compare_trials_page(study: str, db: DbDep, caller: PageCaller, trials: str = "") -> Response:
    try:
        found = service.get_study(db, ref=study)
    except StudyNotFound as exc:
        return _not_found(exc.message, caller)
    return _page(
        "compare_trials.html", caller, title=f"{found.name} · compare", study=found, trials=trials
    )


@router.get("/compare", response_class=HTMLResponse, responses=html_errors(422))
def compare_studies_page(caller: PageCaller, studies: str = "") -> Response:
    return _page("compare_studies.html", caller, title="Compare studies", studies=studies)


def _local(target: str) -> str:
    """``next`` only ever leads to a page of this site (no ``//host`` or ``https:``)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


@router.get("/signin", response_class=HTMLResponse, include_in_schema=False)
async def signin_page(request: Request, next: str = "/") -> Response:
    return _signin(request, _local(next))


def _signin(request: Request, target: str, error: str | None = None, status: int = 200) -> Response:
    return _page(
        "signin.html",
        None,
        status=status,
        title="Sign in",
        next=target,
        error=error,
        https=request.url.scheme == "https",
    )


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form of at most 8 KiB (the sign-in and sign-out forms)."""
    body = await request.body()
    if len(body) > 8192:
        return {}
    fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=8)
    return {k: v[0] for k, v in fields.items() if v}


@router.post("/signin", include_in_schema=False)
async def signin(request: Request) -> Response:
    """Sign in with an API key: a session cookie (HttpOnly, SameSite=Strict, Secure behind
    HTTPS) that the dashboard's pages and their API calls carry."""
    if not same_origin(request):
        return _signin(request, "/", "Sign in from this dashboard's own page.", 403)
    form = await _form(request)
    target = _local(form.get("next", "/"))
    gate = request.app.state.gate
    key = form.get("key", "").strip()
    principal = await gate.by_key(key) if key else None
    if principal is None or principal.key_id is None:
        return _signin(request, target, "That key is not valid: unknown or revoked.", 401)
    if not role_may(principal.role, Action.READ):
        return _signin(
            request, target, f"A {principal.role} key cannot sign in to the dashboard.", 403
        )
    settings = request.app.state.settings
    lifetime = timedelta(hours=settings.session_hours)
    token, _ = await run_in_threadpool(
        service.create_session, gate.db, key_id=principal.key_id, lifetime=lifetime
    )
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(lifetime.total_seconds()),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.post("/signout", include_in_schema=False)
async def signout(request: Request) -> Response:
    """End this browser's session (the form carries the CSRF token)."""
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        form = await _form(request)
        caller = await resolve_session_only(request)
        if caller is not None:
            check_form_csrf(request, caller, form.get("csrf"))
            await run_in_threadpool(service.end_session, request.app.state.gate.db, token=token)
            request.app.state.gate.forget()
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


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
