"""Compute budgets: ``budget.max_total_epochs`` and ``budget.max_gpu_hours``.

The accounting rule is pure (hpo/budget.py) and tested alone; over the API, on both
databases, a study stops handing out trials within one trial of its epoch budget, retries
counted, never exceeding it, and completes; a GPU-hour study runs on a Ray with fake GPUs to
its budget; the progress shows in ``hpo study show``, the demo line and the study page.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from hpo.budget import (
    ComputeLimits,
    ComputeUsage,
    compute_finished,
    compute_limits,
    decide_compute,
    room_for_retry,
)
from hpo.spec import StudySpec
from tests._protocol import ask as _ask
from tests._protocol import post as _post
from tests.conftest import make_spec

# -- the pure rule -------------------------------------------------------------------------

EPOCHS = ComputeLimits(max_epochs=3, parallelism=2, max_total_epochs=10)
HOURS = ComputeLimits(max_epochs=4, parallelism=2, max_device_seconds=100.0)


def _may(usage: ComputeUsage, limits: ComputeLimits, *, begun: bool = False) -> bool:
    return decide_compute(usage=usage, limits=limits, name="s", begun=begun).allowed


def test_a_new_trial_goes_out_only_if_it_fits_beside_those_in_flight_run_to_the_end():
    assert _may(ComputeUsage(), EPOCHS)
    # two in flight, one epoch each reported: they may use 2 x 2 more; 2 + 4 + 3 <= 10
    assert _may(ComputeUsage(epochs=2, in_flight=2, in_flight_epochs=2), EPOCHS)
    # three in flight: 3 + 6 + 3 > 10
    assert not _may(ComputeUsage(epochs=3, in_flight=3, in_flight_epochs=3), EPOCHS)
    # 7 spent by trials that ended (pruned early, retries...): exactly one more fits
    assert _may(ComputeUsage(epochs=7), EPOCHS)
    refusal = decide_compute(usage=ComputeUsage(epochs=8), limits=EPOCHS, name="s")
    assert not refusal.allowed
    assert "budget.max_total_epochs (8 of 10 spent)" in refusal.reason
    assert "no room for one more trial of 3 epochs" in refusal.reason


def test_a_retry_already_begun_goes_out_until_the_budget_is_all_spent():
    crowded = ComputeUsage(epochs=9, in_flight=1, in_flight_epochs=0)
    assert not _may(crowded, EPOCHS) and _may(crowded, EPOCHS, begun=True)
    spent = ComputeUsage(epochs=10, in_flight=1)
    assert not _may(spent, EPOCHS, begun=True)
    assert "is all spent" in decide_compute(usage=spent, limits=EPOCHS, name="s").reason


def test_a_failed_attempt_is_retried_only_if_a_whole_attempt_still_fits():
    assert room_for_retry(usage=ComputeUsage(epochs=7), limits=EPOCHS) is None
    why = room_for_retry(usage=ComputeUsage(epochs=5, in_flight=1), limits=EPOCHS)  # 5+3+3
    assert why is not None and "max_total_epochs (5 of 10 spent)" in why
    # GPU-hours are an estimate: a retry only needs them not all spent
    assert room_for_retry(usage=ComputeUsage(epochs=4, device_seconds=99.0), limits=HOURS) is None
    assert room_for_retry(usage=ComputeUsage(epochs=4, device_seconds=100.0), limits=HOURS)


def test_gpu_hours_are_estimated_from_the_cost_per_epoch_seen_so_far():
    # before any epoch: the first `parallelism` trials go, no more
    assert _may(ComputeUsage(in_flight=1), HOURS)
    assert not _may(ComputeUsage(in_flight=2, device_seconds=3.0), HOURS)
    # 5 s per epoch: one in flight at epoch 2 (2 more = 10 s), one more trial (20 s)
    seen = ComputeUsage(epochs=8, device_seconds=40.0, in_flight=1, in_flight_epochs=2)
    assert _may(seen, HOURS)  # 40 + 10 + 20 <= 100
    dearer = ComputeUsage(epochs=8, device_seconds=80.0, in_flight=1, in_flight_epochs=2)
    refusal = decide_compute(usage=dearer, limits=HOURS, name="s")  # 10 s/epoch: 80+20+40
    assert not refusal.allowed
    assert "budget.max_gpu_hours (0.02222 of 0.02778 GPU-hours spent)" in refusal.reason


def test_a_study_is_done_when_nothing_runs_and_no_trial_fits():
    assert not compute_finished(usage=ComputeUsage(epochs=7), limits=EPOCHS, name="s")
    assert compute_finished(usage=ComputeUsage(epochs=8), limits=EPOCHS, name="s")
    assert not compute_finished(usage=ComputeUsage(epochs=8, in_flight=1), limits=EPOCHS, name="s")
    unlimited = ComputeLimits(max_epochs=3, parallelism=1)
    assert not compute_finished(usage=ComputeUsage(epochs=10**6), limits=unlimited, name="s")


def test_a_study_without_gpus_counts_cpu_hours():
    spec = StudySpec.model_validate(
        make_spec(
            budget={"max_epochs": 3, "max_gpu_hours": 2},
            resources={"gpus_per_trial": 0, "cpus_per_trial": 4},
        )
    )
    limits = compute_limits(spec)
    assert (limits.device, limits.max_device_seconds) == ("CPU", 7200.0)


# -- the spec ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("budget", "message"),
    [
        (
            {"max_epochs": 5, "max_total_epochs": 3},
            "max_total_epochs is 3, but it must be at least max_epochs (5)",
        ),
        (
            {"max_total_epochs": 0},
            "budget.max_total_epochs: Input should be greater than or equal to 1",
        ),
        ({"max_gpu_hours": 0}, "budget.max_gpu_hours: Input should be greater than 0 (got 0)"),
        ({"max_gpu_hours": "inf"}, "budget.max_gpu_hours: must be a finite number"),
    ],
)
def test_a_bad_compute_budget_is_refused_with_the_reason_and_nothing_is_stored(
    api, budget, message
):
    resp = api.post("/api/v1/studies", json=make_spec(budget=budget))
    assert resp.status_code == 422, resp.text
    assert message in resp.json()["detail"]
    assert api.get("/api/v1/studies").json()["count"] == 0


# -- over the API, on both databases --------------------------------------------------------


def _run(api, trial, steps, end=None):
    for step in range(1, steps + 1):
        _post(api, trial, "reports", {"step": step, "metrics": {"acc": 0.1 * step}})
    if end == "complete":
        return _post(api, trial, "complete", {"metrics": {"acc": 0.1 * steps}})
    if end == "crash":
        return _post(api, trial, "fail", {"reason": "worker killed", "kind": "crash"})
    return None


def _study(api, study="s1"):
    return api.get(f"/api/v1/studies/{study}").json()


@pytest.mark.parametrize("algorithm", ["random", "bayesian"])
def test_an_epoch_budget_counts_retries_stops_within_a_trial_and_completes(api, algorithm):
    budget = {"max_epochs": 3, "max_total_epochs": 10, "parallelism": 2, "max_retries": 2}
    spec = make_spec(budget=budget, algorithm={"name": algorithm, "seed": 7})
    assert api.post("/api/v1/studies", json=spec).status_code == 201
    first = _ask(api)
    assert _run(api, first, 2, "crash")["state"] == "pending"  # 2 + 3 <= 10: retried
    assert _study(api)["budget_used"]["epochs"] == 2
    retry = _ask(api)
    assert (retry["number"], retry["attempt"]) == (first["number"], 2)
    _run(api, retry, 3, "complete")
    assert _study(api)["budget_used"]["epochs"] == 5  # both attempts count
    assert _study(api)["budget_used"]["room_for_a_trial"]
    second = _ask(api)  # 5 + 3 <= 10
    assert not _study(api)["budget_used"]["room_for_a_trial"]  # what the dispatcher reads
    refused = api.post("/api/v1/studies/s1/trials")  # 5 + 3 (in flight) + 3 > 10
    assert refused.status_code == 409
    assert "budget.max_total_epochs (5 of 10 spent)" in refused.json()["detail"]
    assert _study(api)["status"] == "running"  # the trial in flight finishes first
    _run(api, second, 1, "complete")  # stopped early: room for one more
    assert _study(api)["budget_used"]["room_for_a_trial"]
    third = _ask(api)
    _run(api, third, 3, "complete")
    study = _study(api)
    used = study["budget_used"]
    assert study["status"] == "completed"  # 9 spent: a tenth epoch holds no trial
    assert used["epochs"] == 9 and used["max_total_epochs"] == 10
    assert (used["trials"], used["max_trials"]) == (3, None)  # no max_trials: unlimited
    assert api.post("/api/v1/studies/s1/trials").status_code == 409


def test_asks_at_once_never_take_more_than_the_epoch_budget_holds(api, app):
    from concurrent.futures import ThreadPoolExecutor

    from hpo import service
    from hpo._errors import BudgetExhausted

    budget = {"max_epochs": 2, "max_total_epochs": 8, "parallelism": 8}
    api.post("/api/v1/studies", json=make_spec(budget=budget))

    def ask(_: int) -> str:
        try:
            service.ask(app.state.db, ref="s1")
            return "trial"
        except BudgetExhausted:
            return "refused"

    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(ask, range(12)))
    assert answers.count("trial") == 4  # four trials of 2 epochs fill 8
    assert _study(api)["n_trials"] == 4


def test_a_retry_that_would_overrun_the_epoch_budget_fails_the_trial_instead(api):
    budget = {"max_epochs": 3, "max_total_epochs": 6, "parallelism": 2}
    api.post("/api/v1/studies", json=make_spec(budget=budget))
    first, second = _ask(api), _ask(api)  # 0 + 3 + 3 <= 6
    failed = _run(api, first, 2, "crash")  # 2 spent + 3 in flight + 3 for a retry > 6
    assert failed["state"] == "failed"
    assert failed["runs"][-1]["error"] == (
        "worker killed; not retried: budget.max_total_epochs (2 of 6 spent) has no room for "
        "another attempt"
    )
    resent = api.post(
        f"/api/v1/studies/s1/trials/{first['number']}/fail",
        json={"reason": "worker killed", "kind": "crash"},
        headers=first["auth"],
    )
    assert resent.status_code == 200 and resent.json() == failed  # answered as the first was
    _run(api, second, 3, "complete")
    study = _study(api)
    assert study["status"] == "completed"
    assert study["budget_used"]["epochs"] == 5


def test_a_cpu_study_counts_cpu_hours_and_completes_when_they_are_spent(api):
    budget = {"max_epochs": 3, "max_gpu_hours": 1e-9, "max_retries": 2}  # 3.6 CPU-microseconds
    spec = make_spec(budget=budget, resources={"gpus_per_trial": 0, "cpus_per_trial": 2})
    api.post("/api/v1/studies", json=spec)
    trial = _ask(api)  # the first wave goes before any cost is known
    failed = _run(api, trial, 1, "crash")
    assert failed["state"] == "failed"
    assert "not retried: budget.max_gpu_hours" in failed["runs"][-1]["error"]
    assert "CPU-hours spent) is all spent" in failed["runs"][-1]["error"]
    study = _study(api)
    assert study["status"] == "completed"
    used = study["budget_used"]
    assert used["device"] == "CPU" and used["device_hours"] > 1e-9


def _backdate_runs(db_url: str, study: str, number: int, hours: float) -> None:
    """Move an attempt's start back ``hours``: as if it had run that long (no sleeping)."""
    from hpo.storage import Database

    db = Database(db_url, upgrade=False)
    try:
        with db.engine.begin() as conn:
            rows = conn.execute(
                text(
                    "SELECT r.id, r.started_at FROM hpo_trial_runs r JOIN hpo_studies s "
                    "ON s.id = r.study_id WHERE s.name = :s AND r.trial_number = :n "
                    "AND r.state = 'running'"
                ),
                {"s": study, "n": number},
            ).all()
            for run_id, started in rows:
                if isinstance(started, str):  # SQLite
                    started = datetime.fromisoformat(started)
                conn.execute(
                    text("UPDATE hpo_trial_runs SET started_at = :t WHERE id = :i"),
                    {"t": started - timedelta(hours=hours), "i": run_id},
                )
    finally:
        db.dispose()


