"""Alembic environment for hpo's own tables.

Run through :func:`hpo.storage.upgrade`, which passes the connection in. Our version table is
``hpo_alembic_version`` so that it never collides with Optuna's ``alembic_version``.
"""

from __future__ import annotations

from alembic import context

from hpo.storage._models import Base

VERSION_TABLE = "hpo_alembic_version"


def _include(name: str | None, type_: str, *_: object) -> bool:
    # Optuna's tables live in the same database; autogenerate must leave them alone.
    return type_ != "table" or (name or "").startswith("hpo_")


def run_migrations_online() -> None:
    connection = context.config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        include_name=_include,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
