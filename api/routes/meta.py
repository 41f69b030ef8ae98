"""Search-space presets and the health check."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

import search_spaces
from hpo import vocabulary
from hpo.schemas import HealthPublic, Page, SearchSpacePublic

from ..auth import Reader
from ..deps import DbDep
from ..docs import RETRY_AFTER_HEADER, errors
from ..errors import RETRY_AFTER_S

router = APIRouter(tags=["meta"])


@router.get(
    "/api/v1/search-spaces",
    response_model=Page[SearchSpacePublic],
    responses=errors(validates=False),
)
def list_search_spaces(_: Reader) -> Page[SearchSpacePublic]:
    """The named presets a study's ``search_space`` may refer to."""
    data = [
        SearchSpacePublic(
            name=n, description=search_spaces.describe(n), parameters=search_spaces.load(n)
        )
        for n in search_spaces.names()
    ]
    return Page(data=data, count=len(data))


@router.get("/api/v1/vocabulary", response_model=dict[str, Any], responses=errors(validates=False))
def vocabulary_words(_: Reader) -> dict[str, Any]:
    """Every trial state, study status, failure kind, algorithm and early-stopping name."""
    return vocabulary.as_json()


@router.get(
    "/healthz",
    response_model=HealthPublic,
    response_model_exclude_none=True,
    responses={
        503: {
            "model": HealthPublic,
            "description": "the database is unreachable (with Retry-After)",
            "headers": RETRY_AFTER_HEADER,
        },
    },
)
def healthz(db: DbDep) -> Any:
    """Liveness and database reachability: 200 when the database answers, else 503."""
    try:
        db.run(lambda session: session.execute(text("SELECT 1")))
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:200]
        return JSONResponse(
            status_code=503,
            content={
                "status": "unavailable",
                "database": db.dialect,
                "detail": f"the database is unreachable ({reason}); retry in {RETRY_AFTER_S} s",
            },
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    return {"status": "ok", "database": db.dialect}
