"""An ``auto`` study's stored spec holds only the algorithm fields its user set

``auto`` now keeps every field set beside it, a default value too (``grace_period: 1``), and
an ``auto`` spec dumps only the fields it was given. Specs stored before were dumped with
every field, so ``auto`` could not tell a field set to its default from one left out, and
ignored both. This drops, from every stored ``auto`` spec, the fields that hold the value
they had by default then: each such study goes on running exactly what it chose before.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

#: AlgorithmSpec's defaults as of 0007, frozen here: what an old dump holds for a field its
#: user left out (and what ``auto`` then ignored)
_DEFAULTS_AT_0007: dict[str, Any] = {
    "seed": None,
    "model": "tpe",
    "n_startup_trials": 10,
    "early_stopping": None,
    "reduction_factor": 3,
    "grace_period": 1,
}


def upgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT id, spec FROM hpo_studies")).all()
    for study_id, stored in rows:
        spec = json.loads(stored) if isinstance(stored, str) else stored
        algorithm = spec.get("algorithm") if isinstance(spec, dict) else None
        if not isinstance(algorithm, dict) or algorithm.get("name") != "auto":
            continue
        kept = {
            field: value
            for field, value in algorithm.items()
            if field not in _DEFAULTS_AT_0007 or value != _DEFAULTS_AT_0007[field]
        }
        if kept == algorithm:
            continue
        conn.execute(
            sa.text("UPDATE hpo_studies SET spec = :spec WHERE id = :id").bindparams(
                sa.bindparam("spec", type_=sa.JSON)
            ),
            {"spec": {**spec, "algorithm": kept}, "id": study_id},
        )


def downgrade() -> None:
    """Nothing to undo: 0007's code reads a spec with fewer fields as the same spec."""
