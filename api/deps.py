"""Injected dependencies: the database and settings the app was built with.

They are ``async def`` although they never wait: FastAPI runs a plain ``def`` dependency in
its thread pool, a thread hop per dependency per request, which the trial protocol's calls
(two dependencies each, many times a second) would pay for nothing.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Path, Request

from hpo.settings import Settings
from hpo.storage import Database


async def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_token(authorization: Annotated[str | None, Header()] = None) -> str | None:
    """The trial token from ``Authorization: Bearer <token>``."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


#: the largest trial number, id or offset the database's integer columns hold
MAX_INT = 2**31 - 1
MAX_OFFSET = MAX_INT

DbDep = Annotated[Database, Depends(get_db)]
TrialNumber = Annotated[int, Path(ge=0, le=MAX_INT, description="the trial's number")]
SettingsDep = Annotated[Settings, Depends(get_settings)]
TokenDep = Annotated[str | None, Depends(get_token)]
