"""API keys (admin only) and who the caller is."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, status

from hpo import service
from hpo._errors import KeyInUse
from hpo.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyPublic, Page, WhoAmI, WorkerKeyCreate

from ..auth import Admin, Anyone
from ..deps import DbDep
from ..docs import BODY, errors

router = APIRouter(prefix="/api/v1", tags=["access"])
KeyName = Annotated[str, Path(min_length=1, max_length=64, description="the key's name")]


@router.get("/keys", response_model=Page[ApiKeyPublic], responses=errors(503, validates=False))
def list_keys(db: DbDep, _: Admin) -> Page[ApiKeyPublic]:
    """Every API key, revoked ones too (never the keys themselves, only their first
    characters)."""
    data = service.list_keys(db)
    return Page(data=data, count=len(data))


@router.post(
    "/keys",
    response_model=ApiKeyCreated,
    status_code=status.HTTP_201_CREATED,
    responses=errors(*BODY, 409, 503, why={409: "a key of that name exists (or existed)"}),
)
def create_key(body: ApiKeyCreate, db: DbDep, _: Admin) -> ApiKeyCreated:
    """A new key, returned this once in ``key``: store it now, only its hash is kept."""
    studies = body.studies if isinstance(body, WorkerKeyCreate) else None
    record, key = service.create_key(db, name=body.name, role=body.role, studies=studies)
    return ApiKeyCreated(**record.model_dump(), key=key)


@router.delete("/keys/{name}", response_model=ApiKeyPublic, responses=errors(404, 409, 503))
def revoke_key(name: KeyName, db: DbDep, request: Request, caller: Admin) -> ApiKeyPublic:
    """Revoke a key: it stops working at once on this controller (within seconds on others)
    and its dashboard sessions end. Its name stays taken. Not the key of this very request
    (409): that would lock its admin out; revoke it with another admin key or the CLI."""
    if caller.name == name:
        raise KeyInUse(
            f"key {name!r} is the one this request was made with; revoke it with another admin "
            "key, or with `hpo keys revoke` on the controller's host"
        )
    revoked = service.revoke_key(db, name=name)
    request.app.state.gate.forget()
    return revoked


@router.get("/whoami", response_model=WhoAmI, responses=errors(503, validates=False))
async def whoami(request: Request, caller: Anyone) -> WhoAmI:
    """The key this request was made with and its role (any caller with a valid key)."""
    gate = request.app.state.gate
    return WhoAmI(
        name=caller.name,
        role=caller.role,
        access_control=not await gate.access_control_off(),
    )
