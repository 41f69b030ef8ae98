"""Study routes: create, fork, list, read, cancel, delete, best."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from hpo import service
from hpo.access import Action
from hpo.schemas import BestTrial, Page, StudyPublic
from hpo.spec import StudySpec
from hpo.vocabulary import StudyStatus

from ..auth import Creator, Manager, Reader, StudyReader, check_study
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
def create_study(spec: StudySpec, db: DbDep, settings: SettingsDep, caller: Creator) -> StudyPublic:
    """Create a study from its spec; 409 if the name is taken, 422 naming any broken rule.

    Role member or admin; the study records the key that created it (its owner)."""
    return service.create_study(
        db,
        spec=spec,
        workloads=settings.workloads,
        data_dirs=settings.data_dirs,
        created_by=caller.name,
    )


@router.post(
    "/{study}/fork",
    response_model=StudyPublic,
    status_code=status.HTTP_201_CREATED,
    responses=errors(*BODY, 404, 409, 503, why={409: "a study of that name exists"}),
    openapi_extra=body_examples(asha_study=STUDY_EXAMPLE),
)
def fork_study(
    study: str, spec: StudySpec, db: DbDep, settings: SettingsDep, caller: Creator
) -> StudyPublic:
    """Create a study from its spec as a fork of ``study``: it starts with the parent's
    finished trials that fit its space as history (numbered first, not counted against its
    budget). 404 for an unknown parent, 409 if the name is taken, 422 naming any broken rule.

    Role member or admin, who may read the parent; the fork records the key that created it."""
    check_study(db, caller, Action.READ_STUDY, study)
    return service.fork_study(
        db,
        parent=study,
        spec=spec,
        workloads=settings.workloads,
        data_dirs=settings.data_dirs,
        created_by=caller.name,
    )


@router.get("", response_model=Page[StudyPublic], responses=errors(409, 503))
def list_studies(
    db: DbDep,
    caller: StudyReader,
    status: StudyStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> Page[StudyPublic]:
    """Studies, newest first; filter with ``?status=``. A worker key limited to some studies
    sees those only."""
    data, count = service.list_studies(db, status=status, limit=limit, offset=offset)
    if caller.studies is not None:
        data = [s for s in data if caller.covers(s.name)]
        count = len(data)
    return Page(data=data, count=count)


@router.get("/{study}", response_model=StudyPublic, responses=errors(404, 409, 503))
def get_study(study: str, db: DbDep, caller: StudyReader) -> StudyPublic:
    """One study by name or id: spec, status, trial counts by state, best so far."""
    check_study(db, caller, Action.READ_STUDY, study)
    return service.get_study(db, ref=study)


@router.get("/{study}/best", response_model=BestTrial, responses=errors(404, 409, 503))
def best(study: str, db: DbDep, _: Reader) -> BestTrial:
    """The best completed trial: number, objective value and parameters."""
    return service.best_trial(db, ref=study)


@router.post("/{study}/cancel", response_model=StudyPublic, responses=errors(404, 409, 503))
def cancel(study: str, db: DbDep, caller: Manager) -> StudyPublic:
    """Stop handing out trials; running trials end as cancelled and their next report stops them.

    An admin, or the member whose key created the study."""
    return service.cancel_study(db, ref=study, by=caller)


@router.delete(
    "/{study}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=errors(404, 503),
)
def delete(study: str, db: DbDep, caller: Manager) -> Response:
    """Remove the study and everything it recorded. An admin, or the member whose key created
    the study."""
    service.delete_study(db, ref=study, by=caller)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
