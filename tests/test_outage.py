"""PostgreSQL stopped in the middle of a study: the controller answers 503 with a JSON detail
and Retry-After (``/healthz`` too), and once PostgreSQL is back the study finishes by itself,
with nothing reported before, during or after the outage lost, and no restart of the
controller. Real PostgreSQL, a real controller, trials on a local Ray."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests._live import LiveController
from tests._postgres import ThrowawayPostgres
from tests.test_dispatch import synthetic_study

pytestmark = pytest.mark.usefixtures("ray_cluster")


@pytest.fixture
def server():
    pg = ThrowawayPostgres().start()
    yield pg
    pg.stop()


def _database(pg: ThrowawayPostgres) -> str:
    name = f"hpo_outage_{uuid.uuid4().hex[:8]}"
    admin = create_engine(pg.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(pg.url).set(database=name).render_as_string(hide_password=False)


def _reports(live: LiveController, name: str) -> int:
    trials = live.api("GET", f"/api/v1/studies/{name}/trials").json()["data"]
    return sum(t["last_step"] or 0 for t in trials)


def test_the_study_survives_a_database_outage(server):
    live = LiveController(_database(server), heartbeat_timeout=4.0).start()
    try:
        spec = synthetic_study(
            "outage",
            budget={"max_trials": 6, "max_epochs": 10, "parallelism": 2},
            workload={"name": "synthetic", "options": {"epoch_seconds": 0.4}},
        )
        assert live.api("POST", "/api/v1/studies", json=spec).status_code == 201
        deadline = time.monotonic() + 120
        while _reports(live, "outage") < 4:  # trials are running and reporting
            assert time.monotonic() < deadline, "no trial started"
            time.sleep(0.2)

        server.pause()
        time.sleep(1)
        health = live.api("GET", "/healthz")
        assert health.status_code == 503
        assert health.json()["status"] == "unavailable" and health.headers["Retry-After"]
        for method, path in (
            ("GET", "/api/v1/studies/outage"),
            ("GET", "/api/v1/studies/outage/trials"),
            ("POST", "/api/v1/studies/outage/trials"),
        ):
            resp = live.api(method, path)
            assert resp.status_code == 503, (path, resp.text)
            assert "database is unreachable" in resp.json()["detail"]
            assert int(resp.headers["Retry-After"]) > 0
        time.sleep(6)  # longer than the heartbeat timeout: no worker can be heard meanwhile
        server.resume()

        study = live.wait_for("outage", timeout=240)
        assert live.api("GET", "/healthz").status_code == 200
        counts = study["trial_counts"]
        assert counts["completed"] == 6 and counts["failed"] == counts["cancelled"] == 0, counts
        for run in live.runs("outage"):
            assert run["attempt"] == 1, f"trial {run['number']} was retried: {run['error']}"
            assert [r["step"] for r in run["reports"]] == list(range(1, 11)), run["number"]
    finally:
        live.stop()
        httpx.Client().close()
