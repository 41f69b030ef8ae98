"""A study's lineage as its public read shows it: its parent, its forks, what it inherited."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..storage import StudyRow

#: forks listed per study at most (the rest are in GET /api/v1/studies)
MAX_CHILDREN = 100


def lineage(session: Session, row: StudyRow) -> dict[str, Any]:
    """``parent``, ``inherited`` and ``children`` of study ``row`` (see StudyPublic)."""
    parent = None
    if row.parent_id is not None:
        parent = session.scalar(select(StudyRow.name).where(StudyRow.id == row.parent_id))
    children = session.scalars(
        select(StudyRow.name)
        .where(StudyRow.parent_id == row.id)
        .order_by(StudyRow.id)
        .limit(MAX_CHILDREN)
    ).all()
    return {"parent": parent, "inherited": row.inherited or 0, "children": list(children)}


__all__ = ["MAX_CHILDREN", "lineage"]
