"""Two controller processes on one PostgreSQL: no grid point handed out twice, no trial
finished twice (row locks, not luck)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import optuna
import pytest

from hpo import service
from hpo.storage import Database
from tests._servers import controller
from tests.conftest import make_spec

GRID = {
    "a": {"type": "int", "low": 1, "high": 4},
    "b": {"type": "categorical", "choices": ["x", "y", "z"]},
    "c": {"type": "float", "low": 0.0, "high": 0.1, "step": 0.1},
}


@pytest.fixture
def two_controllers(fresh_postgres):
    with controller(fresh_postgres) as first, controller(fresh_postgres) as second:
        yield first, second


def test_concurrent_asks_on_two_controllers_never_repeat_a_grid_point(two_controllers):
    first, second = two_controllers
    resp = httpx.post(
        f"{first}/api/v1/studies",
        json=make_spec("race", search_space=GRID, algorithm={"name": "grid"}, budget={}),
    )
    assert resp.status_code == 201 and resp.json()["size"] == 24

    def ask(i: int) -> httpx.Response:
        base = first if i % 2 else second
        return httpx.post(f"{base}/api/v1/studies/race/trials", timeout=60)

    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(ask, range(30)))
    granted = [r.json() for r in answers if r.status_code == 201]
    refused = [r for r in answers if r.status_code == 409]
    assert len(granted) == 24 and len(refused) == 6, [r.status_code for r in answers]
    points = {tuple(sorted(t["params"].items())) for t in granted}
    assert len(points) == 24
    assert sorted(t["number"] for t in granted) == list(range(24))


def test_concurrent_completes_on_two_controllers_finish_a_trial_once(
    two_controllers, fresh_postgres
):
    first, second = two_controllers
    httpx.post(f"{first}/api/v1/studies", json=make_spec("once"))
    trial = httpx.post(f"{first}/api/v1/studies/once/trials").json()
    auth = {"Authorization": f"Bearer {trial['token']}"}

    def complete(i: int) -> httpx.Response:
        base = first if i % 2 else second
        return httpx.post(
            f"{base}/api/v1/studies/once/trials/{trial['number']}/complete",
            json={"metrics": {"acc": i / 100}},
            headers=auth,
            timeout=60,
        )

    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(complete, range(10)))
    codes = sorted(r.status_code for r in answers)
    assert codes == [200] + [409] * 9, codes
    winner = next(r.json() for r in answers if r.status_code == 200)
    mirror = Database(fresh_postgres, upgrade=False)
    service.sync_optuna(mirror, wait=30)  # the controllers' mirrors follow in the background
    mirror.dispose()
    frozen = optuna.load_study(study_name="once", storage=fresh_postgres).trials[0]
    assert frozen.state == optuna.trial.TrialState.COMPLETE
    assert frozen.value == pytest.approx(winner["value"])
    study = httpx.get(f"{second}/api/v1/studies/once").json()
    assert study["trial_counts"]["completed"] == 1 and study["trial_counts"]["running"] == 0
