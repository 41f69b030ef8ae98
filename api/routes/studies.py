"""Study routes: create, list, read, cancel, delete, best."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from hpo import service
from hpo.schemas import BestTrial, Page, StudyPublic
from hpo.spec import StudySpec
from hpo.vocabulary import StudyStatus

from ..deps import MAX_OFFSET, DbDep, SettingsDep
from ..docs import BODY, STUDY_EXAMPLE, body_examples, errors

router = APIRouter(prefix="/api/v1/studies", tags=["studies"])


@router.post(
    "",
    response_model=StudyPublic,
    status_code=status.HTTP_201_CREATED,
    responses=errors(*BODY, 409, 503, why={409: "a study of that name exists"}),
    openapi_extra=body_examples(asha_study=STUDY_EXAMPLE),
)
def create_study(spec: StudySpec, db: DbDep, settings: SettingsDep) -> StudyPublic:
    """Create a study from its spec; 409 if the name is taken, 422 naming any broken rule."""
    return service.create_study(db, spec=spec, workloads=settings.workloads)


@router.get("", response_model=Page[StudyPublic], responses=errors(409, 503))
def list_studies(
    db: DbDep,
    status: StudyStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> Page[StudyPublic]:
    """Studies, newest first; filter with ``?status=``."""
    data, count = service.list_studies(db, status=status, limit=limit, offset=offset)
    return Page(data=data, count=count)


@router.get("/{study}", response_model=StudyPublic, responses=errors(404, 409, 503))
def get_study(study: str, db: DbDep) -> StudyPublic:
    """One study by name or id: spec, status, trial counts by state, best so far."""
    return service.get_study(db, ref=study)


@router.get("/{study}/best", response_model=BestTrial, responses=errors(404, 409, 503))
def best(study: str, db: DbDep) -> BestTrial:
    """The best completed trial: number, objective value and parameters."""
    return service.best_trial(db, ref=study)


@router.post("/{study}/cancel", response_model=StudyPublic, responses=errors(404, 409, 503))
def cancel(study: str, db: DbDep) -> StudyPublic:
    """Stop handing out trials; running trials end as cancelled and their next report stops them."""
    return service.cancel_study(db, ref=study)


@router.delete(
    "/{study}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=errors(404, 503),
)
def delete(study: str, db: DbDep) -> Response:
    """Remove the study and everything it recorded."""
    service.delete_study(db, ref=study)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
