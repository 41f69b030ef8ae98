"""Retries, lost workers and time budgets, on both backends (no Ray needed: the controller's
side of it, driven over REST and through the reaper)."""

from __future__ import annotations

from datetime import timedelta

from hpo import service
from hpo.storage import utcnow
from tests.conftest import make_spec


def _ask(api, study="s1"):
    resp = api.post(f"/api/v1/studies/{study}/trials")
    assert resp.status_code == 201, resp.text
    trial = resp.json()
    trial["auth"] = {"Authorization": f"Bearer {trial['token']}"}
    return trial


def _post(api, trial, action, body=None, study="s1", auth=None):
    return api.post(
        f"/api/v1/studies/{study}/trials/{trial['number']}/{action}",
        json=body,
        headers=trial["auth"] if auth is None else auth,
    )


def _detail(api, number, study="s1"):
    return api.get(f"/api/v1/studies/{study}/trials/{number}").json()


def test_a_crashed_worker_is_retried_with_the_same_params_and_a_new_token(api):
    api.post("/api/v1/studies", json=make_spec(budget={"max_trials": 2, "max_retries": 2}))
    first = _ask(api)
    _post(api, first, "reports", {"step": 1, "metrics": {"acc": 0.3}})
    crashed = _post(api, first, "fail", {"reason": "worker died", "kind": "crash"})
    assert crashed.status_code == 200 and crashed.json()["state"] == "pending"
    retry = _ask(api)
    assert (retry["number"], retry["attempt"]) == (first["number"], 2)
    assert retry["params"] == first["params"]
    old = _post(api, first, "reports", {"step": 2, "metrics": {"acc": 0.4}})
    assert old.status_code == 403, "the old attempt must stop: its token is no longer valid"
    assert _post(api, retry, "reports", {"step": 1, "metrics": {"acc": 0.5}}).status_code == 200
    assert _post(api, retry, "complete", {"metrics": {"acc": 0.6}}).status_code == 200
    detail = _detail(api, first["number"])
    assert detail["state"] == "completed" and detail["attempts"] == 2
    assert [(r["attempt"], r["state"], r["failure_kind"]) for r in detail["runs"]] == [
        (1, "failed", "crash"),
        (2, "completed", None),
    ]
    assert detail["reports"] == [{"step": 1, "metrics": {"acc": 0.5}}]  # the latest attempt's
    study = api.get("/api/v1/studies/s1").json()
    assert study["n_trials"] == 1, "a retry is not a new trial"
    assert study["trial_counts"]["completed"] == 1


def test_retries_stop_at_max_retries(api):
    api.post("/api/v1/studies", json=make_spec(budget={"max_trials": 1, "max_retries": 1}))
    first = _ask(api)
    _post(api, first, "fail", {"reason": "killed", "kind": "crash"})
    second = _ask(api)
    final = _post(api, second, "fail", {"reason": "killed again", "kind": "crash"})
    assert final.json()["state"] == "failed"
    study = api.get("/api/v1/studies/s1").json()
    assert study["status"] == "completed" and study["trial_counts"]["failed"] == 1
    assert api.post("/api/v1/studies/s1/trials").status_code == 409


def test_a_trial_that_raises_is_not_retried(api):
    api.post("/api/v1/studies", json=make_spec())
    trial = _ask(api)
    resp = _post(api, trial, "fail", {"reason": "Traceback ... ValueError", "kind": "exception"})
    assert resp.json()["state"] == "failed"
    assert _detail(api, trial["number"])["runs"][0]["failure_kind"] == "exception"
    assert _ask(api)["number"] == trial["number"] + 1


def test_an_unknown_failure_kind_is_422(api):
    api.post("/api/v1/studies", json=make_spec())
    trial = _ask(api)
    resp = _post(api, trial, "fail", {"reason": "?", "kind": "gremlins"})
    assert resp.status_code == 422 and "unknown failure kind 'gremlins'" in resp.json()["detail"]
    assert _detail(api, trial["number"])["state"] == "running"


def test_heartbeat_records_where_the_trial_runs(api):
    api.post("/api/v1/studies", json=make_spec())
    trial = _ask(api)
    beat = _post(api, trial, "heartbeat", {"worker": "node-7:4242", "gpus": "1"})
    assert beat.status_code == 200 and beat.json() == {"should_stop": False}
    run = _detail(api, trial["number"])["runs"][0]
    assert (run["worker"], run["gpus"]) == ("node-7:4242", "1")
    assert run["worker_started_at"] is not None
    assert _post(api, trial, "heartbeat", auth={}).status_code == 401
    api.post("/api/v1/studies/s1/cancel")
    assert _post(api, trial, "heartbeat").json() == {"should_stop": True}


def test_a_silent_worker_is_retried_by_the_reaper(api, app):
    api.post("/api/v1/studies", json=make_spec())
    trial = _ask(api)
    _post(api, trial, "heartbeat", {"worker": "w:1"})
    db = app.state.db
    assert service.reap(db, heartbeat_timeout=30) == 0
    later = utcnow() + timedelta(seconds=31)
    assert service.reap(db, heartbeat_timeout=30, now=later) == 1
    run = _detail(api, trial["number"])["runs"][0]
    assert run["failure_kind"] == "heartbeat" and "no heartbeat from worker w:1" in run["error"]
    assert _detail(api, trial["number"])["state"] == "pending"
    assert _ask(api)["attempt"] == 2


def test_a_worker_that_never_started_gets_the_start_timeout(api, app):
    api.post("/api/v1/studies", json=make_spec())
    trial = _ask(api)  # handed out, no heartbeat yet: queued on Ray, say
    db = app.state.db
    soon = utcnow() + timedelta(seconds=60)
    assert service.reap(db, heartbeat_timeout=30, start_timeout=300, now=soon) == 0
    late = utcnow() + timedelta(seconds=301)
    assert service.reap(db, heartbeat_timeout=30, start_timeout=300, now=late) == 1
    assert (
        "no worker started the trial within 301 s"
        in _detail(api, trial["number"])["runs"][0]["error"]
    )


def test_the_time_budget_ends_the_study_and_stops_its_trials(api, app):
    api.post("/api/v1/studies", json=make_spec(budget={"max_wall_seconds": 60}))
    trial = _ask(api)
    later = utcnow() + timedelta(seconds=61)
    assert service.reap(app.state.db, heartbeat_timeout=3600, now=later) == 1
    study = api.get("/api/v1/studies/s1").json()
    assert study["status"] == "completed" and study["trial_counts"]["cancelled"] == 1
    stop = _post(api, trial, "reports", {"step": 1, "metrics": {"acc": 0.1}})
    assert stop.json() == {"should_stop": True}
    assert _detail(api, trial["number"])["runs"][0]["failure_kind"] == "time_limit"
    assert api.post("/api/v1/studies/s1/trials").status_code == 409
