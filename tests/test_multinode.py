"""Studies on a real Ray cluster of several nodes (all on this machine): a head node with no
CPUs and no GPUs, where the controller joins (``hpo serve --ray-address``), and worker nodes
that declare GPUs, added and removed while studies run.

The controller is a real ``hpo serve`` process; its workers are told to report to
``HPO_PUBLIC_URL``, a recording proxy on another port, not to the address it is bound to.
One cluster and one controller serve the whole module; each test adds the GPU nodes it needs
and takes them away again.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests._multinode import GpuCluster, RecordingProxy
from tests._servers import free_port, hpo_serve

T = TypeVar("T")


@pytest.fixture(scope="module")
def cluster() -> Iterator[GpuCluster]:
    gpu_cluster = GpuCluster()
    try:
        yield gpu_cluster
    finally:
        gpu_cluster.shutdown()


class Controller:
    def __init__(self, url: str, proxy: RecordingProxy, log: Path) -> None:
        self.url, self.proxy, self.log = url, proxy, log

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, f"{self.url}{path}", timeout=30, **kwargs)

    def study(self, name: str) -> dict:
        answer = self.api("GET", f"/api/v1/studies/{name}")
        assert answer.status_code == 200, answer.text
        return answer.json()

    def runs(self, name: str) -> list[dict]:
        trials = self.api("GET", f"/api/v1/studies/{name}/trials", params={"limit": 1000})
        return [
            {**run, "number": t["number"]}
            for t in trials.json()["data"]
            for run in self.api("GET", f"/api/v1/studies/{name}/trials/{t['number']}").json()[
                "runs"
            ]
        ]

    def wait_completed(self, name: str, timeout: float = 90) -> dict:
        return wait_for(
            lambda: (s := self.study(name))["status"] == "completed" and s,
            timeout,
            lambda: f"study {name} never completed: {self.study(name)['trial_counts']}",
        )


@pytest.fixture(scope="module")
def controller(
    cluster: GpuCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Controller]:
    tmp = tmp_path_factory.mktemp("multinode")
    proxy = RecordingProxy()
    port = free_port()
    proxy.start(f"http://127.0.0.1:{port}")
    env = {
        **cluster.env,
        "HPO_PUBLIC_URL": proxy.url,
        # a lost node is seen at once (Ray's NodeDiedError), so silence means a slow machine
        "HPO_HEARTBEAT_TIMEOUT": "30",
        "HPO_START_TIMEOUT": "90",
        "HPO_REAP_INTERVAL": "0.5",
    }
    log = tmp / "controller.log"
    args = ["--ray-address", cluster.address, "--log-level", "debug"]
    try:
        with hpo_serve(
            f"sqlite:///{tmp / 'hpo.db'}", *args, env=env, log_path=log, port=port, timeout=120
        ) as url:
            yield Controller(url, proxy, log)
    finally:
        proxy.stop()


def wait_for(check: Callable[[], T], timeout: float, failure: Callable[[], str]) -> T:
    """Poll ``check`` until it returns something true, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout} s: {failure()}")
        time.sleep(0.25)


def synthetic_study(name: str, *, trials: int, epochs: int, gpus: float, **more: Any) -> dict:
    return {
        "name": name,
        "objective": {"metric": "val_accuracy"},
        "search_space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
        "algorithm": {"name": "random", "seed": 0},
        "budget": {"max_trials": trials, "max_epochs": epochs, "parallelism": more.pop("par", 4)},
        "workload": {"name": "synthetic", "options": {"epoch_seconds": more.pop("epoch", 0.3)}},
        "resources": {"gpus_per_trial": gpus, "cpus_per_trial": more.pop("cpus", 0.5)},
    }


def submit(controller: Controller, spec: dict) -> None:
    answer = controller.api("POST", "/api/v1/studies", json=spec)
    assert answer.status_code == 201, answer.text


def node_of(run: dict) -> str:
    """The (12-character) Ray node id a worker recorded: ``host:pid node <id>``."""
    worker = run.get("worker") or ""
    assert " node " in worker, f"the run does not say which Ray node it ran on: {worker!r}"
    return worker.rpartition(" node ")[2]


