"""Search-space presets and the health check."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import text

import search_spaces
from hpo.schemas import Page, SearchSpacePublic

from ..deps import DbDep

router = APIRouter(tags=["meta"])


@router.get("/api/v1/search-spaces", response_model=Page[SearchSpacePublic])
def list_search_spaces() -> Page[SearchSpacePublic]:
    """The named presets a study's ``search_space`` may refer to."""
    data = [
        SearchSpacePublic(
            name=n, description=search_spaces.describe(n), parameters=search_spaces.load(n)
        )
        for n in search_spaces.names()
    ]
    return Page(data=data, count=len(data))


@router.get("/healthz")
def healthz(db: DbDep) -> dict[str, Any]:
    """Liveness and database reachability."""
    with db.engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    return {"status": "ok", "database": db.dialect}
