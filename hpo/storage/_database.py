"""The database handle: our SQLAlchemy engine, Optuna's storage for the mirror, migrations.

Nothing is created at import time; a :class:`Database` is built by the app factory, the CLI or
a test, against the URL it is given.

Transactions:

- a write transaction is one service operation: it commits all of its writes or none. On
  SQLite it begins with ``BEGIN IMMEDIATE`` (the file's write lock, taken up front, so that
  two writers queue on the busy timeout instead of failing), and this process's writers are
  serialized by a lock; on PostgreSQL rows are locked with ``SELECT ... FOR UPDATE``;
- a read transaction sees one snapshot (``REPEATABLE READ`` on PostgreSQL, a deferred
  ``BEGIN`` on SQLite), so a read racing a delete sees the study whole or not at all.
"""

from __future__ import annotations

import contextlib
import importlib.util
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import optuna
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ..cache import StudyCache

_MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
_SQLITE_TIMEOUT_S = 30
_WRITE = "hpo_write"
T = TypeVar("T")

#: PostgreSQL's codes for a transaction that lost a race and may simply be run again
_RETRYABLE_PGCODES = {"40001", "40P01"}  # serialization_failure, deadlock_detected


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite would begin transactions itself, and only before a write; we begin every
    # transaction ourselves (see _sqlite_begin) so that reads see one snapshot too
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # WAL + NORMAL: a commit survives the process dying, and skips an fsync per transaction
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={_SQLITE_TIMEOUT_S * 1000}")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    write = connection.get_execution_options().get(_WRITE, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _optuna_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={_SQLITE_TIMEOUT_S * 1000}")
    cursor.close()


_STATEMENTS = "hpo_statements"


def _count_from_zero(connection: Connection) -> None:
    connection.info[_STATEMENTS] = 0


def _count(connection: Connection, *_: Any) -> None:
    connection.info[_STATEMENTS] = connection.info.get(_STATEMENTS, 0) + 1


def _note_fresh_disconnect(context: Any) -> None:
    """A connection the server had dropped (a restart, an idle timeout) fails the first
    statement of a transaction: nothing of it ran, so it may be run again on a new one."""
    connection = context.connection
    if context.is_disconnect and connection is not None and not connection.info.get(_STATEMENTS):
        context.sqlalchemy_exception.hpo_fresh_disconnect = True


def is_transient(exc: BaseException) -> bool:
    """Whether a failed transaction lost a race (deadlock, serialization, a locked SQLite
    file) and may be run again as it was."""
    if getattr(exc, "hpo_fresh_disconnect", False):
        return True
    if not isinstance(exc, DBAPIError) or exc.connection_invalidated:
        return False
    code = getattr(exc.orig, "pgcode", None)
    if code in _RETRYABLE_PGCODES:
        return True
    return isinstance(exc, OperationalError) and "database is locked" in str(exc.orig)


