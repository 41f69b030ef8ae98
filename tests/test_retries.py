"""A retry starts clean: its reports are judged on their own, never mixed with an earlier
attempt's steps; list, detail and Optuna's view agree; and resent calls are harmless."""

from __future__ import annotations

import pytest

from hpo import service
from tests._consistency import assert_mirrored, assert_whole
from tests.conftest import make_spec

ASHA = {"name": "asha", "seed": 0, "grace_period": 1, "reduction_factor": 3}


def _ask(api, study="s1"):
    resp = api.post(f"/api/v1/studies/{study}/trials")
    assert resp.status_code == 201, resp.text
    trial = resp.json()
    trial["auth"] = {"Authorization": f"Bearer {trial['token']}"}
    return trial


def _post(api, trial, action, body, study="s1"):
    return api.post(
        f"/api/v1/studies/{study}/trials/{trial['number']}/{action}",
        json=body,
        headers=trial["auth"],
    )


def _report(api, trial, step, acc):
    resp = _post(api, trial, "reports", {"step": step, "metrics": {"acc": acc}})
    assert resp.status_code == 200, resp.text
    return resp.json()["should_stop"]


def test_the_retry_is_judged_on_its_own_first_step(api, app):
    spec = make_spec(algorithm=ASHA, budget={"max_epochs": 9, "max_retries": 2})
    assert api.post("/api/v1/studies", json=spec).status_code == 201
    first, a, b = _ask(api), _ask(api), _ask(api)
    assert not _report(api, a, 1, 0.5) and not _report(api, b, 1, 0.6)
    # attempt 1 of `first` passes rung 0 (step 1) and rung 1 (step 3) with fine values
    for step, acc in ((1, 0.9), (2, 0.91), (3, 0.92), (4, 0.93)):
        assert not _report(api, first, step, acc)
    crashed = _post(api, first, "fail", {"reason": "node died", "kind": "crash"})
    assert crashed.json()["state"] == "pending"
    retry = _ask(api)
    assert (retry["number"], retry["attempt"]) == (first["number"], 2)
    # attempt 2 is judged at rung 0 with its own value: the worst of three, so it stops.
    # Judged on attempt 1's history (it had passed rungs 0 and 1), it would have gone on.
    assert _report(api, retry, 1, 0.1) is True
    detail = api.get(f"/api/v1/studies/s1/trials/{first['number']}").json()
    listed = {t["number"]: t for t in api.get("/api/v1/studies/s1/trials").json()["data"]}
    row = listed[first["number"]]
    assert detail["state"] == row["state"] == "pruned"
    assert detail["last_step"] == row["last_step"] == 1
    assert detail["attempts"] == row["attempts"] == 2
    assert [r["step"] for r in detail["reports"]] == [1]  # the latest attempt's
    assert [[r["step"] for r in run["reports"]] for run in detail["runs"]] == [[1, 2, 3, 4], [1]]
    # the trial's page draws every attempt's curve
    figure = api.get(f"/api/v1/studies/s1/trials/{first['number']}/figures").json()["acc"]
    assert [(t["name"], t["x"]) for t in figure["data"]] == [
        ("attempt 1 (crash)", [1, 2, 3, 4]),
        ("attempt 2", [1]),
    ]
    assert_whole(app.state.db, "s1")
    assert_mirrored(app.state.db, "s1")  # Optuna's trial holds {1: 0.1}, and is PRUNED


def test_resent_protocol_calls_answer_as_the_first_did(api, db_url):
    from tests.conftest import row_counts

    spec = make_spec(algorithm=ASHA, budget={"max_epochs": 9, "max_retries": 1})
    api.post("/api/v1/studies", json=spec)
    trial, other = _ask(api), _ask(api)
    assert not _report(api, trial, 1, 0.7)
    before = row_counts(db_url)
    assert _report(api, trial, 1, 0.7) is False  # the same report again: delivered, not 409
    assert row_counts(db_url) == before
    changed = _post(api, trial, "reports", {"step": 1, "metrics": {"acc": 0.2}})
    assert changed.status_code == 409 and "steps must increase" in changed.json()["detail"]
    done = _post(api, trial, "complete", {"metrics": {"acc": 0.8}})
    again = _post(api, trial, "complete", {"metrics": {"acc": 0.8}})
    assert again.status_code == 200 and again.json() == done.json()
    assert _post(api, trial, "complete", {"metrics": {"acc": 0.1}}).status_code == 409
    failed = _post(api, other, "fail", {"reason": "lost", "kind": "crash"})
    resent = _post(api, other, "fail", {"reason": "lost", "kind": "crash"})
    assert resent.status_code == 200 and resent.json() == failed.json()
    assert resent.json()["attempts"] == 2, "a resent fail must not retry twice"


@pytest.mark.parametrize("kind", ["crash", "heartbeat", "node_lost"])
def test_each_infrastructure_failure_is_retried(api, kind):
    api.post("/api/v1/studies", json=make_spec(budget={"max_retries": 1}))
    trial = _ask(api)
    assert _post(api, trial, "fail", {"reason": "x", "kind": kind}).json()["state"] == "pending"


def test_the_reaper_resumes_counting_after_a_database_outage(app, api):
    """Silence is counted from the end of an outage: workers could not report either."""
    from datetime import timedelta

    from hpo.storage import utcnow

    api.post("/api/v1/studies", json=make_spec())
    trial = _ask(api)
    _post(api, trial, "heartbeat", {"worker": "w:1"})
    db = app.state.db
    back = utcnow() + timedelta(seconds=100)  # the database came back then
    later = back + timedelta(seconds=20)  # 120 s after the heartbeat, 20 s after the outage
    assert service.reap(db, heartbeat_timeout=30, now=later, silent_since=back) == 0
    assert service.reap(db, heartbeat_timeout=30, now=back + timedelta(seconds=31)) == 1
