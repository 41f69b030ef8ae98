"""A clear answer for every input a caller sends, on both databases: NUL characters, lone
surrogates, non-finite numbers, integers beyond the columns, non-ASCII digits, trailing
newlines. Each answers 422 or 404, says what was wrong, and writes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import make_spec, row_counts

BIG = 2**31  # one past what an INTEGER column holds
HUGE = 2**63  # one past what a BIGINT holds


@pytest.fixture
def trial(api) -> dict[str, Any]:
    assert api.post("/api/v1/studies", json=make_spec()).status_code == 201
    resp = api.post("/api/v1/studies/s1/trials")
    assert resp.status_code == 201
    body = resp.json()
    body["auth"] = {"Authorization": f"Bearer {body['token']}"}
    return body


def _send(api, trial, method: str, path: str, body: Any = None, raw: str | None = None):
    path = path.format(n=trial["number"])
    headers = dict(trial["auth"])
    if raw is not None:
        headers["Content-Type"] = "application/json"
        return api.request(method, path, content=raw, headers=headers)
    return api.request(method, path, json=body, headers=headers)


T = "/api/v1/studies/s1/trials/{n}"
CASES = [
    # (method, path, json body, raw body, status, words the detail must hold)
    ("POST", "/api/v1/studies/s1/trials", {"worker": "w\x00"}, None, 422, "control characters"),
    ("POST", "/api/v1/studies/s1/trials", None, '{"worker": "\\ud800"}', 422, "surrogate"),
    (
        "POST",
        f"{T}/reports",
        {"step": 1, "metrics": {"acc": 0.5, "a\x00b": 1}},
        None,
        422,
        "control characters",
    ),
    ("POST", f"{T}/reports", {"step": BIG, "metrics": {"acc": 0.5}}, None, 422, "step"),
    ("POST", f"{T}/reports", None, '{"step": 1e400, "metrics": {"acc": 0.5}}', 422, "step"),
    ("POST", f"{T}/reports", None, '{"step": 1, "metrics": {"acc": 1e309}}', 422, "not finite"),
    ("POST", f"{T}/reports", None, '{"step": 1, "metrics": {"acc": -Infinity}}', 422, "not finite"),
    ("POST", f"{T}/complete", None, '{"metrics": {"acc": NaN}}', 422, "not finite"),
    ("POST", f"{T}/fail", {"reason": "oom\x00"}, None, 422, "control characters"),
    ("POST", f"{T}/fail", {"reason": "x", "kind": "crash\x00"}, None, 422, "unknown failure kind"),
    ("POST", f"{T}/heartbeat", {"gpus": "0\x00"}, None, 422, "control characters"),
    (
        "POST",
        f"/api/v1/studies/s1/trials/{BIG}/reports",
        {"step": 1, "metrics": {"acc": 1}},
        None,
        422,
        "number",
    ),
    ("GET", f"/api/v1/studies/s1/trials/{HUGE * 10}", None, None, 422, "number"),
    ("GET", "/api/v1/studies/%C2%B2", None, None, 404, "no study"),
    ("GET", "/api/v1/studies/99999999999999999999", None, None, 404, "no study"),
    ("GET", "/api/v1/studies/s1%0A", None, None, 404, "no study"),
    ("GET", "/api/v1/studies/s1%00", None, None, 404, "no study"),
    ("GET", f"/api/v1/studies?offset={HUGE}", None, None, 422, "offset"),
    ("GET", f"/api/v1/studies/s1/trials?offset={HUGE}", None, None, 422, "offset"),
    ("GET", "/api/v1/studies/s1/trials?limit=100000000000000000000", None, None, 422, "limit"),
    ("GET", "/api/v1/studies/s1/trials?state=weird", None, None, 422, "state"),
    ("GET", f"/api/v1/studies/s1/figures/compare?trials=0,{HUGE}", None, None, 422, "trials"),
    ("GET", "/api/v1/studies/s1/figures/compare?trials=0,%C2%B2", None, None, 422, "trials"),
    ("DELETE", "/api/v1/studies/%C2%B2", None, None, 404, "no study"),
]


def test_every_bad_input_is_refused_clearly_and_writes_nothing(api, db_url, trial):
    before = row_counts(db_url)
    for method, path, body, raw, status, words in CASES:
        resp = _send(api, trial, method, path, body, raw)
        assert resp.status_code == status, (method, path, body, raw, resp.text)
        assert resp.headers["content-type"].startswith("application/json")
        assert words in resp.json()["detail"], (path, resp.json())
    assert row_counts(db_url) == before
    # and the trial is whole: it still reports and completes
    ok = _send(api, trial, "POST", f"{T}/reports", {"step": 1, "metrics": {"acc": 0.5}})
    assert ok.status_code == 200 and ok.json() == {"should_stop": False}
    done = _send(api, trial, "POST", f"{T}/complete", {"metrics": {"acc": 0.6}})
    assert done.status_code == 200 and done.json()["state"] == "completed"


def test_a_refused_fail_leaves_the_trial_running_and_completable(api, db_url, trial):
    """Once a NUL in a fail reason answered 500 after Optuna had already failed the trial."""
    refused = _send(api, trial, "POST", f"{T}/fail", {"reason": "bad\x00reason"})
    assert refused.status_code == 422
    detail = api.get(T.format(n=trial["number"])).json()
    assert detail["state"] == "running" and detail["runs"][0]["error"] is None
    ok = _send(api, trial, "POST", f"{T}/fail", {"reason": "diverged", "kind": "nonfinite"})
    assert ok.status_code == 200 and ok.json()["state"] == "failed"


def test_pending_is_a_state_the_trial_filter_takes(api, trial):
    crashed = _send(api, trial, "POST", f"{T}/fail", {"reason": "lost", "kind": "crash"})
    assert crashed.json()["state"] == "pending"
    listed = api.get("/api/v1/studies/s1/trials", params={"state": "pending"})
    assert listed.status_code == 200
    assert [t["number"] for t in listed.json()["data"]] == [trial["number"]]


def test_the_vocabulary_endpoint_is_the_one_vocabulary(api):
    from hpo import vocabulary

    assert api.get("/api/v1/vocabulary").json() == vocabulary.as_json()
