"""Trial routes: reads, and the trial protocol (ask, report, complete, fail)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Query, status

from hpo import service
from hpo.access import Action
from hpo.schemas import (
    AskIn,
    CompleteIn,
    FailIn,
    HeartbeatIn,
    Page,
    ReportIn,
    ReportOut,
    TrialAssignment,
    TrialDetail,
    TrialPublic,
)
from hpo.vocabulary import TrialState

from ..auth import Reader, Runner, check_study
from ..deps import MAX_OFFSET, DbDep, TokenDep, TrialNumber
from ..docs import BODY, errors

router = APIRouter(prefix="/api/v1/studies/{study}/trials", tags=["trials"])
#: a protocol call on one trial: its token is wrong (401, 403), the trial or its study is
#: gone (404), or the trial has ended or the report is out of order (409)
_PROTOCOL = errors(*BODY, 404, 409, 503)


@router.get("", response_model=Page[TrialPublic], responses=errors(404, 409, 503))
def list_trials(
    study: str,
    db: DbDep,
    _: Reader,
    state: TrialState | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    sort: Literal["number", "value", "state", "last_step"] = "number",
    order: Literal["asc", "desc"] = "asc",
) -> Page[TrialPublic]:
    """Trials; filter with ``?state=``, sort with ``?sort=value&order=desc``, page with
    ``?limit=&offset=``."""
    data, count = service.list_trials(
        db,
        ref=study,
        state=state,
        limit=limit,
        offset=offset,
        sort=sort,
        descending=order == "desc",
    )
    return Page(data=data, count=count)


@router.get("/{number}", response_model=TrialDetail, responses=errors(404, 409, 503))
def get_trial(study: str, number: TrialNumber, db: DbDep, _: Reader) -> TrialDetail:
    """One trial: parameters, state, value, every metric per step, and its run records."""
    return service.get_trial(db, ref=study, number=number)


@router.post(
    "",
    response_model=TrialAssignment,
    status_code=status.HTTP_201_CREATED,
    responses=errors(*BODY, 404, 409, 503),
)
def ask(
    study: str, db: DbDep, caller: Runner, body: Annotated[AskIn | None, Body()] = None
) -> TrialAssignment:
    """Hand out the next trial: its number, parameters and the token its reports must carry.

    409 when the budget or the grid is used up, or the study no longer runs. Role worker
    (for the studies its key may run), admin, or the member that created the study.
    """
    check_study(db, caller, Action.PROTOCOL, study)
    return service.ask(db, ref=study, worker=body.worker if body else None)


@router.post("/{number}/reports", response_model=ReportOut, responses=_PROTOCOL)
def report(
    study: str, number: TrialNumber, body: ReportIn, db: DbDep, token: TokenDep, caller: Runner
) -> ReportOut:
    """Record one step's metrics (header ``Authorization: Bearer <token>``).

    The answer says whether the trial should stop now (early stopping, or a cancelled study).
    """
    check_study(db, caller, Action.PROTOCOL, study)
    stop = service.report(
        db, ref=study, number=number, token=token, step=body.step, metrics=body.metrics
    )
    return ReportOut(should_stop=stop)


@router.post("/{number}/heartbeat", response_model=ReportOut, responses=_PROTOCOL)
def heartbeat(
    study: str,
    number: TrialNumber,
    db: DbDep,
    token: TokenDep,
    caller: Runner,
    body: Annotated[HeartbeatIn | None, Body()] = None,
) -> ReportOut:
    """A worker says it is alive, and where it runs (``worker``, ``gpus``).

    Send one at least every ``heartbeat_timeout / 3`` seconds between reports; a run silent for
    longer than ``HPO_HEARTBEAT_TIMEOUT`` is retried elsewhere. The answer says whether to stop.
    """
    check_study(db, caller, Action.PROTOCOL, study)
    body = body or HeartbeatIn()
    stop = service.heartbeat(
        db, ref=study, number=number, token=token, worker=body.worker, gpus=body.gpus
    )
    return ReportOut(should_stop=stop)


@router.post("/{number}/complete", response_model=TrialDetail, responses=_PROTOCOL)
def complete(
    study: str, number: TrialNumber, body: CompleteIn, db: DbDep, token: TokenDep, caller: Runner
) -> TrialPublic:
    """Finish the trial; its objective value is ``metrics[objective.metric]``."""
    check_study(db, caller, Action.PROTOCOL, study)
    return service.complete(db, ref=study, number=number, token=token, metrics=body.metrics)


@router.post("/{number}/fail", response_model=TrialDetail, responses=_PROTOCOL)
def fail(
    study: str, number: TrialNumber, body: FailIn, db: DbDep, token: TokenDep, caller: Runner
) -> TrialPublic:
    """Finish the trial as failed with a reason; the study goes on."""
    check_study(db, caller, Action.PROTOCOL, study)
    return service.fail(
        db, ref=study, number=number, token=token, reason=body.reason, kind=body.kind
    )
