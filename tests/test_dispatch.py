"""Studies run themselves: the dispatcher puts their trials on Ray with the GPUs they asked
for, retries lost workers, and stops them on cancel. A local Ray with two declared GPUs."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from datetime import datetime

import pytest
import ray

from hpo.schemas import TrialAssignment
from tests._live import LiveController
from workers.dispatcher import Dispatcher, InFlight

pytestmark = pytest.mark.usefixtures("ray_cluster")


def synthetic_study(name: str, **budget_and_more: object) -> dict:
    budget = {"max_trials": 6, "max_epochs": 3, "parallelism": 4}
    budget.update(budget_and_more.pop("budget", {}))  # type: ignore[arg-type]
    spec = {
        "name": name,
        "objective": {"metric": "val_accuracy"},
        "search_space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
        "algorithm": {"name": "random", "seed": 0},
        "budget": budget,
        "workload": {"name": "synthetic", "options": {"epoch_seconds": 0.3}},
        "resources": {"gpus_per_trial": 1, "cpus_per_trial": 0.5},
    }
    spec.update(budget_and_more)
    return spec


@pytest.fixture
def live(fresh_postgres):
    controller = LiveController(fresh_postgres).start()
    yield controller
    controller.stop()


def _intervals(runs: list[dict]) -> list[tuple[datetime, datetime, str]]:
    return [
        (
            datetime.fromisoformat(r["worker_started_at"]),
            datetime.fromisoformat(r["finished_at"]),
            r["gpus"],
        )
        for r in runs
        if r["worker_started_at"] and r["finished_at"]
    ]


def _max_overlap(intervals: list[tuple[datetime, datetime, str]]) -> int:
    events = sorted(
        [(s, 1) for s, _, _ in intervals] + [(e, -1) for _, e, _ in intervals],
        key=lambda ev: (ev[0], ev[1]),
    )
    level = peak = 0
    for _, delta in events:
        level += delta
        peak = max(peak, level)
    return peak


def test_whole_gpu_trials_run_two_at_a_time_each_on_its_own_gpu(live):
    assert live.api("POST", "/api/v1/studies", json=synthetic_study("gpu1")).status_code == 201
    study = live.wait_for("gpu1")
    assert study["trial_counts"]["completed"] == 6
    runs = live.runs("gpu1")
    assert {r["gpus"] for r in runs} <= {"0", "1"}, "each trial sees exactly one GPU id"
    intervals = _intervals(runs)
    assert len(intervals) == 6
    assert _max_overlap(intervals) == 2
    for i, (s1, e1, g1) in enumerate(intervals):
        for s2, e2, g2 in intervals[i + 1 :]:
            if s1 < e2 and s2 < e1:
                assert g1 != g2, "two concurrent trials shared a GPU"


def test_half_gpu_trials_run_four_at_once(live):
    spec = synthetic_study("gpu-half", budget={"max_trials": 8})
    spec["resources"] = {"gpus_per_trial": 0.5, "cpus_per_trial": 0.5}
    spec["workload"]["options"]["epoch_seconds"] = 1.0
    assert live.api("POST", "/api/v1/studies", json=spec).status_code == 201
    live.wait_for("gpu-half")
    runs = live.runs("gpu-half")
    assert {r["gpus"] for r in runs} <= {"0", "1"}
    assert _max_overlap(_intervals(runs)) == 4


def _pid(run: dict) -> int | None:
    worker = (run.get("worker") or "").split(" node ")[0]  # host:pid node <ray node id>
    host, _, pid = worker.rpartition(":")
    return int(pid) if host and pid.isdigit() else None


def _wait_running(live: LiveController, study: str, count: int, min_step: int = 1) -> list[dict]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        runs = [
            r
            for r in live.runs(study)
            if r["state"] == "running" and _pid(r) and (r["last_step"] or 0) >= min_step
        ]
        if len(runs) >= count:
            return runs
        time.sleep(0.2)
    raise AssertionError(f"{count} trials of {study} never ran at once")


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs; a zombie waiting for the raylet to reap it does not."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _ps(pids: list[int]) -> str:
    return subprocess.run(
        ["ps", "-o", "pid,stat,etime,cmd", "-p", ",".join(map(str, pids))],
        capture_output=True,
        text=True,
        check=False,
    ).stdout


def test_a_killed_worker_is_retried_and_the_study_completes(live):
    spec = synthetic_study("killed", budget={"max_trials": 3, "max_epochs": 4, "parallelism": 2})
    spec["workload"]["options"]["epoch_seconds"] = 0.8
    live.api("POST", "/api/v1/studies", json=spec)
    victim = _wait_running(live, "killed", 1)[0]
    os.kill(_pid(victim), signal.SIGKILL)
    study = live.wait_for("killed")
    assert study["n_trials"] == 3 and study["trial_counts"]["completed"] == 3
    detail = live.api("GET", f"/api/v1/studies/killed/trials/{victim['number']}").json()
    assert [(r["attempt"], r["state"], r["failure_kind"]) for r in detail["runs"]] == [
        (1, "failed", "crash"),
        (2, "completed", None),
    ]
    assert "died" in detail["runs"][0]["error"]
    assert [r["step"] for r in detail["reports"]] == [1, 2, 3, 4]


def test_cancel_stops_every_trial_in_flight_within_seconds(live):
    spec = synthetic_study("cancel-me", budget={"max_trials": 10, "max_epochs": 30})
    spec["workload"]["options"]["epoch_seconds"] = 1.0
    live.api("POST", "/api/v1/studies", json=spec)
    running = _wait_running(live, "cancel-me", 2)
    pids = [_pid(r) for r in running]
    started = time.monotonic()
    assert live.api("POST", "/api/v1/studies/cancel-me/cancel").status_code == 200
    while live.dispatcher.inflight and time.monotonic() - started < 10:
        time.sleep(0.1)
    assert not live.dispatcher.inflight, "Ray tasks still in flight 10 s after cancel"
    steps = {r["number"]: r["last_step"] for r in live.runs("cancel-me")}
    # Either the dispatcher killed the worker, or the runner heard 409 first and returned;
    # then Ray retires the worker (a GPU task's worker runs one task), which on a loaded
    # machine takes a few seconds more than the trial's own stop.
    while any(_alive(p) for p in pids) and time.monotonic() - started < 30:
        time.sleep(0.2)
    assert not any(_alive(p) for p in pids), f"worker processes outlived the cancel:\n{_ps(pids)}"
    assert {r["number"]: r["last_step"] for r in live.runs("cancel-me")} == steps, (
        "a trial went on reporting after its study was cancelled"
    )
    study = live.api("GET", "/api/v1/studies/cancel-me").json()
    assert study["status"] == "cancelled" and study["trial_counts"]["running"] == 0


def test_a_trial_that_raises_fails_with_its_traceback_and_the_study_goes_on(live):
    spec = synthetic_study("raises", budget={"max_trials": 4, "parallelism": 2})
    spec["search_space"] = {
        "mode": {"type": "categorical", "choices": ["ok", "bad"]},
        "x": {"type": "categorical", "choices": [0.2, 0.6]},
    }
    spec["algorithm"] = {"name": "grid"}
    spec["workload"]["options"]["raise_when"] = {"mode": ["bad"]}
    live.api("POST", "/api/v1/studies", json=spec)
    study = live.wait_for("raises")
    assert study["trial_counts"]["failed"] == 2 and study["trial_counts"]["completed"] == 2
    failed = live.api("GET", "/api/v1/studies/raises/trials", params={"state": "failed"}).json()
    detail = live.api("GET", f"/api/v1/studies/raises/trials/{failed['data'][0]['number']}").json()
    run = detail["runs"][-1]
    assert run["failure_kind"] == "exception" and len(detail["runs"]) == 1
    assert "ValueError: synthetic workload rejects mode='bad'" in run["error"]
    assert "Traceback" in run["error"]


def test_a_restarted_controller_finishes_the_study_without_losing_or_doubling_trials(
    fresh_postgres,
):
    first = LiveController(fresh_postgres).start()
    spec = synthetic_study("restart", budget={"max_trials": 6, "max_epochs": 4, "parallelism": 2})
    spec["workload"]["options"]["epoch_seconds"] = 0.7
    first.api("POST", "/api/v1/studies", json=spec)
    _wait_running(first, "restart", 2)
    first.stop(cancel=False)  # the controller dies; its Ray tasks go on, reporting into the void
    time.sleep(2)
    second = LiveController(fresh_postgres, port=first.port).start()
    try:
        study = second.wait_for("restart")
        assert study["n_trials"] == 6 and study["trial_counts"]["completed"] == 6
        runs = second.runs("restart")
        assert sorted(r["number"] for r in runs) == list(range(6)), "one attempt per trial"
        assert all(r["state"] == "completed" for r in runs)
    finally:
        second.stop()


def test_trials_whose_workers_died_with_the_controller_are_retried_after_restart(fresh_postgres):
    first = LiveController(fresh_postgres).start()
    spec = synthetic_study("orphans", budget={"max_trials": 4, "max_epochs": 4, "parallelism": 2})
    spec["workload"]["options"]["epoch_seconds"] = 0.7
    first.api("POST", "/api/v1/studies", json=spec)
    running = _wait_running(first, "orphans", 2)
    first.stop(cancel=False)
    for run in running:  # the local Ray went down with the controller
        os.kill(_pid(run), signal.SIGKILL)
    second = LiveController(fresh_postgres, port=first.port).start()
    try:
        study = second.wait_for("orphans")
        assert study["n_trials"] == 4 and study["trial_counts"]["completed"] == 4
        for run in running:
            detail = second.api("GET", f"/api/v1/studies/orphans/trials/{run['number']}").json()
            kinds = [r["failure_kind"] for r in detail["runs"]]
            assert kinds[0] == "heartbeat" and detail["runs"][-1]["state"] == "completed"
    finally:
        second.stop()


def test_an_operator_registered_workload_runs_with_params_and_reporter(fresh_postgres):
    live = LiveController(fresh_postgres, workloads={"mine": "tests.custom_workload:train"}).start()
    try:
        spec = synthetic_study("custom", budget={"max_trials": 3, "max_epochs": 3})
        spec["workload"] = {"name": "mine"}
        spec["objective"] = {"metric": "score"}
        spec["resources"] = {"gpus_per_trial": 0, "cpus_per_trial": 0.5}
        assert live.api("POST", "/api/v1/studies", json=spec).status_code == 201
        study = live.wait_for("custom")
        assert study["trial_counts"]["completed"] == 3
        best = live.api("GET", "/api/v1/studies/custom/best").json()
        assert best["value"] == pytest.approx(1 - abs(best["params"]["x"] - 0.5))
    finally:
        live.stop()


def test_a_study_too_big_for_the_cluster_waits_and_says_why(live, caplog):
    spec = synthetic_study("too-big")
    spec["resources"] = {"gpus_per_trial": 4, "cpus_per_trial": 0.5}
    with caplog.at_level("WARNING", logger="hpo.dispatcher"):
        assert live.api("POST", "/api/v1/studies", json=spec).status_code == 201
        time.sleep(2)
    study = live.api("GET", "/api/v1/studies/too-big").json()
    assert study["n_trials"] == 0 and study["status"] == "running"
    warnings = [r.getMessage() for r in caplog.records if "too-big" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "waiting for a Ray node with 4 GPUs and 0.5 CPUs" in warnings[0]
    assert "at most 2 GPUs and 2 CPUs each" in warnings[0]


class _Requests(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def by(self, agent: str) -> list[logging.LogRecord]:
        return [r for r in self.records if getattr(r, "user_agent", "").startswith(agent)]


@pytest.fixture
def access_log():
    """Every request the controller logs on ``hpo.access``, its DEBUG lines included."""
    logger = logging.getLogger("hpo.access")
    handler, level = _Requests(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_the_dispatcher_asks_only_when_an_ask_can_succeed_and_its_polls_stay_quiet(
    live, access_log
):
    spec = synthetic_study("quiet", budget={"max_trials": 5, "max_epochs": 2, "parallelism": 4})
    assert live.api("POST", "/api/v1/studies", json=spec).status_code == 201
    study = live.wait_for("quiet")
    time.sleep(1)  # a few more polls after the end
    assert study["trial_counts"]["completed"] == 5

    dispatcher = access_log.by("hpo-dispatcher/")
    asks = [r for r in dispatcher if r.method == "POST" and r.path.endswith("/trials")]
    assert [r.status for r in asks] == [201] * 5, "every ask of the dispatcher handed out a trial"
    assert not [r for r in dispatcher if r.status == 409]
    polls = [r for r in dispatcher if r.path.startswith("/api/v1/studies?status=running")]
    assert len(polls) >= 5
    workers = access_log.by("hpo-worker/")
    assert {r.path.rsplit("/", 1)[-1] for r in workers} >= {"heartbeat", "reports", "complete"}
    assert {r.levelno for r in dispatcher + workers} == {logging.DEBUG}, (
        "hpo's own polls and protocol calls must not show at the default level, INFO"
    )
    # and an ordinary caller's request is an INFO line
    live.api("GET", "/api/v1/studies/quiet")
    mine = [r for r in access_log.records if r.path == "/api/v1/studies/quiet"]
    assert [r.levelno for r in mine][-1:] == [logging.INFO]


@ray.remote(num_cpus=0)
def _still_returning() -> None:
    time.sleep(5)


def test_only_cancelled_or_deleted_studies_have_their_tasks_killed(live):
    """A study completes when its last trial completes, while that trial's task is still
    returning: killing it then could trip Ray's own bookkeeping (a task killed as it returns
    brings the driver down, the controller with it). So a completed study's last tasks end by
    themselves; a cancelled or deleted study's are killed."""
    done = synthetic_study("done", budget={"max_trials": 1, "max_epochs": 1})
    stopped = synthetic_study("stopped", budget={"max_trials": 1, "max_epochs": 30})
    for spec in (done, stopped):
        assert live.api("POST", "/api/v1/studies", json=spec).status_code == 201
    live.wait_for("done")
    assert live.api("POST", "/api/v1/studies/stopped/cancel").status_code == 200
    dispatcher = Dispatcher(live.url)  # not started: its in-flight tasks are the test's own
    try:
        for name in ("done", "stopped", "gone"):
            assignment = TrialAssignment(study=name, number=0, params={}, token="t")
            dispatcher.inflight[_still_returning.remote()] = InFlight(name, assignment, 0, 0)
        dispatcher._cancel_orphans({})
        left = {flight.study for flight in dispatcher.inflight.values()}
        assert left == {"done"}, "only the completed study's task is left to end by itself"
    finally:
        dispatcher.client.close()
