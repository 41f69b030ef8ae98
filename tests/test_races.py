"""Races on PostgreSQL with real controller processes: a delete racing the dashboard's reads
answers 404 (never 500); the last two trials of a study ending at once complete it."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests._servers import controller
from tests.conftest import make_spec

READS = [
    "/api/v1/studies/{s}",
    "/api/v1/studies/{s}/trials",
    "/api/v1/studies/{s}/trials/0",
    "/api/v1/studies/{s}/best",
    "/api/v1/studies/{s}/figures/history",
    "/api/v1/studies/{s}/figures/curves",
    "/api/v1/studies/{s}/figures/parallel",
    "/api/v1/studies/{s}/figures/slice",
    "/api/v1/studies/{s}/figures/importance",
    "/api/v1/studies/{s}/trials/0/figures",
    "/api/v1/studies/{s}/figures/compare?trials=0,1",
]


@pytest.fixture(scope="module")
def url(postgres_url):
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"hpo_races_{uuid.uuid4().hex[:8]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    db_url = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    with controller(db_url) as base:
        yield base
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _study_with_trials(http: httpx.Client, name: str, n: int = 6, size: int | None = None) -> list:
    budget = {"max_trials": size or 20, "max_epochs": 3}
    assert http.post("/api/v1/studies", json=make_spec(name, budget=budget)).status_code == 201
    trials = []
    for i in range(n):
        trial = http.post(f"/api/v1/studies/{name}/trials").json()
        auth = {"Authorization": f"Bearer {trial['token']}"}
        for step in (1, 2):
            http.post(
                f"/api/v1/studies/{name}/trials/{trial['number']}/reports",
                json={"step": step, "metrics": {"acc": 0.1 * i + 0.01 * step}},
                headers=auth,
            )
        trials.append((trial, auth))
    return trials


def test_a_delete_racing_the_dashboards_reads_answers_404_never_500(url):
    statuses: list[int] = []
    with httpx.Client(base_url=url, timeout=60) as http:
        for round_ in range(6):
            name = f"racing-{round_}"
            for trial, auth in _study_with_trials(http, name)[:4]:
                http.post(
                    f"/api/v1/studies/{name}/trials/{trial['number']}/complete",
                    json={"metrics": {"acc": 0.5}},
                    headers=auth,
                )
            stop = threading.Event()

            def read(path: str, name: str = name, stop: threading.Event = stop) -> None:
                with httpx.Client(base_url=url, timeout=60) as reader:
                    while not stop.is_set():
                        statuses.append(reader.get(path.format(s=name)).status_code)

            with ThreadPoolExecutor(len(READS)) as pool:
                for path in READS:
                    pool.submit(read, path)
                threading.Event().wait(0.3)
                assert http.delete(f"/api/v1/studies/{name}").status_code == 204
                threading.Event().wait(0.3)
                stop.set()
    assert len(statuses) >= 300
    assert set(statuses) <= {200, 404}, sorted(set(statuses))
    assert 404 in statuses and 200 in statuses


def test_the_last_two_trials_ending_at_once_complete_the_study(url):
    with httpx.Client(base_url=url, timeout=60) as http:
        for round_ in range(8):
            name = f"last-{round_}"
            trials = _study_with_trials(http, name, n=2, size=2)
            barrier = threading.Barrier(2)

            def finish(trial: dict, auth: dict, name: str = name, barrier=barrier) -> int:
                with httpx.Client(base_url=url, timeout=60) as own:
                    barrier.wait()
                    return own.post(
                        f"/api/v1/studies/{name}/trials/{trial['number']}/complete",
                        json={"metrics": {"acc": 0.5}},
                        headers=auth,
                    ).status_code

            with ThreadPoolExecutor(2) as pool:
                codes = list(pool.map(lambda ta: finish(*ta), trials))
            assert codes == [200, 200]
            study = http.get(f"/api/v1/studies/{name}").json()
            assert study["status"] == "completed", study["trial_counts"]
