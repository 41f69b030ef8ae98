"""Alembic migrations build exactly the tables the ORM models describe, on both backends."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from hpo.storage import Base, Database


def test_upgrade_creates_our_tables_beside_optunas_and_matches_the_models(db_url):
    db = Database(db_url)
    try:
        assert db.current_revision() == "0003"
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
    assert again.current_revision() == "0003"
    again.dispose()


def test_a_bare_postgresql_url_uses_the_shipped_driver(fresh_postgres):
    bare = fresh_postgres.replace("postgresql+psycopg2://", "postgresql://")
    db = Database(bare)
    try:
        assert db.current_revision() is not None
        assert db.engine.dialect.driver == "psycopg2"
    finally:
        db.dispose()