def test_once_gpu_hours_are_spent_waiting_retries_are_cancelled_and_the_study_completes(
    api, db_url
):
    budget = {"max_epochs": 3, "max_gpu_hours": 1.0, "parallelism": 2, "max_retries": 2}
    spec = make_spec(budget=budget, resources={"gpus_per_trial": 1, "cpus_per_trial": 1})
    api.post("/api/v1/studies", json=spec)
    first, second = _ask(api), _ask(api)
    assert _run(api, first, 1, "crash")["state"] == "pending"  # a retry waits for a worker
    _backdate_runs(db_url, "s1", second["number"], hours=2)  # trial 1 has held its GPU 2 h
    refused = api.post("/api/v1/studies/s1/trials")
    assert refused.status_code == 409
    assert "budget.max_gpu_hours" in refused.json()["detail"]
    assert "is all spent" in refused.json()["detail"]
    cancelled = api.get(f"/api/v1/studies/s1/trials/{first['number']}").json()
    assert cancelled["state"] == "cancelled"
    assert "not retried" in cancelled["runs"][-1]["error"]
    assert _study(api)["status"] == "running"  # trial 1 still runs
    _run(api, second, 3, "complete")
    study = _study(api)
    assert study["status"] == "completed"
    assert study["budget_used"]["device_hours"] >= 2.0


