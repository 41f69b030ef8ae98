"""Two ``hpo serve`` processes, each with its dispatcher, on one PostgreSQL and one Ray.

They share the running studies out through leases; neither runs more trials of a study at
once than its ``parallelism`` (checked from the run records' times), no attempt is dispatched
twice, and when one is killed (SIGKILL: no goodbye) the other carries its studies on: its
lost trials are retried and every study completes.
"""

from __future__ import annotations

import re
import signal
import time
from collections import Counter
from datetime import datetime

import httpx
import pytest

from tests._servers import Serving, hpo_serve_process
from tests.test_dispatch import _max_overlap, synthetic_study

STUDIES = ["alpha", "beta", "gamma", "delta"]
PARALLELISM = 2
ENV = {
    "HPO_LEASE_SECONDS": "3",  # a killed controller's studies pass on after 3 s
    "HPO_HEARTBEAT_TIMEOUT": "6",  # and its lost trials are retried after 6 s of silence
    "HPO_START_TIMEOUT": "15",  # one handed out but never started: after 15 s
    "HPO_REAP_INTERVAL": "1",
    "HPO_MIRROR": "false",
}
DISPATCHED = re.compile(r"trial (\S+)/(\d+) attempt (\d+) dispatched")


def _get(server: Serving, path: str, **params: object) -> dict:
    response = httpx.get(f"{server.url}{path}", params=params, timeout=30)
    response.raise_for_status()
    return dict(response.json())


def _runs(server: Serving, study: str) -> list[dict]:
    trials = _get(server, f"/api/v1/studies/{study}/trials", limit=1000)["data"]
    return [
        {**run, "number": t["number"]}
        for t in trials
        for run in _get(server, f"/api/v1/studies/{study}/trials/{t['number']}")["runs"]
    ]


def _holders(server: Serving) -> dict[str, str | None]:
    studies = _get(server, "/api/v1/studies", limit=100)["data"]
    return {s["name"]: (s["dispatch"] or {}).get("holder") for s in studies}


def _wait(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.mark.usefixtures("ray_cluster")
def test_two_controllers_share_studies_never_exceed_parallelism_and_survive_a_kill(
    fresh_postgres, tmp_path
):
    import ray

    address = ray.get_runtime_context().gcs_address
    args = ("--ray-address", address)
    options: dict = {"env": ENV, "timeout": 90}
    with (
        hpo_serve_process(fresh_postgres, *args, log_path=tmp_path / "a.log", **options) as a,
        hpo_serve_process(fresh_postgres, *args, log_path=tmp_path / "b.log", **options) as b,
    ):
        for name in STUDIES:
            spec = synthetic_study(
                name, budget={"max_trials": 4, "max_epochs": 4, "parallelism": PARALLELISM}
            )
            spec["workload"]["options"]["epoch_seconds"] = 0.4
            spec["resources"] = {"gpus_per_trial": 0, "cpus_per_trial": 0.25}
            assert httpx.post(f"{a.url}/api/v1/studies", json=spec).status_code == 201

        # both dispatch: the four studies are shared out, two each
        def shared() -> dict[str, str | None] | None:
            holders = _holders(a)
            counts = Counter(holders.values())
            return holders if None not in counts and sorted(counts.values()) == [2, 2] else None

        holders = _wait(shared, 60, "the studies to be shared out two and two")
        page = httpx.get(f"{a.url}/studies/alpha").text
        assert f"dispatched by {holders['alpha']}" in page

        # a's dispatcher holds two studies; kill a while their trials run
        a_name = next(h for h in holders.values() if h and f"-{a.proc.pid}-" in h)
        a_studies = sorted(s for s, h in holders.items() if h == a_name)
        _wait(
            lambda: all(
                any(r["state"] == "running" and r["last_step"] for r in _runs(b, s))
                for s in a_studies
            ),
            60,
            f"trials of {a_studies} running on controller a",
        )
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait()

        # b carries every study on to the end
        def all_done() -> bool:
            studies = _get(b, "/api/v1/studies", limit=100)["data"]
            return all(s["status"] == "completed" for s in studies)

        try:
            _wait(all_done, 120, "every study to complete on controller b")
        except AssertionError:
            states = {
                s["name"]: (s["status"], s["trial_counts"], s["dispatch"])
                for s in _get(b, "/api/v1/studies", limit=100)["data"]
            }
            raise AssertionError(f"{states}\n--- b's log:\n{b.output()[-6000:]}") from None
        runs = {name: _runs(b, name) for name in STUDIES}
        studies = {name: _get(b, f"/api/v1/studies/{name}") for name in STUDIES}
        log_a, log_b = a.output(), b.output()

    assert re.search(r"took .*" + re.escape(a_studies[0]), log_b), "b took a's studies"
    lost_and_retried = 0
    for name in STUDIES:
        counts = studies[name]["trial_counts"]
        assert counts["completed"] == 4, (name, counts)
        intervals = [
            (datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["finished_at"]), "")
            for r in runs[name]
        ]
        assert _max_overlap(intervals) <= PARALLELISM, f"{name}: more than {PARALLELISM} at once"
        lost_and_retried += sum(r["failure_kind"] == "heartbeat" for r in runs[name])

    # every attempt was dispatched once, by one of the two controllers
    dispatched = Counter(DISPATCHED.findall(log_a) + DISPATCHED.findall(log_b))
    assert dispatched and max(dispatched.values()) == 1, dispatched.most_common(3)
    assert lost_and_retried >= 1, "a's trials in flight died with it and were retried"