def running_on(controller: Controller, name: str, nodes: set[str], count: int) -> list[dict]:
    """Wait until ``count`` trials of ``name`` have reported an epoch on ``nodes``."""

    def check() -> list[dict]:
        runs = [
            r
            for r in controller.runs(name)
            if r["state"] == "running"
            and (r["last_step"] or 0) >= 1
            and " node " in (r["worker"] or "")
            and node_of(r) in nodes
        ]
        return runs if len(runs) >= count else []

    return wait_for(check, 90, lambda: f"{count} trials of {name} never ran on {nodes}")


def waiting_reason(controller: Controller, name: str, expected: str) -> str:
    """The study says why it waits, in the API and on its page, and the controller logs it:
    wait until they say ``expected``; returns the API's reason."""
    wait_for(
        lambda: expected in ((controller.study(name).get("dispatch") or {}).get("waiting") or ""),
        30,
        lambda: f"{name} does not say it waits: {controller.study(name).get('dispatch')}",
    )
    reason = str(controller.study(name)["dispatch"]["waiting"])
    page = controller.api("GET", f"/studies/{name}")
    assert page.status_code == 200
    assert 'id="dispatch-status"' in page.text
    status = page.text.split('id="dispatch-status"', 1)[1][:2000]
    assert expected in status, "the study page does not say why the study waits"
    logged = re.findall(rf"study {re.escape(name)}: (waiting for .*)", controller.log.read_text())
    assert logged and expected in logged[-1], logged
    return reason


def overlapping(a: dict, b: dict) -> bool:
    start_a, end_a = (datetime.fromisoformat(a[k]) for k in ("worker_started_at", "finished_at"))
    start_b, end_b = (datetime.fromisoformat(b[k]) for k in ("worker_started_at", "finished_at"))
    return start_a < end_b and start_b < end_a


def test_trials_run_only_on_gpu_nodes_each_on_its_own_gpu_and_report_to_the_public_url(
    cluster: GpuCluster, controller: Controller
) -> None:
    gpu_nodes = {cluster.add_gpu_node(2)[:12], cluster.add_gpu_node(2)[:12]}
    try:
        submit(controller, synthetic_study("placed", trials=6, epochs=3, gpus=1))
        study = controller.wait_completed("placed")
    finally:
        cluster.remove_all()
    assert study["n_trials"] == 6 and study["trial_counts"]["completed"] == 6
    runs = controller.runs("placed")
    assert [r["state"] for r in runs] == ["completed"] * 6, "one attempt per trial, no retries"
    nodes = {node_of(r) for r in runs}
    assert cluster.head_id[:12] not in nodes, "a trial ran on the head node, which has no GPU"
    # four trials at once need both nodes' two GPUs
    assert nodes == gpu_nodes, f"trials ran on {nodes}, the GPU nodes are {gpu_nodes}"
    assert {r["gpus"] for r in runs} <= {"0", "1"}, "each trial sees exactly one of its node's GPUs"
    for i, a in enumerate(runs):
        for b in runs[i + 1 :]:
            if node_of(a) == node_of(b) and overlapping(a, b):
                assert a["gpus"] != b["gpus"], (
                    f"trials {a['number']} and {b['number']} shared a GPU"
                )

    # the workers spoke to HPO_PUBLIC_URL (the proxy), and only there
    through_proxy = controller.proxy.protocol_calls("placed")
    for number in map(str, range(6)):
        actions = {action for n, action in through_proxy if n == number}
        assert actions >= {"heartbeat", "reports", "complete"}, (number, actions)
    pattern = re.compile(r"POST /api/v1/studies/placed/trials/(\d+)/(heartbeat|reports|complete) ")

    def all_through_proxy() -> bool:
        served = Counter(m.groups() for m in pattern.finditer(controller.log.read_text()))
        return served == Counter(through_proxy)

    wait_for(
        all_through_proxy, 10, lambda: "the controller served protocol calls the proxy did not see"
    )


