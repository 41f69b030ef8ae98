"""Study operations: create, read, list, cancel, delete, best."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .. import access, algorithms
from .._errors import DuplicateStudy, InvalidSpec, NoCompletedTrial, StudyNotRunning
from ..access import Action, Principal
from ..budget import compute_limits, decide_compute
from ..data_roots import path_problems
from ..schemas import AlgorithmChoice, BestTrial, BudgetUsed, StudyPublic
from ..spec import StudySpec
from ..storage import (
    Database,
    MetricRow,
    OptunaStudyRow,
    OptunaTombstone,
    RungRow,
    RunRow,
    StudyRow,
    TrialRow,
    utcnow,
)
from ..vocabulary import AlgorithmName, FailureKind, StudyStatus, TrialState
from ..workloads import check_study_fits
from ._common import find_study, size_of, spec_of, trial_counts
from ._dispatch import dispatch_of
from ._fork_reads import lineages
from ._lifecycle import note, stop_trials, transact
from ._usage import compute_usage


def create_study(
    db: Database,
    *,
    spec: StudySpec,
    workloads: Mapping[str, str] | None = None,
    created_by: str | None = None,
    data_dirs: Sequence[str] = (),
) -> StudyPublic:
    """Create a study from a validated spec; nothing is stored if any rule fails.

    Args:
        workloads: operator-registered workloads (name -> import path) besides the built-in ones.
        created_by: the name of the API key creating it (its owner).
        data_dirs: the directories a workload option that names a file must lie in (none: no
            option may name a file).
    """
    check_creatable(db, spec=spec, workloads=workloads, data_dirs=data_dirs)

    def create(session: Session) -> int:
        return insert_study(session, spec=spec, created_by=created_by).id

    try:
        study_id = transact(db, create, write=True)
    except IntegrityError:  # a concurrent create took the name between our check and insert
        raise DuplicateStudy(duplicate_message(spec.name)) from None
    return get_study(db, ref=study_id)


def check_creatable(
    db: Database,
    *,
    spec: StudySpec,
    workloads: Mapping[str, str] | None,
    data_dirs: Sequence[str],
) -> None:
    """Raise for any rule a new study's spec breaks beyond its own validation."""
    problems = (
        algorithms.missing_requirements(algorithms.in_force(spec))
        + check_study_fits(
            spec.workload.name, list(spec.space), spec.objective.metric, dict(workloads or {})
        )
        + path_problems(spec.workload.name, spec.workload.options, data_dirs)
    )
    if problems:
        raise InvalidSpec("; ".join(problems))
    if _taken_in_optuna(db, spec.name):
        raise DuplicateStudy(
            f"a study named {spec.name!r} already exists in Optuna's tables of this database "
            "(created with Optuna, not hpo); choose another name"
        )


def insert_study(
    session: Session,
    *,
    spec: StudySpec,
    created_by: str | None,
    parent_id: int | None = None,
    inherited: int = 0,
) -> StudyRow:
    """Write a new running study's row (and its mirror's), refusing a taken name."""
    if session.scalar(select(StudyRow.id).where(StudyRow.name == spec.name)) is not None:
        raise DuplicateStudy(duplicate_message(spec.name))
    now = utcnow()
    row = StudyRow(
        name=spec.name,
        spec=spec.model_dump(mode="json"),
        status=StudyStatus.RUNNING,
        handed_out=0,
        size=size_of(spec),
        version=1,
        created_at=now,
        updated_at=now,
        created_by=created_by,
        parent_id=parent_id,
        inherited=inherited,
    )
    session.add(row)
    session.flush()
    session.add(OptunaStudyRow(study_id=row.id, optuna_study_id=None))
    note(session, logging.INFO, "study %s created (%s)", spec.name, spec.algorithm.name)
    return row


def _taken_in_optuna(db: Database, name: str) -> bool:
    """Whether Optuna's tables hold a study of that name that is not one of our mirrors."""
    storage = db.optuna_storage
    try:
        optuna_id = storage.get_study_id_from_name(name)
    except KeyError:
        return False
    return "hpo_study_id" not in storage.get_study_system_attrs(optuna_id)


def duplicate_message(name: str) -> str:
    return (
        f"a study named {name!r} already exists; choose another name, or delete the old "
        f"study with DELETE /api/v1/studies/{name}"
    )


def get_study(db: Database, *, ref: str | int) -> StudyPublic:
    return transact(db, lambda s: _publics(db, s, [find_study(s, ref)])[0])


def list_studies(
    db: Database, *, status: str | None = None, limit: int = 100, offset: int = 0
) -> tuple[list[StudyPublic], int]:
    """Studies newest first, and how many match in all."""

    def read(session: Session) -> tuple[list[StudyPublic], int]:
        query = select(StudyRow)
        if status:
            query = query.where(StudyRow.status == status)
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = session.scalars(query.order_by(StudyRow.id.desc()).limit(limit).offset(offset)).all()
        return _publics(db, session, rows), int(total)

    return transact(db, read)


def best_trial(db: Database, *, ref: str | int) -> BestTrial:
    def read(session: Session) -> tuple[StudyRow, BestTrial | None]:
        row = find_study(session, ref)
        return row, _bests(db, session, [row]).get(row.id)

    row, best = transact(db, read)
    if best is None:
        raise NoCompletedTrial(
            f"study {row.name!r} has no completed trial yet; a trial counts once it calls "
            "POST .../complete with the objective metric"
        )
    return best


