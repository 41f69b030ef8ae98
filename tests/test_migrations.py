"""Alembic migrations build exactly the tables the ORM models describe, on both backends."""

from __future__ import annotations

import json

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import JSON, bindparam, inspect

from hpo.storage import Base, Database


def test_upgrade_creates_our_tables_beside_optunas_and_matches_the_models(db_url):
    db = Database(db_url)
    try:
        assert db.current_revision() == "0008"
        tables = set(inspect(db.engine).get_table_names())
        assert {"hpo_studies", "hpo_trial_runs", "hpo_metrics", "hpo_alembic_version"} <= tables
        assert {"studies", "trials", "alembic_version"} <= tables  # Optuna's, untouched
        with db.engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={
                    "include_name": lambda name, type_, *_: (
                        type_ != "table"
                        or name.startswith("hpo_")
                        and name != "hpo_alembic_version"
                    ),
                    "compare_type": True,
                },
            )
            assert compare_metadata(context, Base.metadata) == []
    finally:
        db.dispose()


def test_upgrade_is_idempotent(db_url):
    Database(db_url).dispose()
    again = Database(db_url)
    assert again.current_revision() == "0008"
    again.dispose()


def test_a_bare_postgresql_url_uses_the_shipped_driver(fresh_postgres):
    bare = fresh_postgres.replace("postgresql+psycopg2://", "postgresql://")
    db = Database(bare)
    try:
        assert db.current_revision() is not None
        assert db.engine.dialect.driver == "psycopg2"
    finally:
        db.dispose()


# -- carrying a study over from 0002, when Optuna's tables held the trials ------------------


def _database_at_0002(url: str) -> Database:
    from pathlib import Path

    from alembic import command
    from alembic.config import Config

    import hpo.storage

    db = Database(url, upgrade=False)
    _ = db.optuna_storage  # Optuna's own tables
    config = Config()
    migrations = Path(hpo.storage.__file__).resolve().parent.parent / "migrations"
    config.set_main_option("script_location", str(migrations))
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0002")
    return db


def _old_study(db: Database) -> None:
    """What 0002 held for an ASHA study: trials in Optuna's tables, attempts in ours."""
    import json
    from datetime import datetime, timezone

    import optuna
    from sqlalchemy import text

    from hpo import algorithms
    from hpo.spec import parse_spec
    from tests.conftest import make_spec

    spec = parse_spec(
        make_spec(
            "old",
            algorithm={"name": "asha", "seed": 0},
            budget={"max_trials": 6, "max_epochs": 9},
        )
    )
    dists = algorithms.distributions(spec.space)
    study = optuna.create_study(study_name="old", storage=db.optuna_storage, direction="maximize")
    params = [{"x": 0.1 * (i + 1), "n": i % 4 + 1, "opt": "adam"} for i in range(4)]
    make = optuna.trial.create_trial
    running = optuna.trial.TrialState.RUNNING
    study.add_trials(
        [
            make(
                params=params[0],
                distributions=dists,
                value=0.6,
                intermediate_values={1: 0.5, 2: 0.6},
                system_attrs={"completed_rung_0": 0.5},
            ),
            make(
                params=params[1],
                distributions=dists,
                state=optuna.trial.TrialState.PRUNED,
                value=0.2,
                intermediate_values={1: 0.2},
                system_attrs={"completed_rung_0": 0.2},
            ),
            make(params=params[2], distributions=dists, state=running),
            make(params=params[3], distributions=dists, state=optuna.trial.TrialState.FAIL),
        ]
    )
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    with db.engine.begin() as conn:
        optuna_id = db.optuna_storage.get_study_id_from_name("old")
        conn.execute(
            text(
                "INSERT INTO hpo_studies (name, optuna_study_id, spec, status, handed_out, "
                "created_at, updated_at) VALUES ('old', :o, :spec, 'running', 4, :t, :t)"
            ),
            {"o": optuna_id, "spec": json.dumps(spec.model_dump(mode="json")), "t": now},
        )
        runs = [(0, 1, "completed"), (1, 1, "pruned"), (2, 1, "failed"), (2, 2, "pending")]
        runs.append((3, 1, "cancelled"))
        for number, attempt, state in runs:
            trial_id = db.optuna_storage.get_trial_id_from_study_id_trial_number(optuna_id, number)
            conn.execute(
                text(
                    "INSERT INTO hpo_trial_runs (study_id, trial_number, optuna_trial_id, "
                    "attempt, state, token_hash, last_step, started_at, heartbeat_at) "
                    "VALUES (1, :n, :o, :a, :s, '', :last, :t, :t)"
                ),
                {
                    "n": number,
                    "o": trial_id,
                    "a": attempt,
                    "s": state,
                    "t": now,
                    "last": {0: 2, 1: 1}.get(number),
                },
            )
        for run, number, step, value in ((1, 0, 1, 0.5), (1, 0, 2, 0.6), (2, 1, 1, 0.2)):
            conn.execute(
                text(
                    "INSERT INTO hpo_metrics (run_id, study_id, trial_number, step, name, value) "
                    "VALUES (:r, 1, :n, :s, 'acc', :v)"
                ),
                {"r": run, "n": number, "s": step, "v": value},
            )


