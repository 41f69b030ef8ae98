"""Which dispatcher runs each study (a lease), and the dispatchers seen lately

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hpo_dispatch",
        sa.Column(
            "study_id",
            sa.Integer,
            sa.ForeignKey("hpo_studies.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("waiting", sa.Text, nullable=True),
    )
    op.create_table(
        "hpo_dispatchers",
        sa.Column("holder", sa.String(128), primary_key=True),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_hpo_dispatchers_seen_at", "hpo_dispatchers", ["seen_at"])


def downgrade() -> None:
    op.drop_index("ix_hpo_dispatchers_seen_at", "hpo_dispatchers")
    op.drop_table("hpo_dispatchers")
    op.drop_table("hpo_dispatch")
