"""Shared fixtures: a throwaway PostgreSQL for the session, and a fresh database per test.

The API suite runs on both backends through the ``db_url`` fixture (Optuna's STORAGE_MODES
habit): ``sqlite`` is a file in the test's tmp dir, ``postgresql`` a new database on the
session's server.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests._postgres import PostgresUnavailable, ThrowawayPostgres

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """Superuser URL of a PostgreSQL server for the whole session."""
    existing = os.environ.get("HPO_TEST_POSTGRES_URL")
    if existing:
        yield existing
        return
    server = ThrowawayPostgres()
    try:
        server.start()
    except PostgresUnavailable as exc:
        server.stop()
        pytest.fail(f"could not start the throwaway PostgreSQL for the tests: {exc}", pytrace=False)
    try:
        yield server.url
    finally:
        server.stop()


def _admin(url: str):  # type: ignore[no-untyped-def]
    return create_engine(url, isolation_level="AUTOCOMMIT")


@pytest.fixture
def fresh_postgres(postgres_url: str) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped after the test."""
    name = f"hpo_test_{uuid.uuid4().hex[:12]}"
    admin = _admin(postgres_url)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    """A fresh, empty database on each backend in turn."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hpo.db'}"
    return str(request.getfixturevalue("fresh_postgres"))


def make_spec(name: str = "s1", **overrides: object) -> dict[str, object]:
    """A small valid study spec as a JSON-ready dict; keyword arguments replace top-level keys."""
    spec: dict[str, object] = {
        "name": name,
        "objective": {"metric": "acc", "direction": "maximize"},
        "search_space": {
            "x": {"type": "float", "low": 0.0, "high": 1.0},
            "n": {"type": "int", "low": 1, "high": 4},
            "opt": {"type": "categorical", "choices": ["adam", "sgd"]},
        },
        "algorithm": {"name": "random", "seed": 7},
        "budget": {"max_trials": 20, "max_epochs": 5},
    }
    spec.update(overrides)
    return spec


@pytest.fixture
def app(db_url: str):  # type: ignore[no-untyped-def]
    from api import create_app
    from hpo.settings import Settings

    application = create_app(Settings(database_url=db_url))
    yield application
    application.state.db.dispose()


@pytest.fixture
def api(app):  # type: ignore[no-untyped-def]
    """An httpx client of the real app (in process)."""
    from fastapi.testclient import TestClient

    with TestClient(app, base_url="http://localhost") as http:
        yield http


@pytest.fixture
def client(api):  # type: ignore[no-untyped-def]
    """The hpo Python client, talking to the real app."""
    from hpo.client import Client

    return Client(http=api)


HPO_TABLES = [
    "hpo_studies",
    "hpo_trials",
    "hpo_trial_runs",
    "hpo_metrics",
    "hpo_rungs",
    "hpo_optuna_studies",
    "hpo_optuna_tombstones",
]


def row_counts(url: str) -> dict[str, int]:
    """Rows in each of our tables, and what Optuna's view holds once the mirror has caught
    up (read through Optuna's public API), to prove a rejected request wrote nothing."""
    from hpo import service
    from hpo.storage import Database

    db = Database(url, upgrade=False)
    try:
        service.sync_optuna(db, wait=30)
        with db.engine.connect() as conn:
            counts = {
                t: int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one())
                for t in HPO_TABLES
            }
        storage = db.optuna_storage
        trials = [
            t
            for s in storage.get_all_studies()
            for t in storage.get_all_trials(storage.get_study_id_from_name(s.study_name))
        ]
        counts["optuna studies"] = len(storage.get_all_studies())
        counts["optuna trials"] = len(trials)
        counts["optuna finished trials"] = sum(t.state.is_finished() for t in trials)
        counts["optuna params"] = sum(len(t.params) for t in trials)
        counts["optuna intermediate values"] = sum(len(t.intermediate_values) for t in trials)
        return counts
    finally:
        db.dispose()


@pytest.fixture(scope="session")
def worker_secret() -> str:
    """A secret in the environment of this process and, set before Ray starts, of every Ray
    worker (as ``HPO_DATABASE_URL`` or a cloud token would be); no answer may ever show it."""
    return os.environ.setdefault("HPO_TEST_SECRET", uuid.uuid4().hex)


@pytest.fixture(scope="session")
def ray_cluster(worker_secret: str) -> Iterator[None]:
    """One local Ray for the whole session, declaring two GPUs the machine does not have so
    that Ray's placement (and CUDA_VISIBLE_DEVICES) can be checked honestly. Its workers
    inherit ``worker_secret``."""
    import ray

    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
