"""Shared helpers of the service layer: finding and locking rows, Optuna handles."""

from __future__ import annotations

import hashlib
from typing import Any

import optuna
from sqlalchemy import select
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.elements import ColumnElement

from .. import algorithms
from .._errors import StudyNotFound, TrialNotFound
from ..budget import study_size
from ..spec import StudySpec
from ..storage import Database, RunRow, StudyRow

optuna.logging.set_verbosity(optuna.logging.WARNING)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def find_study(session: Session, ref: str | int, *, lock: bool = False) -> StudyRow:
    """The study named ``ref``, or with numeric id ``ref``; locked FOR UPDATE with ``lock``."""
    query = select(StudyRow)
    text = str(ref)
    query = (
        query.where(StudyRow.id == int(text))
        if text.isdigit()
        else query.where(StudyRow.name == text)
    )
    if lock:
        query = query.with_for_update()
    row = session.scalars(query).first()
    if row is None:
        raise StudyNotFound(
            f"no study {text!r}; list the studies with GET /api/v1/studies (or `hpo study list`)"
        )
    return row


def latest_run(session: Session, study: StudyRow, number: int, *, lock: bool = False) -> RunRow:
    query = (
        select(RunRow)
        .where(RunRow.study_id == study.id, RunRow.trial_number == number)
        .order_by(RunRow.attempt.desc())
        .limit(1)
    )
    if lock:
        query = query.with_for_update()
    run = session.scalars(query).first()
    if run is None:
        raise TrialNotFound(
            f"study {study.name!r} has no trial {number}; it has handed out "
            f"{study.handed_out} trials, numbered 0 to {study.handed_out - 1}"
            if study.handed_out
            else f"study {study.name!r} has no trial {number}; it has handed out no trial yet"
        )
    return run


def spec_of(study: StudyRow) -> StudySpec:
    return StudySpec.model_validate(study.spec)


def size_of(spec: StudySpec) -> int | None:
    grid = algorithms.grid_size(spec.space) if spec.algorithm.name == "grid" else None
    return study_size(spec, grid)


def load_optuna_study(
    db: Database, study: StudyRow, spec: StudySpec, *, sampler: Any = None
) -> optuna.Study:
    return optuna.load_study(
        study_name=study.name,
        storage=db.optuna_storage,
        sampler=sampler or optuna.samplers.RandomSampler(),
        pruner=algorithms.build_pruner(spec.algorithm, spec.budget),
    )


def is_latest_attempt() -> ColumnElement[bool]:
    """A condition on ``RunRow``: no later attempt of the same trial exists."""
    newer = aliased(RunRow)
    return ~(
        select(newer.id)
        .where(
            newer.study_id == RunRow.study_id,
            newer.trial_number == RunRow.trial_number,
            newer.attempt > RunRow.attempt,
        )
        .exists()
    )


# Optuna's trial states (by name) as the API shows them
OPTUNA_STATE = {
    "RUNNING": "running",
    "WAITING": "running",
    "COMPLETE": "completed",
    "PRUNED": "pruned",
    "FAIL": "failed",
}


def trial_state(optuna_state: str, latest_run_state: str | None) -> str:
    """A trial's state: Optuna's, except where its latest attempt is cancelled or pending."""
    if latest_run_state in ("cancelled", "pending"):
        return latest_run_state
    return OPTUNA_STATE.get(optuna_state, "running")
