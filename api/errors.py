"""The one place where errors become HTTP responses: ``{"detail": "<what and how to fix>"}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from hpo import HPOError
from hpo.spec import format_errors

log = logging.getLogger("hpo.api")


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


def install(app: FastAPI) -> None:
    app.add_exception_handler(HPOError, _hpo_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
