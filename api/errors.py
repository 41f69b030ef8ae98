"""The one place where errors become HTTP responses: ``{"detail": "<what and how to fix>"}``.

- an :class:`hpo.HPOError` gets its own status (404, 409, 422, ...);
- a request that breaks the schema gets 422 naming the field, and a body that is not JSON 415;
- a path that does not exist gets 404, a method the path does not take 405 with an ``Allow``
  header listing every method the path takes (``OPTIONS`` gets that list with 204);
- a database that cannot be reached (stopped, restarting, a locked SQLite file that stays
  locked) gets 503 with ``Retry-After``: the request did nothing, and may be sent again;
- anything else is a bug of ours: 500, still JSON, and the traceback goes to the log.
"""

from __future__ import annotations

import logging
import re
import time

import optuna
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException

from hpo import HPOError
from hpo.spec import format_errors

from .headers import SECURITY_HEADERS

log = logging.getLogger("hpo.api")

#: seconds a client is told to wait before retrying while the database is unreachable
RETRY_AFTER_S = 5
#: what "the database cannot be reached" looks like from SQLAlchemy and Optuna
UNAVAILABLE: tuple[type[Exception], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,
    optuna.exceptions.StorageInternalError,
)


def unavailable(what: str = "the request") -> JSONResponse:
    return JSONResponse(
        status_code=503,
        content={
            "detail": f"the database is unreachable, so {what} could not be served and "
            f"nothing was changed; retry in {RETRY_AFTER_S} s (the controller reconnects "
            "by itself once the database is back)"
        },
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


async def _hpo_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HPOError)
    return JSONResponse(status_code=exc.status_code, content={"detail": exc.message})


def _unparsed_body(errors: list[dict]) -> bool:
    """Whether the body failed because it was not read as JSON at all: FastAPI hands the raw
    bytes of a body without a JSON Content-Type to validation."""
    return any(
        tuple(e.get("loc", ())) == ("body",) and isinstance(e.get("input"), bytes) for e in errors
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if _unparsed_body(errors):
        sent = request.headers.get("content-type")
        return JSONResponse(
            status_code=415,
            content={
                "detail": f"the body must be JSON, but its Content-Type is "
                f"{_printable(sent) if sent else 'missing'}; send it with "
                "Content-Type: application/json"
            },
        )
    if any(e.get("type") == "json_invalid" for e in errors):
        ctx = next(e for e in errors if e.get("type") == "json_invalid").get("ctx", {})
        detail = (
            f"the request body is not valid JSON ({ctx.get('error', 'parse error')}); "
            "send a JSON object with Content-Type: application/json"
        )
    else:
        detail = format_errors(errors)
    return JSONResponse(status_code=422, content={"detail": detail})


def _printable(text: str, limit: int = 80) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"


def allowed_methods(request: Request, *, fallback: str = "") -> str:
    """Every method the API document lists for this request's path, for ``Allow``.

    Starlette answers 405 with the methods of the first route on the path only (GET of
    ``/api/v1/studies/{study}``, not its DELETE); the document lists them all. A path the
    document leaves out (``/docs``) keeps Starlette's ``fallback``.
    """
    path = request.scope.get("path", "")
    methods: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        if re.fullmatch(_template_regex(template), path):
            methods |= {m.upper() for m in operations if m.upper() in _METHODS}
    if not methods:
        methods = {m.strip() for m in fallback.split(",") if m.strip()}
    return ", ".join(sorted(methods | {"OPTIONS"}))


_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"}


def _template_regex(template: str) -> str:
    # a path parameter is one segment, as Starlette's default convertor matches it
    parts = re.split(r"\{[^}]*\}", template)
    return "[^/]+".join(re.escape(part) for part in parts)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own answers (no route, wrong method, a body it could not read) in our
    error shape, each saying what to do instead."""
    assert isinstance(exc, HTTPException)
    path = _printable(request.url.path)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        allow = allowed_methods(request, fallback=headers.get("Allow", ""))
        headers["Allow"] = allow
        if request.method == "OPTIONS":
            return Response(status_code=204, headers=headers)
        detail = f"{request.method} is not allowed on {path}; it takes {allow}"
    elif exc.status_code == 404 and exc.detail == "Not Found":
        detail = f"no such path {path}; the API's paths are listed at /docs and /openapi.json"
    elif exc.status_code == 400 and exc.detail == "There was an error parsing the body":
        detail = (
            "the body could not be read (JSON must be UTF-8 text); send a JSON object with "
            "Content-Type: application/json"
        )
    else:
        detail = str(exc.detail)
    return JSONResponse(status_code=exc.status_code, content={"detail": detail}, headers=headers)


class _OncePer:
    """Says a thing at most once per ``seconds`` (an outage fails every request alike)."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.last = seconds, -seconds

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.last < self.seconds:
            return False
        self.last = now
        return True


_outage_note = _OncePer(30.0)


async def _database_unreachable(request: Request, exc: Exception) -> JSONResponse:
    if _outage_note.due():
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        log.warning("database unreachable; answering 503 until it is back (%s)", reason)
    return unavailable(f"{request.method} {request.url.path}")


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, UNAVAILABLE):
        return await _database_unreachable(request, exc)
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        status_code=500,
        content={
            "detail": f"internal error ({type(exc).__name__}) while serving "
            f"{request.method} {request.url.path}; this is a bug in hpo, and the "
            "controller's log has the details"
        },
        headers=SECURITY_HEADERS,  # sent from outside every middleware
    )


class Answer(Exception):
    """Raised by a dependency that already holds the whole answer (a dashboard page's redirect
    to the sign-in page), which is then sent as it is."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


async def _answer(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, Answer)
    return exc.response


def install(app: FastAPI) -> None:
    app.add_exception_handler(Answer, _answer)
    app.add_exception_handler(HPOError, _hpo_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    for error in UNAVAILABLE:
        app.add_exception_handler(error, _database_unreachable)
    app.add_exception_handler(Exception, _internal_error)
