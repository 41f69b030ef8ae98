"""Our tables become the truth: hpo_trials, hpo_rungs, the Optuna mirror's bookkeeping

Until 0002 a trial's parameters, state and value lived in Optuna's tables and its attempts in
ours, written in two transactions. From 0003 every trial has a row in ``hpo_trials`` written
in the same transaction as its runs and metrics; Optuna's tables become a mirror derived from
ours (``hpo_optuna_studies`` and ``hpo_trials.mirrored`` say how far it got, and
``hpo_optuna_tombstones`` lists deleted studies whose mirror is still to be removed). The
values each attempt had at each successive-halving rung move from Optuna's trial attributes
to ``hpo_rungs``.

Existing studies are carried over: their trials are read from Optuna's tables through
Optuna's public storage API and written to ``hpo_trials``; they count as mirrored already.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import context, op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)
UNMIRRORED = "mirrored IS NULL OR mirrored <> state"


def upgrade() -> None:
    op.create_table(
        "hpo_trials",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "study_id",
            sa.Integer(),
            sa.ForeignKey("hpo_studies.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("finished_at", _TS, nullable=True),
        sa.Column("mirrored", sa.String(16), nullable=True),
        sa.UniqueConstraint("study_id", "number"),
    )
    op.create_index("ix_hpo_trials_study_state", "hpo_trials", ["study_id", "state"])
    op.create_index(
        "ix_hpo_trials_unmirrored",
        "hpo_trials",
        ["study_id"],
        postgresql_where=sa.text(UNMIRRORED),
        sqlite_where=sa.text(UNMIRRORED),
    )
    op.create_table(
        "hpo_rungs",
        sa.Column(
            "run_id",
            sa.Integer(),
            sa.ForeignKey("hpo_trial_runs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("rung", sa.Integer(), primary_key=True),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("bracket", sa.Integer(), nullable=False),
        sa.Column("trial_number", sa.Integer(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
    )
    op.create_index(
        "ix_hpo_rungs_study_bracket_rung_value",
        "hpo_rungs",
        ["study_id", "bracket", "rung", "value"],
    )
    op.create_table(
        "hpo_optuna_studies",
        sa.Column(
            "study_id",
            sa.Integer(),
            sa.ForeignKey("hpo_studies.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("optuna_study_id", sa.Integer(), nullable=True),
        sa.Column("claimed_by", sa.String(32), nullable=True),
        sa.Column("claimed_until", _TS, nullable=True),
    )
    op.create_table(
        "hpo_optuna_tombstones",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.add_column("hpo_studies", sa.Column("size", sa.BigInteger(), nullable=True))
    op.add_column(
        "hpo_studies", sa.Column("version", sa.Integer(), nullable=False, server_default="1")
    )
    # on SQLite this rebuilds the table (Database.upgrade turns foreign keys off meanwhile, so
    # that dropping the old table does not cascade to the metrics that reference it)
    with op.batch_alter_table("hpo_trial_runs") as batch:
        batch.add_column(sa.Column("next_rung", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("trial_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            "fk_hpo_trial_runs_trial_id", "hpo_trials", ["trial_id"], ["id"], ondelete="CASCADE"
        )
    op.create_index("ix_hpo_trial_runs_study_state", "hpo_trial_runs", ["study_id", "state"])
    op.create_index(
        "ix_hpo_trial_runs_trial_attempt", "hpo_trial_runs", ["trial_id", "attempt"], unique=True
    )
    op.create_index("ix_hpo_metrics_study_name_step", "hpo_metrics", ["study_id", "name", "step"])
    # every report writes these tables: indexes that no read uses any more only cost it
    op.drop_index("ix_hpo_metrics_study_trial", table_name="hpo_metrics")
    _drop_the_study_key_of_metrics(op.get_bind())
    op.drop_index("ix_hpo_trial_runs_study_id", table_name="hpo_trial_runs")
    if op.get_bind().dialect.name == "postgresql":
        # room on each page for a row's next version: a report's update touches no index
        op.execute("ALTER TABLE hpo_trial_runs SET (fillfactor = 70)")
    _carry_over(op.get_bind())
    op.drop_column("hpo_trial_runs", "optuna_trial_id")
    op.drop_column("hpo_studies", "optuna_study_id")


def _drop_the_study_key_of_metrics(bind: sa.Connection) -> None:
    """hpo_metrics.study_id loses its foreign key: PostgreSQL checked it by locking the study's
    row (FOR KEY SHARE) for every metric inserted, a row every ask updates, and that check
    was most of the database's time under load. The run_id key still ties a metric to a run,
    and through it to its study."""
    if bind.dialect.name == "postgresql":
        for key in sa.inspect(bind).get_foreign_keys("hpo_metrics"):
            if key["referred_table"] == "hpo_studies" and key["name"]:
                op.drop_constraint(key["name"], "hpo_metrics", type_="foreignkey")
        return
    copy = sa.Table(
        "hpo_metrics",
        sa.MetaData(),
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "run_id",
            sa.Integer(),
            sa.ForeignKey("hpo_trial_runs.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("trial_number", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.UniqueConstraint("run_id", "step", "name"),
        sa.Index("ix_hpo_metrics_study_name_step", "study_id", "name", "step"),
    )
    with op.batch_alter_table("hpo_metrics", copy_from=copy, recreate="always"):
        pass


def downgrade() -> None:
    raise NotImplementedError(
        "0003 moved the trials into hpo_trials; going back would lose the retries' own "
        "histories. Restore a backup taken before the upgrade instead."
    )


# -- carrying existing studies over ------------------------------------------------------


def _carry_over(conn: sa.Connection) -> None:
    studies = conn.execute(
        sa.text("SELECT id, name, optuna_study_id, spec FROM hpo_studies ORDER BY id")
    ).all()
    if not studies:
        return
    database = context.config.attributes.get("database")
    if database is None:
        raise RuntimeError("migration 0003 needs the Database handle to read Optuna's tables")
    storage = database.optuna_storage
    for study_id, name, optuna_study_id, spec in studies:
        _carry_study(conn, storage, study_id, name, optuna_study_id, spec)


def _carry_study(
    conn: sa.Connection, storage: Any, study_id: int, name: str, optuna_id: int, spec: Any
) -> None:
    import json

    from hpo import algorithms
    from hpo.budget import study_size
    from hpo.spec import StudySpec

    raw = json.loads(spec) if isinstance(spec, str) else spec
    try:
        parsed: Any = StudySpec.model_validate(raw)
    except ValueError:
        # stored under older, looser rules: carry its trials over as they are, and let the
        # budget's max_trials (if any) stand for its size
        parsed, size = None, (raw.get("budget") or {}).get("max_trials")
    else:
        grid = algorithms.grid_size(parsed.space) if parsed.algorithm.name == "grid" else None
        size = study_size(parsed, grid)
    conn.execute(
        sa.text("UPDATE hpo_studies SET size = :size WHERE id = :id"),
        {"size": size, "id": study_id},
    )
    conn.execute(
        sa.text("INSERT INTO hpo_optuna_studies (study_id, optuna_study_id) VALUES (:s, :o)"),
        {"s": study_id, "o": optuna_id},
    )
    try:
        frozen = {t.number: t for t in storage.get_all_trials(optuna_id, deepcopy=False)}
    except KeyError:  # Optuna's side is gone: nothing to carry over
        frozen = {}
    runs = conn.execute(
        sa.text(
            "SELECT id, trial_number, attempt, state, started_at, finished_at "
            "FROM hpo_trial_runs WHERE study_id = :s ORDER BY trial_number, attempt"
        ),
        {"s": study_id},
    ).all()
    by_number: dict[int, list[Any]] = {}
    for run in runs:
        by_number.setdefault(run.trial_number, []).append(run)
    plan = algorithms.halving_plan(parsed.algorithm, parsed.budget) if parsed else None
    for number, attempts in by_number.items():
        trial = frozen.get(number)
        if trial is None:  # an attempt whose Optuna trial vanished: nothing to show for it
            conn.execute(
                sa.text("DELETE FROM hpo_trial_runs WHERE study_id = :s AND trial_number = :n"),
                {"s": study_id, "n": number},
            )
            continue
        _carry_trial(conn, study_id, name, parsed, plan, trial, attempts)


_OPTUNA_STATE = {"COMPLETE": "completed", "PRUNED": "pruned", "FAIL": "failed"}


def _carry_trial(
    conn: sa.Connection,
    study_id: int,
    name: str,
    spec: Any,
    plan: Any,
    trial: Any,
    attempts: list[Any],
) -> None:
    from hpo import algorithms

    latest = attempts[-1]
    state = latest.state if latest.state in ("cancelled", "pending") else None
    state = state or _OPTUNA_STATE.get(trial.state.name, "running")
    value = trial.value if state in ("completed", "pruned") else None
    trial_id = conn.execute(
        sa.text(
            "INSERT INTO hpo_trials (study_id, number, state, params, value, attempts, "
            "started_at, finished_at, mirrored) VALUES (:s, :n, :state, "
            ":params, :value, :attempts, :started, :finished, :state) RETURNING id"
        ).bindparams(sa.bindparam("params", type_=sa.JSON())),
        {
            "s": study_id,
            "n": trial.number,
            "state": state,
            "params": algorithms.clean_params(spec.space, dict(trial.params))
            if spec is not None
            else dict(trial.params),
            "value": value,
            "attempts": len(attempts),
            "started": attempts[0].started_at,
            "finished": latest.finished_at,
        },
    ).scalar_one()
    conn.execute(
        sa.text(
            "UPDATE hpo_trial_runs SET trial_id = :t WHERE study_id = :s AND trial_number = :n"
        ),
        {"t": trial_id, "s": study_id, "n": trial.number},
    )
    if plan is None:
        return
    bracket = algorithms.bracket_of(plan, name, trial.number)
    rungs = sorted(
        (int(key.rsplit("_", 1)[1]), float(val))
        for key, val in trial.system_attrs.items()
        if key.startswith("completed_rung_")
    )
    for rung, val in rungs:
        conn.execute(
            sa.text(
                "INSERT INTO hpo_rungs (run_id, rung, study_id, bracket, trial_number, value) "
                "VALUES (:run, :rung, :s, :b, :n, :v)"
            ),
            {
                "run": latest.id,
                "rung": rung,
                "s": study_id,
                "b": bracket,
                "n": trial.number,
                "v": val,
            },
        )
    conn.execute(
        sa.text("UPDATE hpo_trial_runs SET next_rung = :r WHERE id = :id"),
        {"r": len(rungs), "id": latest.id},
    )
