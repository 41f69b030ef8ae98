"""Out-of-memory-aware search: ``resources.on_oom: accumulate`` retries a trial that ran out
of GPU memory at half the batch with twice the gradient accumulation (the same effective
batch) down to a floor, every attempt shows the batch it trained with, and an out-of-memory
trial teaches the model-based sampler to stay out of its region."""

from __future__ import annotations

import math

import pytest

from hpo.algorithms import PastTrial, sample_params
from hpo.oom import AttemptBatch, attempt_batch, halved
from hpo.spec import parse_spec
from tests._protocol import ask as _ask
from tests._protocol import post as _post
from tests.conftest import make_spec
from workers.runner import _failure_kind
from workers.workloads import synthetic


def _oom(api, trial, study="s1"):
    return _post(api, trial, "fail", {"reason": "CUDA out of memory", "kind": "oom"}, study)


def _accumulating(batch, accumulation=None, **resources):
    space = {"batch_size": {"type": "categorical", "choices": [batch]}}
    if accumulation is not None:
        space["gradient_accumulation_steps"] = {"type": "categorical", "choices": [accumulation]}
    return make_spec(
        search_space=space,
        resources={"on_oom": "accumulate", **resources},
        budget={"max_trials": 5, "max_epochs": 3, "max_retries": 1},
    )


# -- the synthetic workload's memory model ------------------------------------------------


class _Reporter:
    def __init__(self):
        self.steps = []

    def report(self, step, metrics):
        self.steps.append(step)
        return False


def _train(params, **options):
    reporter = _Reporter()
    synthetic.train(
        params,
        reporter,
        options={"epoch_seconds": 0, **options},
        max_epochs=2,
        seed=0,
    )
    return reporter.steps


def test_the_synthetic_workload_runs_out_of_memory_above_its_limit_as_torch_would():
    params = {"batch_size": 64, "num_layers": 4, "hidden_size": 128, "x": 0.5}  # 32,768
    assert synthetic.memory_needed(params) == 64 * 4 * 128
    assert _train(params, memory_limit=32_768) == [1, 2]  # at the limit: fits
    with pytest.raises(Exception) as raised:
        _train(params, memory_limit=32_767)
    assert type(raised.value).__name__ == "OutOfMemoryError"  # torch.cuda's, or its stand-in
    assert "exceeds options.memory_limit" in str(raised.value)
    assert _failure_kind(raised.value) == "oom"  # the runner reports it as kind oom
    # the same trial at half the batch fits; parameters the trial lacks count as 1
    assert _train({**params, "batch_size": 32}, memory_limit=32_767) == [1, 2]
    assert synthetic.memory_needed({"batch_size": 8}) == 8
    assert _train({"x": 0.5}, memory_limit=1) == [1, 2]
    with pytest.raises(ValueError, match="memory_limit is 'big', but must be a number > 0"):
        _train(params, memory_limit="big")


def test_the_stand_in_without_torch_is_reported_as_oom_too():
    assert _failure_kind(synthetic.OutOfMemoryError("no GPU memory left")) == "oom"


def test_halving_keeps_the_effective_batch_down_to_the_floor():
    start = attempt_batch({"batch_size": 64, "gradient_accumulation_steps": 2})
    assert start == AttemptBatch(64, 2)
    steps = [start]
    while (smaller := halved(steps[-1], floor=8)) is not None:
        steps.append(smaller)
    assert [(b.batch_size, b.accumulation) for b in steps] == [(64, 2), (32, 4), (16, 8), (8, 16)]
    assert {b.effective for b in steps} == {128}
    assert attempt_batch({"batch_size": 16}) == AttemptBatch(16, 1)  # no accumulation param
    assert attempt_batch({"lr": 0.1}) is None and halved(None, floor=1) is None


# -- the spec ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("space", "resources", "expected"),
    [
        (
            {"x": {"type": "float", "low": 0, "high": 1}},
            {"on_oom": "accumulate"},
            "the search space has no batch_size; add one, or use on_oom: fail",
        ),
        (
            {"batch_size": {"type": "float", "low": 1, "high": 64}},
            {"on_oom": "accumulate"},
            "needs batch_size to be whole numbers >= 1",
        ),
        (
            {"batch_size": {"type": "int", "low": 8, "high": 64}},
            {"on_oom": "shrink"},
            "resources.on_oom: unknown on_oom 'shrink'; choose one of fail, accumulate",
        ),
        (
            {"batch_size": {"type": "int", "low": 8, "high": 64}},
            {"on_oom": "accumulate", "min_batch_size": 0},
            "resources.min_batch_size",
        ),
    ],
)
def test_a_study_that_cannot_accumulate_is_refused_with_the_reason(api, space, resources, expected):
    resp = api.post("/api/v1/studies", json=make_spec(search_space=space, resources=resources))
    assert resp.status_code == 422, resp.text
    assert expected in resp.text
    assert api.get("/api/v1/studies").json()["count"] == 0  # nothing persisted


# -- over the API, on both databases --------------------------------------------------------


