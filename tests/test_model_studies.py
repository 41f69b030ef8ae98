"""Real transformer studies that run themselves end to end (tiny budgets, CPU, local Ray)."""

from __future__ import annotations

import json
import random

import pytest

from hpo.client import Client
from tests._live import TRAINING_HEARTBEAT_TIMEOUT, LiveController

pytestmark = pytest.mark.usefixtures("ray_cluster")


@pytest.fixture
def live(fresh_postgres, tmp_path):
    # the test's tmp dir is where its data files go, and the data root, as an operator sets
    controller = LiveController(
        fresh_postgres, data_dirs=[str(tmp_path)], heartbeat_timeout=TRAINING_HEARTBEAT_TIMEOUT
    ).start()
    yield controller
    controller.stop()


def _create(live: LiveController, spec: dict) -> None:
    resp = live.api("POST", "/api/v1/studies", json=spec)
    assert resp.status_code == 201, resp.text


def test_a_digits_vit_asha_study_completes_by_itself(live):
    _create(
        live,
        {
            "name": "vit",
            "objective": {"metric": "val_accuracy", "direction": "maximize"},
            "search_space": {
                "learning_rate": {"type": "float", "low": 3e-4, "high": 1e-2, "log": True},
                "num_heads": {"type": "categorical", "choices": [2, 4]},
                "num_layers": {"type": "int", "low": 1, "high": 2},
                "dropout": {"type": "float", "low": 0.0, "high": 0.2, "step": 0.1},
            },
            "algorithm": {"name": "asha", "seed": 0, "reduction_factor": 3, "grace_period": 1},
            "budget": {"max_trials": 9, "max_epochs": 9, "parallelism": 2},
            "workload": {"name": "digits-vit", "options": {"max_samples": 500}},
            "resources": {"gpus_per_trial": 0, "cpus_per_trial": 1},
        },
    )
    study = live.wait_for("vit", timeout=400)
    counts = study["trial_counts"]
    assert counts["pruned"] >= 1 and counts["completed"] >= 1
    assert counts["pruned"] + counts["completed"] == 9
    client = Client(live.url)
    best = client.trial("vit", study["best"]["number"])
    assert best.state == "completed" and best.last_step == 9
    assert client.best_config("vit") == best.params
    for trial in client.trials("vit"):
        detail = client.trial("vit", trial.number)
        steps = [r.step for r in detail.reports]
        assert steps == list(range(1, len(steps) + 1)) and steps[-1] == trial.last_step
        for report in detail.reports:
            assert {
                "val_accuracy",
                "val_loss",
                "train_loss",
                "epoch_seconds",
                "samples_per_second",
            } <= set(report.metrics)
    assert best.value > 0.3, "a trained ViT beats chance (0.1) on digits"


def test_a_charlm_gpt_study_completes(live):
    _create(
        live,
        {
            "name": "gpt",
            "objective": {"metric": "val_loss", "direction": "minimize"},
            "search_space": {
                "learning_rate": {"type": "float", "low": 1e-3, "high": 3e-3, "log": True},
                "num_layers": {"type": "int", "low": 1, "high": 2},
            },
            "algorithm": {"name": "random", "seed": 1},
            "budget": {"max_trials": 2, "max_epochs": 2, "parallelism": 2},
            "workload": {
                "name": "charlm-gpt",
                "options": {"max_chars": 20000, "windows_per_epoch": 200},
            },
            "resources": {"gpus_per_trial": 0, "cpus_per_trial": 1},
        },
    )
    study = live.wait_for("gpt", timeout=300)
    assert study["trial_counts"]["completed"] == 2
    detail = live.api("GET", f"/api/v1/studies/gpt/trials/{study['best']['number']}").json()
    assert [r["step"] for r in detail["reports"]] == [1, 2]
    assert detail["reports"][-1]["metrics"]["val_perplexity"] > 1


def test_a_text_classification_study_completes(live, tmp_path):
    rng = random.Random(0)
    words = {0: ["bad", "awful", "boring"], 1: ["good", "great", "lovely"]}
    path = tmp_path / "reviews.jsonl"
    with path.open("w") as out:
        for _ in range(200):
            label = rng.randint(0, 1)
            text = f"the film was {rng.choice(words[label])} and {rng.choice(['long', 'short'])}"
            out.write(json.dumps({"text": text, "label": ["neg", "pos"][label]}) + "\n")
    _create(
        live,
        {
            "name": "bert",
            "objective": {"metric": "val_accuracy", "direction": "maximize"},
            "search_space": {
                "learning_rate": {"type": "float", "low": 1e-3, "high": 3e-3, "log": True},
                "batch_size": {"type": "categorical", "choices": [16, 32]},
            },
            "algorithm": {"name": "random", "seed": 2},
            "budget": {"max_trials": 2, "max_epochs": 3, "parallelism": 2},
            "workload": {"name": "text-classification", "options": {"data_path": str(path)}},
            "resources": {"gpus_per_trial": 0, "cpus_per_trial": 1},
        },
    )
    study = live.wait_for("bert", timeout=300)
    assert study["trial_counts"]["completed"] == 2
    assert study["best"]["value"] > 0.5


def test_a_diverging_trial_fails_as_nonfinite_and_the_study_goes_on(live):
    _create(
        live,
        {
            "name": "diverge",
            "objective": {"metric": "val_accuracy"},
            "search_space": {"learning_rate": {"type": "categorical", "choices": [1e4, 1e-3]}},
            "algorithm": {"name": "grid"},
            "budget": {"max_epochs": 2, "parallelism": 2},
            "workload": {"name": "digits-vit", "options": {"max_samples": 300}},
            "resources": {"gpus_per_trial": 0, "cpus_per_trial": 1},
        },
    )
    study = live.wait_for("diverge", timeout=300)
    assert study["trial_counts"]["failed"] == 1 and study["trial_counts"]["completed"] == 1
    failed = live.api("GET", "/api/v1/studies/diverge/trials", params={"state": "failed"}).json()
    number = failed["data"][0]["number"]
    run = live.api("GET", f"/api/v1/studies/diverge/trials/{number}").json()["runs"][-1]
    assert run["failure_kind"] == "nonfinite" and "NonFiniteLoss" in run["error"]
    assert study["best"]["params"] == {"learning_rate": 1e-3}