class Database:
    """One database holding our tables (the truth) and Optuna's (the mirror).

    Args:
        url: a SQLAlchemy URL, e.g. ``postgresql+psycopg2://user:pw@host/db`` or
            ``sqlite:///hpo.db``.
        upgrade: bring our tables (and Optuna's) up to date on construction.
        cache_entries: how many study views the read cache keeps.
    """

    def __init__(self, url: str, *, upgrade: bool = True, cache_entries: int = 512) -> None:
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
            # no ping before every checkout (a round trip per transaction): a connection the
            # server dropped fails the first statement of a transaction, and run() starts that
            # transaction over on a new one
            kwargs = {"pool_size": 10, "max_overflow": 30}
        self.engine: Engine = create_engine(url, **kwargs)
        reads: Engine = self.engine
        event.listen(self.engine, "begin", _count_from_zero)
        event.listen(self.engine, "after_cursor_execute", _count)
        event.listen(self.engine, "handle_error", _note_fresh_disconnect)
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)
        else:
            reads = self.engine.execution_options(isolation_level="REPEATABLE READ")
        self._writes = sessionmaker(
            self.engine.execution_options(**{_WRITE: True}), expire_on_commit=False
        )
        self._reads = sessionmaker(reads, expire_on_commit=False)
        # the mirror's engine pings: it runs in the background, where a round trip is cheap
        self._optuna_kwargs = {**kwargs, "pool_pre_ping": self.dialect != "sqlite"}
        self._optuna: optuna.storages.RDBStorage | None = None
        self._optuna_lock = threading.Lock()
        # SQLite has no row locks: one process serializes its writers with this lock.
        self._write_lock: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if self.dialect == "sqlite" else contextlib.nullcontext()
        )
        #: the read cache of this handle (and so of the app that owns it)
        self.cache = StudyCache(max_entries=cache_entries)
        #: set after every committed write; the Optuna mirror waits on it
        self.changed = threading.Event()
        #: one Optuna mirror pass at a time in this process
        self.mirror_lock = threading.Lock()
        if upgrade:
            self.upgrade()

    @property
    def optuna_storage(self) -> optuna.storages.RDBStorage:
        """Optuna's RDB storage on the same database (built on first use).

        Only the mirror writes through it (:func:`hpo.service.sync_optuna`); nothing in the
        service reads a trial from it.
        """
        with self._optuna_lock:
            if self._optuna is None:
                self._optuna = optuna.storages.RDBStorage(
                    self.url, engine_kwargs=dict(self._optuna_kwargs)
                )
                if self.dialect == "sqlite":  # the same pragmas on Optuna's connections
                    event.listen(self._optuna.engine, "connect", _optuna_sqlite_pragmas)
                    self._optuna.engine.dispose()
            return self._optuna

    def upgrade(self) -> None:
        """Let Optuna create its tables, then run our Alembic migrations up to head."""
        from alembic import command
        from alembic.config import Config

        _ = self.optuna_storage  # our data migrations may read Optuna's tables
        config = Config()
        config.set_main_option("script_location", str(_MIGRATIONS))
        with self.engine.connect() as connection:
            raw = connection.connection.dbapi_connection
            if self.dialect == "sqlite" and raw is not None:
                # SQLite rebuilds a table to change it; with foreign keys on, dropping the old
                # copy would cascade-delete the rows that reference it (its own FAQ's recipe)
                raw.execute("PRAGMA foreign_keys=OFF")
            try:
                with connection.begin():
                    config.attributes["connection"] = connection
                    config.attributes["database"] = self
                    command.upgrade(config, "head")
                    if self.dialect == "sqlite":
                        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                        if broken:
                            raise RuntimeError(f"migration broke foreign keys: {broken[:5]}")
            finally:
                if self.dialect == "sqlite" and raw is not None:
                    raw.execute("PRAGMA foreign_keys=ON")

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

        With ``write``, SQLite writers of this process are serialized and take the file's
        write lock up front (PostgreSQL relies on row locks instead); without it, the
        transaction reads one snapshot.
        """
        lock = self._write_lock if write else contextlib.nullcontext()
        sessions = self._writes if write else self._reads
        with lock, sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def run(
        self, operation: Callable[[Session], T], *, write: bool = False, attempts: int = 4
    ) -> T:
        """``operation(session)`` in one transaction, run again (on a new transaction) when
        it lost a race the database resolved by aborting it (a deadlock, a serialization
        failure, a locked SQLite file). The operation must write only through ``session``."""
        for attempt in range(1, attempts + 1):
            try:
                with self.transaction(write=write) as session:
                    return operation(session)
            except DBAPIError as exc:
                if attempt == attempts or not is_transient(exc):
                    raise
                time.sleep(0.01 * 2**attempt)
        raise AssertionError("unreachable")

    def dispose(self) -> None:
        self.engine.dispose()
        if self._optuna is not None:
            self._optuna.engine.dispose()