def test_upgrading_from_0002_carries_the_trials_over_and_the_study_goes_on(db_url):
    from hpo import service
    from tests._consistency import assert_mirrored, assert_whole

    old = _database_at_0002(db_url)
    _old_study(old)
    old.dispose()
    db = Database(db_url)
    try:
        assert db.current_revision() == "0008"
        trials, count = service.list_trials(db, ref="old")
        assert count == 4
        assert [t.state for t in trials] == ["completed", "pruned", "pending", "cancelled"]
        assert trials[0].value == 0.6 and trials[0].last_step == 2 and trials[2].attempts == 2
        assert service.get_trial(db, ref="old", number=0).reports[1].metrics == {"acc": 0.6}
        assert service.best_trial(db, ref="old").number == 0
        retry = service.ask(db, ref="old")
        assert (retry.number, retry.attempt) == (2, 2)
        fresh = service.ask(db, ref="old")
        assert fresh.number == 4
        for trial in (retry, fresh):
            service.report(
                db,
                ref="old",
                number=trial.number,
                token=trial.token,
                step=1,
                metrics={"acc": 0.9},
            )
            service.complete(
                db, ref="old", number=trial.number, token=trial.token, metrics={"acc": 0.9}
            )
        assert_whole(db, "old")
        assert_mirrored(db, "old")
    finally:
        db.dispose()


# -- 0008: an auto spec keeps only what its user set -----------------------------------------


def test_upgrading_to_0008_leaves_every_auto_study_running_what_it_chose(db_url):
    """0007 stored an auto spec with every field, and auto ignored those at their default; the
    migration drops them, so each study chooses as before (and a field set to something else
    stays set)."""
    from sqlalchemy import text

    from hpo import service
    from hpo.spec import parse_spec
    from tests.conftest import make_spec

    db = Database(db_url)
    old_dump = {
        "seed": None,
        "model": "tpe",
        "n_startup_trials": 10,
        "early_stopping": None,
        "reduction_factor": 3,
        "grace_period": 1,
    }
    budget = {"max_trials": 20, "max_epochs": 54}
    stored = {
        "plain": {"name": "auto"},
        "later": {"name": "auto", "grace_period": 3, "seed": 4},
        "random": {"name": "random", "seed": 7},
    }
    try:
        for name, algorithm in stored.items():
            spec = parse_spec(make_spec(name, algorithm=algorithm, budget=budget))
            service.create_study(db, spec=spec)
        before = {n: service.get_study(db, ref=n).algorithm_choice for n in ("plain", "later")}
        with db.engine.begin() as conn:
            for name, algorithm in stored.items():
                spec = make_spec(name, algorithm={**old_dump, **algorithm}, budget=budget)
                conn.execute(
                    text("UPDATE hpo_studies SET spec = :spec WHERE name = :name").bindparams(
                        bindparam("spec", type_=JSON)
                    ),
                    {"spec": spec, "name": name},
                )
            conn.execute(text("UPDATE hpo_alembic_version SET version_num = '0007'"))
    finally:
        db.dispose()
    db = Database(db_url)
    try:
        assert db.current_revision() == "0008"
        with db.engine.connect() as conn:
            rows = conn.execute(text("SELECT name, spec FROM hpo_studies")).all()
        algorithms = {
            name: (json.loads(spec) if isinstance(spec, str) else spec)["algorithm"]
            for name, spec in rows
        }
        assert algorithms["plain"] == {"name": "auto"}
        assert algorithms["later"] == {"name": "auto", "seed": 4, "grace_period": 3}
        assert algorithms["random"] == {**old_dump, "name": "random", "seed": 7}, "not auto"
        for name, choice in before.items():
            assert service.get_study(db, ref=name).algorithm_choice == choice
        assert "first rung at epoch 2" in before["plain"].summary
        assert "first rung at epoch 3" in before["later"].summary
    finally:
        db.dispose()
