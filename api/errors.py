"""The one place where errors become HTTP responses: ``{"detail": "<what and how to fix>"}``.

- an :class:`hpo.HPOError` gets its own status (404, 409, 422, ...);
- a request that breaks the schema gets 422 naming the field;
- a database that cannot be reached (stopped, restarting, a locked SQLite file that stays
  locked) gets 503 with ``Retry-After``: the request did nothing, and may be sent again;
- anything else is a bug of ours: 500, still JSON, and the traceback goes to the log.
"""

from __future__ import annotations

import logging
import time

import optuna
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc

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


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        ctx = next(e for e in errors if e.get("type") == "json_invalid").get("ctx", {})
        detail = (
            f"the request body is not valid JSON ({ctx.get('error', 'parse error')}); "
            "send a JSON object with Content-Type: application/json"
        )
    else:
        detail = format_errors(errors)
    return JSONResponse(status_code=422, content={"detail": detail})


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


def install(app: FastAPI) -> None:
    app.add_exception_handler(HPOError, _hpo_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for error in UNAVAILABLE:
        app.add_exception_handler(error, _database_unreachable)
    app.add_exception_handler(Exception, _internal_error)
