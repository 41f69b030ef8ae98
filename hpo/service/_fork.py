"""Forking a study: a new study that starts with its parent's finished trials as history.

The fork's inherited trials are rows of its own (``hpo_trials.inherited_from`` says which
parent trial each copies), so every read of the fork, its sampler's history and its Optuna
mirror (the equivalent of Optuna's ``add_trial``) see them like trials it ran. They take the
numbers 0 to k-1; new trials are numbered after them, and the budget counts new trials only
(``hpo_studies.handed_out``): a fork with ``max_trials: 20`` runs 20 trials of its own. They
have no run records, so no epochs or GPU time are counted for them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .. import algorithms
from .._errors import DuplicateStudy, InvalidSpec
from ..schemas import StudyPublic
from ..spec import StudySpec
from ..storage import Database, TrialRow
from ._common import find_study, spec_of
from ._lifecycle import note, transact
from ._studies import check_creatable, duplicate_message, get_study, insert_study


def fork_study(
    db: Database,
    *,
    parent: str | int,
    spec: StudySpec,
    workloads: Mapping[str, str] | None = None,
    created_by: str | None = None,
    data_dirs: Sequence[str] = (),
) -> StudyPublic:
    """Create study ``spec`` as a fork of ``parent``, in one transaction: the new study, and a
    copy of each of the parent's finished trials (completed, or pruned with its last value)
    whose parameters fit the new space. Nothing is stored if any rule fails.

    Args:
        workloads, created_by, data_dirs: as for :func:`create_study`.
    """
    check_creatable(db, spec=spec, workloads=workloads, data_dirs=data_dirs)

    def fork(session: Session) -> int:
        source = find_study(session, parent)
        problems = algorithms.fork_problems(spec_of(db, source), spec)
        if problems:
            raise InvalidSpec("; ".join(problems))
        finished = session.execute(
            select(
                TrialRow.number,
                TrialRow.state,
                TrialRow.params,
                TrialRow.value,
                TrialRow.started_at,
                TrialRow.finished_at,
            )
            .where(
                TrialRow.study_id == source.id,
                TrialRow.state.in_(algorithms.INHERITED_STATES),
            )
            .order_by(TrialRow.number)
        ).all()
        constraints = algorithms.parsed_constraints(spec.space, spec.constraints)
        kept = [
            t
            for t in finished
            if all(constraint(t.params) for constraint in constraints)
            and algorithms.inheritable(
                state=t.state,
                params=t.params,
                value=t.value,
                space=spec.space,
                algorithm=algorithms.in_force(spec).name,
            )
        ]
        row = insert_study(
            session, spec=spec, created_by=created_by, parent_id=source.id, inherited=len(kept)
        )
        if kept:
            session.execute(
                insert(TrialRow),
                [
                    {
                        "study_id": row.id,
                        "number": number,
                        "state": t.state,
                        "params": t.params,
                        "value": t.value,
                        "attempts": 0,
                        "started_at": t.started_at,
                        "finished_at": t.finished_at,
                        "inherited_from": t.number,
                    }
                    for number, t in enumerate(kept)
                ],
            )
        note(
            session,
            logging.INFO,
            "study %s forked from %s (%d of its %d finished trials inherited)",
            spec.name,
            source.name,
            len(kept),
            len(finished),
        )
        return row.id

    try:
        study_id = transact(db, fork, write=True)
    except IntegrityError:  # a concurrent create took the name between our check and insert
        raise DuplicateStudy(duplicate_message(spec.name)) from None
    return get_study(db, ref=study_id)


__all__ = ["fork_study"]
