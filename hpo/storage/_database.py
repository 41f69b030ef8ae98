"""The database handle: our SQLAlchemy engine, Optuna's RDB storage, and migrations.

Nothing is created at import time; a :class:`Database` is built by the app factory, the CLI or
a test, against the URL it is given.
"""

from __future__ import annotations

import contextlib
import importlib.util
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

_MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
_SQLITE_TIMEOUT_S = 30


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # WAL + NORMAL: a commit survives the process dying, and skips an fsync per transaction
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={_SQLITE_TIMEOUT_S * 1000}")
    cursor.close()


class Database:
    """One database holding Optuna's tables and ours.

    Args:
        url: a SQLAlchemy URL, e.g. ``postgresql+psycopg2://user:pw@host/db`` or
            ``sqlite:///hpo.db``.
        upgrade: bring our tables (and Optuna's) up to date on construction.
    """

    def __init__(self, url: str, *, upgrade: bool = True) -> None:
        parsed = make_url(url)
        if parsed.drivername == "postgresql" and importlib.util.find_spec("psycopg") is None:
            # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; we ship psycopg2
            parsed = parsed.set(drivername="postgresql+psycopg2")
            url = parsed.render_as_string(hide_password=False)
        self.url = url
        self.dialect = parsed.get_backend_name()
        kwargs: dict[str, Any]
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            kwargs = {"connect_args": {"timeout": _SQLITE_TIMEOUT_S, "check_same_thread": False}}
        else:
            kwargs = {"pool_pre_ping": True, "pool_size": 10, "max_overflow": 20}
        self.engine: Engine = create_engine(url, **kwargs)
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._optuna_kwargs = kwargs
        self._rdb: optuna.storages.RDBStorage | None = None
        self._optuna: optuna.storages.BaseStorage | None = None
        self._optuna_lock = threading.Lock()
        # SQLite has no row locks: one process serializes its writers with this lock.
        self._write_lock: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if self.dialect == "sqlite" else contextlib.nullcontext()
        )
        if upgrade:
            self.upgrade()

    @property
    def optuna_storage(self) -> optuna.storages.BaseStorage:
        """Optuna's storage on the same database (built on first use).

        Optuna's own cache in front of its RDB storage, kept for the life of this handle: it
        holds finished trials only (they never change) and rereads the others on every call, so
        it stays right with several controllers on one database, and an ask no longer rereads
        a study's whole history.
        """
        with self._optuna_lock:
            if self._optuna is None:
                self._rdb = optuna.storages.RDBStorage(
                    self.url, engine_kwargs=dict(self._optuna_kwargs)
                )
                if self.dialect == "sqlite":  # the same pragmas on Optuna's connections
                    event.listen(self._rdb.engine, "connect", _sqlite_pragmas)
                    self._rdb.engine.dispose()
                self._optuna = optuna.storages._CachedStorage(self._rdb)
            return self._optuna

    def upgrade(self) -> None:
        """Run our Alembic migrations up to head, and let Optuna create its tables."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(_MIGRATIONS))
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
        _ = self.optuna_storage

    def current_revision(self) -> str | None:
        from alembic.migration import MigrationContext

        with self.engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"version_table": "hpo_alembic_version"}
            )
            return context.get_current_revision()

    @contextlib.contextmanager
    def transaction(self, *, write: bool = False) -> Iterator[Session]:
        """One transaction: commit on success, roll back on any exception.

        With ``write``, SQLite writers of this process are serialized (PostgreSQL relies on
        ``SELECT ... FOR UPDATE`` row locks instead).
        """
        lock = self._write_lock if write else contextlib.nullcontext()
        with lock, self._sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def dispose(self) -> None:
        self.engine.dispose()
        if self._rdb is not None:
            self._rdb.engine.dispose()
