"""A study's lineage as its public read shows it: its parent, its forks, what it inherited."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..storage import StudyRow

#: forks listed per study at most (the rest are in GET /api/v1/studies)
MAX_CHILDREN = 100


def lineages(session: Session, rows: Sequence[StudyRow]) -> dict[int, dict[str, Any]]:
    """``parent``, ``inherited`` and ``children`` of each study in ``rows`` (see StudyPublic),
    by study id: two queries, whatever the number of studies."""
    parent_ids = {row.parent_id for row in rows if row.parent_id is not None}
    parents: dict[int, str] = {}
    if parent_ids:
        query = select(StudyRow.id, StudyRow.name).where(StudyRow.id.in_(parent_ids))
        parents = {study_id: name for study_id, name in session.execute(query)}
    children: dict[int, list[str]] = {row.id: [] for row in rows}
    if children:
        rank = (
            func.row_number()
            .over(partition_by=StudyRow.parent_id, order_by=StudyRow.id)
            .label("rank")
        )
        forks = (
            select(StudyRow.parent_id, StudyRow.name, StudyRow.id, rank)
            .where(StudyRow.parent_id.in_(list(children)))
            .subquery()
        )
        for parent_id, name in session.execute(
            select(forks.c.parent_id, forks.c.name)
            .where(forks.c.rank <= MAX_CHILDREN)
            .order_by(forks.c.parent_id, forks.c.id)
        ):
            children[parent_id].append(name)
    return {
        row.id: {
            "parent": parents.get(row.parent_id) if row.parent_id is not None else None,
            "inherited": row.inherited or 0,
            "children": children[row.id],
        }
        for row in rows
    }


__all__ = ["MAX_CHILDREN", "lineages"]
