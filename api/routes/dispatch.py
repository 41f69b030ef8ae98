"""Leases: which dispatcher runs which study, when several controllers share a database."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from hpo import service
from hpo.schemas import LINE_PATTERN, LeaseGrant, LeaseRequest, LeasesReleased

from ..auth import DispatcherKey
from ..deps import DbDep
from ..docs import BODY, errors

router = APIRouter(prefix="/api/v1", tags=["dispatch"])
Holder = Annotated[
    str,
    Path(min_length=1, max_length=128, pattern=LINE_PATTERN, description="the dispatcher's name"),
]


@router.post("/leases", response_model=LeaseGrant, responses=errors(*BODY, 503))
def claim_studies(body: LeaseRequest, db: DbDep, caller: DispatcherKey) -> LeaseGrant:
    """A dispatcher claims, or renews, the running studies whose trials it runs.

    Each running study is held by one dispatcher at a time; the others leave it alone until
    the lease runs out (``ttl_seconds`` after its last renewal). Studies are shared out among
    the dispatchers seen within ``ttl_seconds``: each holds at most the running studies
    divided by their number, rounded up. ``studies`` names those this dispatcher can run (a
    worker key limited to some studies claims among those only); ``waiting`` says why a held
    study's trials wait for the Ray cluster, shown with the study (``dispatch.waiting``).
    """
    studies = [name for name in body.studies if caller.covers(name)]
    return service.claim_studies(
        db,
        holder=body.holder,
        studies=studies,
        waiting={k: v for k, v in body.waiting.items() if caller.covers(k)},
        ttl_seconds=body.ttl_seconds,
    )


@router.delete("/leases/{holder}", response_model=LeasesReleased, responses=errors(503))
def release_studies(holder: Holder, db: DbDep, _: DispatcherKey) -> LeasesReleased:
    """A dispatcher that stops gives its studies back, for the others to take at once."""
    return LeasesReleased(holder=holder, released=service.release_studies(db, holder=holder))
