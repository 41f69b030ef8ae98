"""Leases: which dispatcher runs which study, when several controllers share one database.

Each running study is held by one dispatcher at a time; the studies are shared out among the
dispatchers seen lately; a dispatcher that stops renewing loses its studies when the leases run
out, and one that stops cleanly gives them back at once. The study read and its page say who
holds a study and why its trials wait. Both databases, through the real app.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from hpo import service
from hpo.storage import utcnow
from tests.conftest import make_spec

TTL = 10.0


def _create(api, *names: str) -> None:
    for name in names:
        assert api.post("/api/v1/studies", json=make_spec(name)).status_code == 201


def _claim(app, holder: str, studies: list[str], at=None, **kwargs) -> list[str]:
    grant = service.claim_studies(
        app.state.db, holder=holder, studies=studies, ttl_seconds=TTL, now=at, **kwargs
    )
    return grant.studies


def test_one_dispatcher_holds_every_running_study_it_can_run(api, app):
    _create(api, "a", "b", "c")
    assert _claim(app, "d1", ["a", "b", "c"]) == ["a", "b", "c"]
    assert _claim(app, "d1", ["a", "b", "c"]) == ["a", "b", "c"]  # renewed
    assert _claim(app, "d2", ["a", "b", "c"]) == []  # held: the second gets none yet
    study = api.get("/api/v1/studies/a").json()
    assert study["dispatch"]["holder"] == "d1" and study["dispatch"]["waiting"] is None


def test_the_running_studies_are_shared_out_among_the_dispatchers_seen(api, app):
    _create(api, "a", "b", "c", "d")
    names = ["a", "b", "c", "d"]
    assert _claim(app, "d1", names) == names
    assert _claim(app, "d2", names) == []  # d2 is seen now: d1 is over its share of 2
    assert _claim(app, "d1", names) == ["a", "b"]  # gives back the rest
    assert _claim(app, "d2", names) == ["c", "d"]
    holders = {n: api.get(f"/api/v1/studies/{n}").json()["dispatch"]["holder"] for n in names}
    assert holders == {"a": "d1", "b": "d1", "c": "d2", "d": "d2"}


def test_a_dispatcher_claims_only_the_studies_it_can_run(api, app):
    _create(api, "a", "b")
    assert _claim(app, "d1", ["b", "not-a-study"]) == ["b"]
    assert _claim(app, "d2", ["a", "b"]) == ["a"]


def test_a_lease_not_renewed_passes_to_another_dispatcher_when_it_runs_out(api, app):
    _create(api, "a")
    start = utcnow()
    assert _claim(app, "d1", ["a"], at=start) == ["a"]
    assert _claim(app, "d2", ["a"], at=start + timedelta(seconds=TTL - 1)) == []
    later = start + timedelta(seconds=TTL + 1)
    assert _claim(app, "d2", ["a"], at=later) == ["a"]  # d1 went silent
    assert _claim(app, "d1", ["a"], at=later) == []  # and finds it taken when it comes back


def test_a_dispatcher_that_stops_gives_its_studies_back_at_once(api, app, client):
    _create(api, "a", "b")
    assert client.claim_studies("d1", ["a", "b"], ttl_seconds=TTL).studies == ["a", "b"]
    assert client.release_studies("d1") == 2
    assert api.get("/api/v1/studies/a").json()["dispatch"] is None
    assert client.claim_studies("d2", ["a", "b"], ttl_seconds=TTL).studies == ["a", "b"]


def test_why_trials_wait_shows_with_the_study_and_on_its_page(api, app):
    _create(api, "big")
    reason = "waiting for a Ray node with 4 GPUs and 1 CPU for one trial: <none> has a GPU"
    _claim(app, "d1", ["big"], waiting={"big": reason, "other": "ignored"})
    study = api.get("/api/v1/studies/big").json()
    assert study["dispatch"]["waiting"] == reason
    page = api.get("/studies/big").text
    assert "dispatched by d1" in page
    assert "&lt;none&gt; has a GPU" in page and "<none>" not in page  # escaped
    _claim(app, "d1", ["big"])  # the next pass finds a node: no longer waiting
    assert api.get("/api/v1/studies/big").json()["dispatch"]["waiting"] is None


def test_an_ended_study_is_held_by_no_one(api, app):
    _create(api, "a")
    _claim(app, "d1", ["a"])
    assert api.post("/api/v1/studies/a/cancel").status_code == 200
    assert _claim(app, "d1", ["a"]) == []
    assert api.get("/api/v1/studies/a").json()["dispatch"] is None


def test_a_worker_key_limited_to_some_studies_claims_those_only(api, app):
    from hpo import service as svc

    _create(api, "batch-1", "other")
    _, key = svc.create_key(app.state.db, name="scoped", role="worker", studies=["batch-*"])
    body = {"holder": "d1", "studies": ["batch-1", "other"], "ttl_seconds": TTL}
    granted = api.post("/api/v1/leases", json=body, headers={"X-API-Key": key})
    assert granted.status_code == 200, granted.text
    assert granted.json()["studies"] == ["batch-1"]


@pytest.mark.parametrize(
    "body",
    [
        {"holder": "d\x00", "studies": []},
        {"holder": "", "studies": []},
        {"holder": "d1", "studies": ["a"], "ttl_seconds": 0},
        {"holder": "d1", "studies": ["a"], "waiting": {"a": "x" * 1001}},
        {"holder": "d1"},
    ],
)
def test_a_bad_claim_is_refused_and_writes_nothing(api, body):
    _create(api, "a")
    answer = api.post("/api/v1/leases", json=body)
    assert answer.status_code == 422, answer.text
    assert api.get("/api/v1/studies/a").json()["dispatch"] is None


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_dispatchers_claiming_at_once_all_succeed_and_end_sharing_the_studies(api, app):
    names = [f"s{i}" for i in range(6)]
    _create(api, *names)
    held: dict[str, list[list[str]]] = {"d1": [], "d2": [], "d3": []}

    def run(holder: str) -> None:
        for _ in range(15):
            held[holder].append(_claim(app, holder, names))

    threads = [threading.Thread(target=run, args=(h,)) for h in held]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = {h: set(_claim(app, h, names)) for h in held}
    for a in final:
        for b in final:
            assert a == b or not final[a] & final[b], final
    assert set().union(*final.values()) == set(names)  # all six held, two each
    assert sorted(len(v) for v in final.values()) == [2, 2, 2]