# -- progress: the CLI, the demo line, the study page --------------------------------------


def test_the_demo_line_shows_progress_toward_every_limited_budget(client):
    from controller.demo import progress_line

    spec = make_spec(budget={"max_trials": 4, "max_epochs": 3, "max_total_epochs": 10})
    client.create_study(spec)
    trial = client.ask("s1")
    trial.report(1, {"acc": 0.5})
    trial.report(2, {"acc": 0.6})
    line = progress_line(client.get_study("s1"), elapsed=5)
    assert line.startswith("[  0/4]") and line.endswith("epochs 2/10")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A controller (no dispatcher) with a GPU-hour and epoch budgeted study, half run."""
    from hpo.client import Client
    from tests._live import LiveController

    db = tmp_path_factory.mktemp("budgets") / "hpo.db"
    live = LiveController(f"sqlite:///{db}").start(dispatch=False)
    client = Client(live.url)
    budget = {"max_trials": 8, "max_epochs": 3, "max_total_epochs": 12, "max_gpu_hours": 5}
    client.create_study(make_spec("budgeted", budget=budget, resources={"gpus_per_trial": 1}))
    for _ in range(2):
        trial = client.ask("budgeted")
        for step in (1, 2, 3):
            trial.report(step, {"acc": 0.2 * step})
        trial.complete({"acc": 0.6})
    yield live
    live.stop()


def test_study_show_prints_progress_toward_every_budget(site, capsys):
    from controller.cli import main

    capsys.readouterr()
    assert main(["study", "show", "budgeted", "--url", site.url]) == 0
    out = capsys.readouterr().out
    assert "12 epochs in all, 5 GPU-hours" in out
    used = next(line for line in out.splitlines() if line.startswith("used:"))
    assert "trials 2/8, epochs 6/12, GPU-hours " in used and "/5, wall " in used


def test_the_study_page_shows_the_budget_progress(site):
    from tests._browser import chromium

    with chromium() as browser:
        page = browser.new_page()
        page.goto(f"{site.url}/studies/budgeted")
        page.wait_for_selector("body[data-loaded='study']", timeout=30_000)
        row = page.locator("#budget-body tr[data-budget='epochs']")
        assert row.locator("td.used").inner_text() == "6 / 12"
        assert row.locator(".progress span").inner_text() == "50%"
        trials = page.locator("#budget-body tr[data-budget='trials'] td.used").inner_text()
        assert trials == "2 / 8"
        gpu = page.locator("#budget-body tr[data-budget='device-hours'] th").inner_text()
        assert gpu == "GPU-hours"
        wall = page.locator("#budget-body tr[data-budget='wall'] td.used").inner_text()
        assert wall.endswith("(no limit)")
        shots = Path(__file__).resolve().parent.parent / "test-output" / "screenshots"
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / "study_page_budget.png"), full_page=True)


# -- a GPU-hour budget on a Ray with fake GPUs ------------------------------------------------


@pytest.fixture
def live(ray_cluster, fresh_postgres):
    from tests._live import LiveController

    controller = LiveController(fresh_postgres).start()
    yield controller
    controller.stop()


def test_a_study_runs_to_its_gpu_hour_budget_on_ray(live):
    limit_hours = 0.004  # 14.4 GPU-seconds: a few trials of 3 epochs of 0.2 s, start-up included
    spec = {
        "name": "gpu-budget",
        "objective": {"metric": "val_accuracy"},
        "search_space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
        "algorithm": {"name": "random", "seed": 0},
        "budget": {"max_epochs": 3, "parallelism": 2, "max_gpu_hours": limit_hours},
        "workload": {"name": "synthetic", "options": {"epoch_seconds": 0.2}},
        "resources": {"gpus_per_trial": 1, "cpus_per_trial": 0.5},
    }
    assert live.api("POST", "/api/v1/studies", json=spec).status_code == 201
    study = live.wait_for("gpu-budget")
    runs = live.runs("gpu-budget")
    cost: dict[int, float] = {}  # GPU-seconds per trial, from its run records (1 GPU each)
    for run in runs:
        seconds = (
            datetime.fromisoformat(run["finished_at"]) - datetime.fromisoformat(run["started_at"])
        ).total_seconds()
        cost[run["number"]] = cost.get(run["number"], 0.0) + seconds
    spent, one_trial, limit = sum(cost.values()), max(cost.values()), limit_hours * 3600
    assert len(cost) >= 2
    assert limit - one_trial <= spent <= limit + one_trial, (spent, one_trial, cost)
    assert study["budget_used"]["device"] == "GPU"
    assert study["budget_used"]["device_hours"] * 3600 == pytest.approx(spent, abs=0.01)
    assert study["trial_counts"]["running"] == study["trial_counts"]["pending"] == 0
