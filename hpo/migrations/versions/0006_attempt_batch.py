"""The batch and gradient accumulation an attempt trains with (resources.on_oom: accumulate)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hpo_trial_runs") as batch:
        batch.add_column(sa.Column("batch_size", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("gradient_accumulation_steps", sa.BigInteger, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hpo_trial_runs") as batch:
        batch.drop_column("gradient_accumulation_steps")
        batch.drop_column("batch_size")