def test_an_oom_attempt_is_retried_at_half_the_batch_down_to_the_floor_then_fails(api):
    assert api.post("/api/v1/studies", json=_accumulating(32, 1, min_batch_size=8)).status_code
    trial = _ask(api)
    assert trial["params"]["batch_size"] == 32 and trial["attempt"] == 1
    used = []
    while True:
        used.append((trial["params"]["batch_size"], trial["params"]["gradient_accumulation_steps"]))
        detail = _oom(api, trial)
        if detail["state"] != "pending":
            break
        trial = _ask(api)  # the retry comes first, with the attempt's own batch
        assert trial["number"] == detail["number"]
    assert used == [(32, 1), (16, 2), (8, 4)]  # the same effective batch, down to the floor
    assert detail["state"] == "failed"
    assert [r["failure_kind"] for r in detail["runs"]] == ["oom"] * 3
    shown = [(r["batch_size"], r["gradient_accumulation_steps"]) for r in detail["runs"]]
    assert shown == used
    assert detail["params"] == {"batch_size": 32, "gradient_accumulation_steps": 1}  # proposed
    listed = api.get("/api/v1/studies/s1/trials").json()["data"][0]
    assert (listed["state"], listed["attempts"]) == ("failed", 3)


def test_the_smaller_batch_completes_and_infrastructure_retries_keep_it(api):
    # max_retries is 1: the two memory retries do not use it, the crash does
    assert api.post("/api/v1/studies", json=_accumulating(64)).status_code == 201
    first = _ask(api)
    assert "gradient_accumulation_steps" not in first["params"]  # not in the space
    assert _oom(api, first)["state"] == "pending"
    second = _ask(api)
    assert (second["params"]["batch_size"], second["params"]["gradient_accumulation_steps"]) == (
        32,
        2,
    )
    assert _oom(api, second)["state"] == "pending"
    third = _ask(api)
    assert _post(api, third, "fail", {"reason": "node died", "kind": "crash"})["state"] == "pending"
    fourth = _ask(api)
    assert fourth["attempt"] == 4
    assert (fourth["params"]["batch_size"], fourth["params"]["gradient_accumulation_steps"]) == (
        16,
        4,
    )  # the crash's retry kept the batch its attempt had come down to
    _post(api, fourth, "reports", {"step": 1, "metrics": {"acc": 0.7}})
    done = _post(api, fourth, "complete", {"metrics": {"acc": 0.8}})
    assert (done["state"], done["value"]) == ("completed", 0.8)
    assert [
        (r["attempt"], r["batch_size"], r["gradient_accumulation_steps"]) for r in done["runs"]
    ] == [
        (1, 64, 1),
        (2, 32, 2),
        (3, 16, 4),
        (4, 16, 4),
    ]
    assert {r["batch_size"] * r["gradient_accumulation_steps"] for r in done["runs"]} == {64}


def test_without_accumulate_an_oom_fails_the_trial_at_once(api):
    spec = make_spec(search_space={"batch_size": {"type": "categorical", "choices": [64]}})
    assert api.post("/api/v1/studies", json=spec).status_code == 201
    detail = _oom(api, _ask(api))
    assert detail["state"] == "failed" and len(detail["runs"]) == 1
    assert detail["runs"][0]["batch_size"] == 64


# -- the sampler learns where memory runs out ----------------------------------------------

OOM_SPACE = {
    "batch_size": {"type": "int", "low": 4, "high": 512, "log": True},
    "num_layers": {"type": "int", "low": 1, "high": 12},
    "hidden_size": {"type": "int", "low": 32, "high": 1024, "log": True},
    "learning_rate": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
}
#: about half of the space runs out of memory
MEMORY_LIMIT = 50_000
TRIALS = 60


def _value(params):
    """The synthetic quality, plus a little for a bigger model: the best trials sit near the
    memory limit, so a sampler that does not learn the limit keeps crossing it."""
    bigger = math.log(synthetic.memory_needed(params)) / math.log(512 * 12 * 1024)
    return synthetic.quality(params) + 0.1 * bigger


