"""Where a run ran: the GPUs it saw and when its worker really started

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hpo_trial_runs") as batch:
        batch.add_column(sa.Column("gpus", sa.String(64), nullable=True))
        batch.add_column(sa.Column("worker_started_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hpo_trial_runs") as batch:
        batch.drop_column("worker_started_at")
        batch.drop_column("gpus")
