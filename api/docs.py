"""What the OpenAPI document says that a route's signature cannot: its error answers, and the
shape of bodies a route builds itself (figures, pages).

Every route lists the error statuses it can answer with :func:`errors`; each comes with the one
error body, :class:`hpo.schemas.ErrorPublic`. The API key's refusals (401, 403) are added to
every route here, in one place (:data:`AUTH`), so that the check which answers them and the
document that announces them change together.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hpo.schemas import ErrorPublic

__all__ = [
    "AUTH",
    "BODY",
    "HTML",
    "RETRY_AFTER_HEADER",
    "ComparedTrials",
    "PlotlyFigure",
    "Responses",
    "STUDY_EXAMPLE",
    "body_examples",
    "errors",
    "html_errors",
]

Responses = dict[int | str, dict[str, Any]]

#: what each error status means, wherever it is answered
WHY: dict[int, str] = {
    400: "the body could not be read: JSON must be UTF-8 text",
    401: "no API key, or a trial protocol call without its trial token",
    403: "the API key may not do this, or the trial token is not this trial's",
    404: "no such study or trial (the detail says which, and where to list them)",
    409: "the request conflicts with the study's or trial's state (the detail says which)",
    413: "the request body is larger than the controller accepts",
    415: "the body is not JSON; send Content-Type: application/json",
    422: "a parameter or a field of the body breaks a rule; the detail names it and the rule",
    503: "the database is unreachable: nothing was changed; retry after Retry-After seconds",
}

#: the API key's refusals, on every API route (the trial protocol's token answers them too)
AUTH: tuple[int, ...] = (401, 403)
#: answered by every route that takes a body, before the route runs
BODY: tuple[int, ...] = (400, 413, 415)

#: the header a 503 carries
RETRY_AFTER_HEADER = {
    "Retry-After": {
        "description": "seconds to wait before sending the request again",
        "schema": {"type": "integer"},
    }
}


def errors(
    *statuses: int, auth: bool = True, validates: bool = True, why: dict[int, str] | None = None
) -> Responses:
    """The error answers of one route, each with :class:`ErrorPublic` as its body.

    Args:
        statuses: what this route answers besides success.
        auth: add the API key's refusals (:data:`AUTH`).
        validates: add 422, for a route with parameters or a body (FastAPI would otherwise
            document its own 422 body, which is not the one sent).
        why: a description for a status, where the general one (:data:`WHY`) says too little.
    """
    wanted = {*statuses, *((422,) if validates else ()), *(AUTH if auth else ())}
    return {
        status: {"model": ErrorPublic, **_described(status, (why or {}).get(status))}
        for status in sorted(wanted)
    }


def html_errors(*statuses: int) -> Responses:
    """A dashboard page's error answers: 404 is a page of its own, the others are JSON errors
    (said outright: on an HTML route FastAPI would label a model's body text/html)."""
    json_error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorPublic"}}}
    responses: Responses = {
        status: {"content": json_error, **_described(status)}
        for status in sorted(statuses)
        if status != 404
    }
    if 404 in statuses:
        responses[404] = {"description": "not found: a page that says what", "content": HTML}
    responses[303] = {
        "description": "not signed in (and access control on): to the sign-in page",
        "headers": {
            "Location": {"description": "/signin?next=<this page>", "schema": {"type": "string"}}
        },
    }
    responses[403] = {
        "description": "a worker key, which may not read the dashboard",
        "content": HTML,
    }
    return responses


def _described(status: int, why: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"description": why or WHY[status]}
    if status == 503:
        doc["headers"] = RETRY_AFTER_HEADER
    return doc


def body_examples(**examples: dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` for a route whose JSON body has these examples (each one valid)."""
    named = {name: {"summary": name.replace("_", " "), "value": v} for name, v in examples.items()}
    return {"requestBody": {"content": {"application/json": {"examples": named}}}}


#: a study a worker outside hpo runs (workload ``external``): what ``POST /api/v1/studies``
#: takes, in a form that is valid as it stands
STUDY_EXAMPLE: dict[str, Any] = {
    "name": "bert-finetune",
    "objective": {"metric": "val_accuracy", "direction": "maximize"},
    "search_space": {
        "learning_rate": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
        "batch_size": {"type": "categorical", "choices": [16, 32, 64]},
        "warmup_steps": {"type": "int", "low": 0, "high": 1000, "step": 100},
    },
    "algorithm": {"name": "asha", "seed": 7},
    "budget": {"max_trials": 40, "max_epochs": 9, "parallelism": 4},
}


#: an HTML page as the body
HTML: dict[str, Any] = {"text/html": {"schema": {"type": "string"}}}


class PlotlyFigure(BaseModel):
    """A Plotly figure, drawn with ``Plotly.newPlot(el, figure.data, figure.layout)``."""

    model_config = ConfigDict(extra="allow")

    data: list[dict[str, Any]] = Field(description="the traces")
    layout: dict[str, Any]
    meta: dict[str, Any] | None = Field(
        default=None,
        description="what the view chose: curves says how many trials it shows of how many "
        "(shown, total), contour which parameters it draws (x, y) of which (params)",
    )


class ComparedParam(BaseModel):
    name: str
    values: list[Any] = Field(description="the parameter's value in each trial, in order")
    differs: bool = Field(description="whether the trials' values differ")


class ComparedTrials(BaseModel):
    """Trials side by side: their parameters, and one overlaid figure per shared metric."""

    params: list[ComparedParam]
    figures: dict[str, PlotlyFigure] = Field(description="per metric, the trials' curves overlaid")
