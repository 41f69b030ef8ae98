"""A new controller on the same database sees everything and carries the run on."""

from __future__ import annotations

import itertools

from fastapi.testclient import TestClient

from api import create_app
from hpo.client import Client
from hpo.settings import Settings
from tests.conftest import make_spec

GRID = {
    "a": {"type": "categorical", "choices": [1, 2, 3]},
    "b": {"type": "categorical", "choices": ["x", "y"]},
    "c": {"type": "int", "low": 0, "high": 1},
}


def _controller(url: str):
    app = create_app(Settings(database_url=url))
    return app, TestClient(app, base_url="http://localhost")


def test_a_half_run_study_continues_on_a_new_instance(db_url):
    app1, http1 = _controller(db_url)
    first = Client(http=http1)
    first.create_study(make_spec("restart", search_space=GRID, algorithm={"name": "grid"}))
    seen = []
    for i in range(6):
        trial = first.ask("restart")
        trial.report(1, {"acc": i / 10, "loss": 1 - i / 10})
        trial.complete({"acc": i / 10})
        seen.append(tuple(sorted(trial.params.items())))
    left_running = first.ask("restart")
    seen.append(tuple(sorted(left_running.params.items())))
    http1.close()
    app1.state.db.dispose()  # the first controller is gone

    app2, http2 = _controller(db_url)
    second = Client(http=http2)
    study = second.get_study("restart")
    assert study.n_trials == 7 and study.trial_counts["completed"] == 6
    assert study.trial_counts["running"] == 1
    assert second.trial("restart", 5).reports[0].metrics == {"acc": 0.5, "loss": 0.5}
    # the trial handed out by the first instance reports to the second with its token
    assert left_running._client is first
    left_running._client = second
    left_running.complete({"acc": 0.95})
    for _ in range(5):
        trial = second.ask("restart")
        trial.complete({"acc": 0.0})
        seen.append(tuple(sorted(trial.params.items())))
    expected = {
        tuple(sorted({"a": a, "b": b, "c": c}.items()))
        for a, b, c in itertools.product([1, 2, 3], ["x", "y"], [0, 1])
    }
    assert set(seen) == expected and len(seen) == 12
    final = second.get_study("restart")
    assert final.status == "completed" and final.best.value == 0.95
    http2.close()
    app2.state.db.dispose()
