"""Shared helpers of the service layer: finding and locking rows, specs, tokens."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import optuna
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from .. import algorithms
from .._errors import StudyNotFound, StudyUnreadable, TrialNotFound
from ..budget import study_size
from ..spec import StudySpec, format_validation_error
from ..storage import Database, StudyRow, TrialRow
from ..vocabulary import LIVE_TRIAL_STATES, AlgorithmName, TrialState

optuna.logging.set_verbosity(optuna.logging.WARNING)

#: the largest id or trial number our integer columns hold
MAX_INT = 2**31 - 1
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _shown(ref: str | int) -> str:
    text = repr(str(ref))
    return text if len(text) <= 80 else text[:77] + "...'"


def study_not_found(ref: str | int) -> StudyNotFound:
    return StudyNotFound(
        f"no study {_shown(ref)}; list the studies with GET /api/v1/studies (or `hpo study list`)"
    )


def study_key(ref: str | int) -> tuple[bool, str | int] | None:
    """``(True, id)`` for an id in ASCII digits, ``(False, name)`` for a name, or None when no
    study can have that reference (it is checked before it reaches the database)."""
    text = str(ref)
    if text.isascii() and text.isdigit():
        number = int(text)
        return (True, number) if number <= MAX_INT else None
    return (False, text) if _NAME.fullmatch(text) else None


def study_condition(ref: str | int) -> ColumnElement[bool] | None:
    """The condition selecting study ``ref``, or None (see :func:`study_key`)."""
    key = study_key(ref)
    if key is None:
        return None
    by_id, value = key
    return StudyRow.id == value if by_id else StudyRow.name == value


def find_study(session: Session, ref: str | int, *, lock: bool = False) -> StudyRow:
    """The study named ``ref``, or with numeric id ``ref``; locked with ``lock`` (FOR NO KEY
    UPDATE: it does not block readers, nor the foreign keys of new trial rows)."""
    condition = study_condition(ref)
    if condition is None:
        raise study_not_found(ref)
    query = select(StudyRow).where(condition)
    if lock:
        query = query.with_for_update(key_share=True)
    row = session.scalars(query).first()
    if row is None:
        raise study_not_found(ref)
    return row


def check_number(study: StudyRow, number: int) -> None:
    """A trial number that no study can have is refused before it reaches the database."""
    if not 0 <= number <= MAX_INT:
        raise trial_not_found(study, number)


def trial_not_found(study: StudyRow, number: int) -> TrialNotFound:
    total = study.handed_out + (study.inherited or 0)  # a fork's inherited trials come first
    return TrialNotFound(
        f"study {study.name!r} has no trial {number}; it has {total} trials, numbered 0 to "
        f"{total - 1}"
        if total
        else f"study {study.name!r} has no trial {number}; it has handed out no trial yet"
    )


def find_trial(session: Session, study: StudyRow, number: int, *, lock: bool = False) -> TrialRow:
    check_number(study, number)
    query = select(TrialRow).where(TrialRow.study_id == study.id, TrialRow.number == number)
    if lock:
        query = query.with_for_update()
    trial = session.scalars(query).first()
    if trial is None:
        raise trial_not_found(study, number)
    return trial


def spec_of(db: Database, study: StudyRow) -> StudySpec:
    """The study's spec, parsed once per study (a spec never changes)."""

    def parse() -> StudySpec:
        try:
            return StudySpec.model_validate(study.spec)
        except ValidationError as exc:
            raise StudyUnreadable(
                f"study {study.name!r} was created under older rules, and its stored spec "
                f"breaks a current one ({format_validation_error(exc)}); its trials stay in "
                "the database, but this version of hpo cannot run or show it: delete it, or "
                "read it with the version that created it"
            ) from None

    return db.cache.get_or_build(study.id, "spec", None, parse)


def spec_by_id(db: Database, session: Session, study_id: int) -> StudySpec:
    """The spec of study ``study_id`` from the cache, reading the row only on a miss."""
    cached = db.cache.get(study_id, "spec")
    if cached is not None:
        return cached
    study = session.get(StudyRow, study_id)
    if study is None:
        raise StudyNotFound(f"no study with id {study_id}")
    return spec_of(db, study)


def size_of(spec: StudySpec) -> int | None:
    grid = (
        algorithms.feasible_grid_size(spec.space, spec.constraints)
        if algorithms.in_force(spec).name == AlgorithmName.GRID
        else None
    )
    return study_size(spec, grid)


def live_trials(session: Session, study_id: int) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(TrialRow)
            .where(TrialRow.study_id == study_id, TrialRow.state.in_(LIVE_TRIAL_STATES))
        )
        or 0
    )


def trial_counts(session: Session, study_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """Each study's trials by state (every state present, zero or not), in one query."""
    counts = {study_id: dict.fromkeys((str(s) for s in TrialState), 0) for study_id in study_ids}
    if not counts:
        return counts
    rows = session.execute(
        select(TrialRow.study_id, TrialRow.state, func.count())
        .where(TrialRow.study_id.in_(list(counts)))
        .group_by(TrialRow.study_id, TrialRow.state)
    ).all()
    for study_id, state, n in rows:
        counts[study_id][state] = int(n)
    return counts
