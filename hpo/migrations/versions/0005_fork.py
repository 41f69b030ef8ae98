"""Forked studies: a study's parent, and the trials it inherited from it

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


#: SQLite rebuilds the table to add a foreign key: keep AUTOINCREMENT (ids are never reused)
_STUDIES: dict[str, bool] = {"sqlite_autoincrement": True}


def upgrade() -> None:
    with op.batch_alter_table("hpo_studies", table_kwargs=_STUDIES) as batch:
        batch.add_column(sa.Column("parent_id", sa.Integer, nullable=True))
        batch.add_column(sa.Column("inherited", sa.Integer, nullable=False, server_default="0"))
        batch.create_foreign_key(
            "fk_hpo_studies_parent_id", "hpo_studies", ["parent_id"], ["id"], ondelete="SET NULL"
        )
        batch.create_index("ix_hpo_studies_parent_id", ["parent_id"])
    with op.batch_alter_table("hpo_trials") as batch:
        batch.add_column(sa.Column("inherited_from", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hpo_trials") as batch:
        batch.drop_column("inherited_from")
    with op.batch_alter_table("hpo_studies", table_kwargs=_STUDIES) as batch:
        batch.drop_index("ix_hpo_studies_parent_id")
        batch.drop_constraint("fk_hpo_studies_parent_id", type_="foreignkey")
        batch.drop_column("inherited")
        batch.drop_column("parent_id")