def test_a_lost_node_retries_its_trials_and_the_study_completes_on_the_other(
    cluster: GpuCluster, controller: Controller
) -> None:
    lost, kept = cluster.add_gpu_node(2), cluster.add_gpu_node(2)
    try:
        submit(controller, synthetic_study("lost", trials=4, epochs=6, gpus=1, epoch=0.8))
        victims = running_on(controller, "lost", {lost[:12]}, 1)
        cluster.remove(lost)  # killed outright, as a machine that loses power
        study = controller.wait_completed("lost")
    finally:
        cluster.remove_all()
    assert study["n_trials"] == 4 and study["trial_counts"]["completed"] == 4
    runs = controller.runs("lost")
    on_lost = {r["number"] for r in runs if node_of(r) == lost[:12]}
    assert {v["number"] for v in victims} <= on_lost
    for number in on_lost:
        attempts = [r for r in runs if r["number"] == number]
        assert [(r["attempt"], r["state"], r["failure_kind"]) for r in attempts] == [
            (1, "failed", "node_lost"),
            (2, "completed", None),
        ], attempts
        assert "NodeDiedError" in attempts[0]["error"]
        assert node_of(attempts[1]) == kept[:12], "the retry ran on the node that is left"
    assert all(r["state"] == "completed" for r in runs if r["number"] not in on_lost)


def test_a_study_too_big_for_every_node_waits_until_a_node_that_fits_joins(
    cluster: GpuCluster, controller: Controller
) -> None:
    cluster.add_gpu_node(2)
    try:
        submit(controller, synthetic_study("big", trials=2, epochs=2, gpus=3, cpus=1, par=2))
        reason = waiting_reason(controller, "big", "waiting for a Ray node with 3 GPUs and 1 CPU")
        assert "have at most 2 GPUs and 2 CPUs each" in reason
        for _ in range(8):  # a few of the dispatcher's passes: it asks for nothing meanwhile
            study = controller.study("big")
            assert study["status"] == "running" and study["n_trials"] == 0
            time.sleep(0.25)
        big = cluster.add_gpu_node(4)
        study = controller.wait_completed("big")
    finally:
        cluster.remove_all()
    assert study["trial_counts"]["completed"] == 2
    assert not (study.get("dispatch") or {}).get("waiting")
    runs = controller.runs("big")
    assert {node_of(r) for r in runs} == {big[:12]}
    assert all(len(r["gpus"].split(",")) == 3 for r in runs), [r["gpus"] for r in runs]


def test_with_every_gpu_node_gone_the_study_waits_and_a_new_node_finishes_it(
    cluster: GpuCluster, controller: Controller
) -> None:
    first = cluster.add_gpu_node(2)
    try:
        submit(
            controller, synthetic_study("orphaned", trials=3, epochs=6, gpus=1, epoch=0.8, par=3)
        )
        # three may run at once, but the node has two GPUs: the dispatcher asks for two
        victims = running_on(controller, "orphaned", {first[:12]}, 2)
        cluster.remove(first, graceful=True)  # as `ray stop` on the node would
        waiting_reason(controller, "orphaned", "none of its 1 alive node has a GPU")
        for _ in range(12):  # it waits, and never fails a trial for want of a node
            study = controller.study("orphaned")
            assert study["status"] == "running"
            counts = study["trial_counts"]
            assert study["n_trials"] == 2 and counts["failed"] == 0 and counts["completed"] == 0
            time.sleep(0.25)
        late = cluster.add_gpu_node(3)  # the two retries and the last trial, at once
        study = controller.wait_completed("orphaned")
    finally:
        cluster.remove_all()
    assert study["n_trials"] == 3 and study["trial_counts"]["completed"] == 3
    assert not (study.get("dispatch") or {}).get("waiting")
    runs = controller.runs("orphaned")
    for victim in victims:
        attempts = [r for r in runs if r["number"] == victim["number"]]
        assert [(r["attempt"], r["failure_kind"]) for r in attempts] == [
            (1, "node_lost"),
            (2, None),
        ], attempts
        assert node_of(attempts[1]) == late[:12] and attempts[1]["state"] == "completed"