def cancel_study(db: Database, *, ref: str | int, by: Principal | None = None) -> StudyPublic:
    """Stop handing out trials; running trials end as cancelled and are told to stop.

    Args:
        by: the caller, checked against the study's owner (``None``: no check).
    """

    def cancel(session: Session) -> int:
        row = find_study(session, ref, lock=True)
        if by is not None:
            access.check(by, Action.MANAGE, study=row.name, owner=row.created_by)
        if row.status == StudyStatus.COMPLETED:
            raise StudyNotRunning(f"study {row.name!r} already completed; nothing to cancel")
        if row.status == StudyStatus.RUNNING:
            stop_trials(
                session,
                row,
                kind=FailureKind.CANCELLED,
                reason="the study was cancelled",
                status=StudyStatus.CANCELLED,
                now=utcnow(),
            )
            note(session, logging.INFO, "study %s cancelled", row.name)
        return row.id

    return get_study(db, ref=transact(db, cancel, write=True))


def delete_study(db: Database, *, ref: str | int, by: Principal | None = None) -> None:
    """Remove the study, its trials, runs and metrics; its Optuna mirror follows.

    Args:
        by: the caller, checked against the study's owner (``None``: no check).
    """

    def remove(session: Session) -> int:
        row = find_study(session, ref, lock=True)
        if by is not None:
            access.check(by, Action.MANAGE, study=row.name, owner=row.created_by)
        session.add(OptunaTombstone(study_id=row.id, name=row.name, created_at=utcnow()))
        session.execute(  # SQLite may run without foreign keys: ON DELETE SET NULL by hand
            update(StudyRow).where(StudyRow.parent_id == row.id).values(parent_id=None)
        )
        for table in (RungRow, MetricRow, RunRow, TrialRow, OptunaStudyRow):
            session.execute(delete(table).where(table.study_id == row.id))
        session.execute(delete(StudyRow).where(StudyRow.id == row.id))
        note(session, logging.INFO, "study %s deleted", row.name)
        return row.id

    study_id = transact(db, remove, write=True)
    db.cache.drop(study_id)


def _bests(db: Database, session: Session, rows: Sequence[StudyRow]) -> dict[int, BestTrial]:
    """Each study's best completed trial (ties: the lowest number), by study id, for the
    studies that have one: one query per direction, whatever the number of studies."""
    by_direction: dict[bool, list[int]] = {True: [], False: []}
    for row in rows:
        by_direction[spec_of(db, row).objective.direction == "maximize"].append(row.id)
    bests: dict[int, BestTrial] = {}
    for maximize, ids in by_direction.items():
        if not ids:
            continue
        rank = (
            func.row_number()
            .over(
                partition_by=TrialRow.study_id,
                order_by=(
                    TrialRow.value.desc() if maximize else TrialRow.value.asc(),
                    TrialRow.number,
                ),
            )
            .label("rank")
        )
        ranked = (
            select(TrialRow.study_id, TrialRow.number, TrialRow.value, TrialRow.params, rank)
            .where(TrialRow.study_id.in_(ids), TrialRow.state == TrialState.COMPLETED)
            .subquery()
        )
        for best in session.execute(select(ranked).where(ranked.c.rank == 1)):
            if best.value is not None:
                bests[best.study_id] = BestTrial(
                    number=best.number, value=best.value, params=best.params
                )
    return bests


def _publics(db: Database, session: Session, rows: Sequence[StudyRow]) -> list[StudyPublic]:
    """The public records of ``rows``: what every study needs is read for all of them at once
    (a few queries in all, not a few per study), except its budget's use."""
    ids = [row.id for row in rows]
    counts = trial_counts(session, ids)
    bests = _bests(db, session, rows)
    dispatch = dispatch_of(session, ids, utcnow())
    lineage = lineages(session, rows)
    out = []
    for row in rows:
        spec = spec_of(db, row)
        out.append(
            StudyPublic(
                id=row.id,
                name=row.name,
                status=StudyStatus(row.status),
                spec=spec,
                created_at=row.created_at,
                updated_at=row.updated_at,
                finished_at=row.finished_at,
                size=row.size,
                n_trials=row.handed_out,
                trial_counts=counts[row.id],
                best=bests.get(row.id),
                budget_used=_budget_used(session, row, spec),
                version=row.version,
                created_by=row.created_by,
                algorithm_choice=_choice(spec),
                dispatch=dispatch.get(row.id),
                **lineage[row.id],
            )
        )
    return out


def _choice(spec: StudySpec) -> AlgorithmChoice | None:
    if spec.algorithm.name != AlgorithmName.AUTO:
        return None
    chosen = algorithms.choose(spec)
    return AlgorithmChoice(algorithm=chosen.algorithm, summary=chosen.summary, reason=chosen.reason)


def _budget_used(session: Session, row: StudyRow, spec: StudySpec) -> BudgetUsed:
    usage = compute_usage(session, study_id=row.id, spec=spec, now=utcnow(), recorded=True)
    limits = compute_limits(spec)
    return BudgetUsed(
        trials=row.handed_out,
        max_trials=row.size,
        epochs=usage.epochs,
        max_total_epochs=spec.budget.max_total_epochs,
        device="GPU" if limits.device == "GPU" else "CPU",
        device_hours=usage.device_seconds / 3600.0,
        max_gpu_hours=spec.budget.max_gpu_hours,
        max_wall_seconds=spec.budget.max_wall_seconds,
        room_for_a_trial=decide_compute(usage=usage, limits=limits, name=row.name).allowed,
    )


__all__ = [
    "best_trial",
    "cancel_study",
    "create_study",
    "delete_study",
    "get_study",
    "list_studies",
]