def _late_ooms(api, algorithm, seed):
    name = f"{algorithm}-{seed}"
    spec = make_spec(
        name,
        search_space=OOM_SPACE,
        algorithm={"name": algorithm, "seed": seed},
        budget={"max_trials": TRIALS, "max_epochs": 1},
    )
    assert api.post("/api/v1/studies", json=spec).status_code == 201
    ooms = []
    for _ in range(TRIALS):
        trial = _ask(api, name)
        if synthetic.memory_needed(trial["params"]) > MEMORY_LIMIT:
            ooms.append(trial["number"])
            assert _oom(api, trial, name)["state"] == "failed"
        else:
            _post(api, trial, "complete", {"metrics": {"acc": _value(trial["params"])}}, name)
    return sum(1 for n in ooms if n >= TRIALS // 2)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_bayesian_search_proposes_far_fewer_oom_configurations_than_random(api):
    random_ooms = [_late_ooms(api, "random", seed) for seed in range(3)]
    bayesian_ooms = [_late_ooms(api, "bayesian", seed) for seed in range(3)]
    # of the last 30 trials of each study, random search keeps sending about half into the
    # out-of-memory region; TPE, taught by the failed trials, at most half as many as random
    assert sum(random_ooms) >= 30, random_ooms
    assert 2 * sum(bayesian_ooms) <= sum(random_ooms), (bayesian_ooms, random_ooms)


def _proposals_out_of_memory(seed, *, teach):
    """Late OOM proposals of TPE in a pure loop, with the out-of-memory trials in its history
    (as the service reads it now) or left out of it (as it did before)."""
    spec = parse_spec(
        make_spec(search_space=OOM_SPACE, algorithm={"name": "bayesian", "seed": seed})
    )
    history = []
    for number in range(TRIALS):
        shown = history if teach else [p for p in history if p.state != "failed"]
        params = sample_params(
            spec.algorithm, spec.space, number=number, direction="maximize", history=shown
        )
        if synthetic.memory_needed(params) > MEMORY_LIMIT:
            history.append(PastTrial(number, "failed", params, failure_kind="oom"))
        else:
            history.append(PastTrial(number, "completed", params, _value(params), 1))
    return sum(1 for p in history[TRIALS // 2 :] if p.state == "failed")


def test_out_of_memory_trials_are_what_teaches_tpe_the_limit():
    taught = [_proposals_out_of_memory(seed, teach=True) for seed in range(5)]
    untaught = [_proposals_out_of_memory(seed, teach=False) for seed in range(5)]
    assert 2 * sum(taught) <= sum(untaught), (taught, untaught)


# -- end to end, on Ray -------------------------------------------------------------------


@pytest.mark.usefixtures("ray_cluster")
def test_trials_on_ray_finish_at_the_same_effective_batch(fresh_postgres):
    from tests._live import TRAINING_HEARTBEAT_TIMEOUT, LiveController

    spec = {
        "name": "oom-e2e",
        "objective": {"metric": "val_accuracy"},
        "search_space": {
            "batch_size": {"type": "categorical", "choices": [64, 128]},
            "num_layers": {"type": "categorical", "choices": [2]},
            "hidden_size": {"type": "categorical", "choices": [64]},
        },
        "algorithm": {"name": "grid", "seed": 0},
        "budget": {"max_trials": 2, "max_epochs": 2, "parallelism": 2, "max_retries": 0},
        # batch 32 x 2 layers x 64 = 4,096 fits; 64 and 128 do not
        "workload": {"name": "synthetic", "options": {"epoch_seconds": 0.05, "memory_limit": 4096}},
        "resources": {"gpus_per_trial": 1, "cpus_per_trial": 0.5, "on_oom": "accumulate"},
    }
    live = LiveController(fresh_postgres, heartbeat_timeout=TRAINING_HEARTBEAT_TIMEOUT).start()
    try:
        assert live.api("POST", "/api/v1/studies", json=spec).status_code == 201
        study = live.wait_for("oom-e2e")
        assert study["trial_counts"]["completed"] == 2, [
            (r["state"], r["failure_kind"], r["error"], r["batch_size"])
            for r in live.runs("oom-e2e")
        ]
        seen = {}
        for number in (0, 1):
            detail = live.api("GET", f"/api/v1/studies/oom-e2e/trials/{number}").json()
            runs = [(r["batch_size"], r["gradient_accumulation_steps"]) for r in detail["runs"]]
            assert [r["failure_kind"] for r in detail["runs"][:-1]] == ["oom"] * (len(runs) - 1)
            assert runs[-1][0] == 32  # trained at the batch that fits
            assert {b * a for b, a in runs} == {detail["params"]["batch_size"]}
            seen[detail["params"]["batch_size"]] = runs
        assert seen == {64: [(64, 1), (32, 2)], 128: [(128, 1), (64, 2), (32, 4)]}
    finally:
        live.stop()


def test_the_trial_page_shows_the_batch_of_every_attempt(tmp_path):
    from playwright.sync_api import expect

    from hpo.client import Client
    from tests._browser import chromium
    from tests._live import LiveController

    live = LiveController(f"sqlite:///{tmp_path / 'hpo.db'}").start(dispatch=False)
    try:
        client = Client(live.url)
        client.create_study(_accumulating(64, 1))
        first = client.ask("s1", worker="page-worker")
        first.fail("CUDA out of memory (simulated)", kind="oom")
        retry = client.ask("s1", worker="page-worker")
        retry.complete({"acc": 0.5})
        with chromium() as browser:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{live.url}/studies/s1/trials/{first.number}")
            page.wait_for_selector("body[data-loaded='trial']", timeout=30_000)
            rows = page.locator("#runs-table tbody tr")
            expect(rows).to_have_count(2)
            expect(rows.nth(0)).to_contain_text("batch 64 x 1 accumulation")
            expect(rows.nth(0)).to_contain_text("oom")
            expect(rows.nth(1)).to_contain_text("batch 32 x 2 accumulation")
            assert not errors, errors
    finally:
        live.stop()
