"""Study operations: create, read, list, cancel, delete, best."""

from __future__ import annotations

from collections.abc import Mapping

import optuna
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from .. import algorithms
from .._errors import DuplicateStudy, InvalidSpec, NoCompletedTrial, StudyNotRunning
from ..schemas import BestTrial, StudyPublic
from ..spec import StudySpec
from ..storage import Database, MetricRow, RunRow, StudyRow
from ..workloads import check_study_fits
from ._common import find_study, is_latest_attempt, size_of, spec_of
from ._lifecycle import stop_runs


def create_study(
    db: Database, *, spec: StudySpec, workloads: Mapping[str, str] | None = None
) -> StudyPublic:
    """Create a study from a validated spec; nothing is stored if any rule fails.

    Args:
        workloads: operator-registered workloads (name -> import path) besides the built-in ones.
    """
    problems = algorithms.missing_requirements(spec.algorithm) + check_study_fits(
        spec.workload.name, list(spec.space), spec.objective.metric, dict(workloads or {})
    )
    if problems:
        raise InvalidSpec("; ".join(problems))
    with db.transaction(write=True) as session:
        if session.scalar(select(StudyRow.id).where(StudyRow.name == spec.name)) is not None:
            raise DuplicateStudy(_duplicate_message(spec.name))
        try:
            created = optuna.create_study(
                study_name=spec.name,
                storage=db.optuna_storage,
                direction=spec.objective.direction,
            )
        except optuna.exceptions.DuplicatedStudyError:
            raise DuplicateStudy(_duplicate_message(spec.name)) from None
        try:
            row = StudyRow(
                name=spec.name,
                optuna_study_id=created._study_id,
                spec=spec.model_dump(mode="json"),
                status="running",
                handed_out=0,
            )
            session.add(row)
            session.flush()
        except BaseException:
            optuna.delete_study(study_name=spec.name, storage=db.optuna_storage)
            raise
    return get_study(db, ref=row.id)


def _duplicate_message(name: str) -> str:
    return (
        f"a study named {name!r} already exists; choose another name, or delete the old "
        f"study with DELETE /api/v1/studies/{name}"
    )


def get_study(db: Database, *, ref: str | int) -> StudyPublic:
    with db.transaction() as session:
        row = find_study(session, ref)
        return _public(db, session, row)


def list_studies(
    db: Database, *, status: str | None = None, limit: int = 100, offset: int = 0
) -> tuple[list[StudyPublic], int]:
    """Studies newest first, and how many match in all."""
    with db.transaction() as session:
        query = select(StudyRow)
        if status:
            query = query.where(StudyRow.status == status)
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = session.scalars(query.order_by(StudyRow.id.desc()).limit(limit).offset(offset)).all()
        return [_public(db, session, row) for row in rows], int(total)


def best_trial(db: Database, *, ref: str | int) -> BestTrial:
    with db.transaction() as session:
        row = find_study(session, ref)
        best = _best(db, row)
    if best is None:
        raise NoCompletedTrial(
            f"study {row.name!r} has no completed trial yet; a trial counts once it calls "
            "POST .../complete with the objective metric"
        )
    return best


def cancel_study(db: Database, *, ref: str | int) -> StudyPublic:
    """Stop handing out trials; running trials end as cancelled and are told to stop."""
    with db.transaction(write=True) as session:
        row = find_study(session, ref, lock=True)
        if row.status == "completed":
            raise StudyNotRunning(f"study {row.name!r} already completed; nothing to cancel")
        if row.status == "running":
            stop_runs(
                db,
                session,
                row,
                kind="cancelled",
                reason="the study was cancelled",
                status="cancelled",
            )
    return get_study(db, ref=row.id)


def delete_study(db: Database, *, ref: str | int) -> None:
    """Remove the study, its Optuna trials, its runs and every metric."""
    with db.transaction(write=True) as session:
        row = find_study(session, ref, lock=True)
        try:
            optuna.delete_study(study_name=row.name, storage=db.optuna_storage)
        except KeyError:
            pass  # Optuna's side is already gone; finish removing ours
        session.execute(delete(MetricRow).where(MetricRow.study_id == row.id))
        session.execute(delete(RunRow).where(RunRow.study_id == row.id))
        session.execute(delete(StudyRow).where(StudyRow.id == row.id))


def _best(db: Database, row: StudyRow) -> BestTrial | None:
    try:
        best = db.optuna_storage.get_best_trial(row.optuna_study_id)
    except ValueError:
        return None
    assert best.value is not None
    params = algorithms.clean_params(spec_of(row).space, best.params)
    return BestTrial(number=best.number, value=best.value, params=params)


def trial_counts(session: Session, row: StudyRow) -> dict[str, int]:
    """Trials by state, each trial counted once, by its latest attempt."""
    latest = is_latest_attempt()
    query = (
        select(RunRow.state, func.count())
        .where(RunRow.study_id == row.id, latest)
        .group_by(RunRow.state)
    )
    counts = dict.fromkeys(("pending", "running", "completed", "pruned", "failed", "cancelled"), 0)
    counts.update({state: int(n) for state, n in session.execute(query).all()})
    return counts


def _public(db: Database, session: Session, row: StudyRow) -> StudyPublic:
    spec = spec_of(row)
    return StudyPublic(
        id=row.id,
        name=row.name,
        status=row.status,  # type: ignore[arg-type]
        spec=spec,
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
        size=size_of(spec),
        n_trials=row.handed_out,
        trial_counts=trial_counts(session, row),
        best=_best(db, row),
    )
