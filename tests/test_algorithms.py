"""The four algorithms doing their job, driven from the Python client on PostgreSQL.

Deterministic checks on synthetic objectives with known optima (fixed seeds), not timings.
"""

from __future__ import annotations

import math

import pytest
from fastapi.testclient import TestClient
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from api import create_app
from hpo.algorithms._space import contains
from hpo.client import Client
from hpo.settings import Settings

SPACE = {
    "x": {"type": "float", "low": 0.0, "high": 1.0},
    "y": {"type": "float", "low": 0.0, "high": 1.0},
    "lr": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
    "w": {"type": "float", "low": -2.0, "high": 2.0},
}


def bowl(p: dict[str, float]) -> float:
    """Maximum 0 at x=0.7, y=0.2, lr=1e-3, w=0.5."""
    return -(
        (p["x"] - 0.7) ** 2
        + (p["y"] - 0.2) ** 2
        + ((math.log10(p["lr"]) + 3) / 4) ** 2
        + ((p["w"] - 0.5) / 4) ** 2
    )


@pytest.fixture
def pg_client(fresh_postgres):
    app = create_app(Settings(database_url=fresh_postgres))
    with TestClient(app, base_url="http://localhost") as http:
        yield Client(http=http)
    app.state.db.dispose()


def _run(client: Client, name: str, algorithm: dict, n: int = 30) -> float:
    client.create_study(
        {
            "name": name,
            "objective": {"metric": "score"},
            "search_space": SPACE,
            "algorithm": algorithm,
            "budget": {"max_trials": n},
        }
    )
    for _ in range(n):
        trial = client.ask(name)
        trial.complete({"score": bowl(trial.params)})
    return client.best(name).value


def test_tpe_beats_random_search_in_most_seeds(pg_client):
    wins = 0
    for seed in range(5):
        random_best = _run(pg_client, f"random-{seed}", {"name": "random", "seed": seed})
        tpe_best = _run(pg_client, f"tpe-{seed}", {"name": "bayesian", "seed": seed})
        wins += tpe_best > random_best
    assert wins >= 4, f"TPE beat random search in only {wins} of 5 seeds"


def test_gp_model_samples_and_improves_on_its_startup(pg_client):
    best = _run(
        pg_client, "gp", {"name": "bayesian", "model": "gp", "seed": 0, "n_startup_trials": 5}, n=12
    )
    trials = pg_client.trials("gp")
    startup_best = max(t.value for t in trials[:5] if t.value is not None)
    assert len(trials) == 12 and best >= startup_best


def _curve(quality: float, epoch: int) -> float:
    return quality * (1 - math.exp(-epoch / 3))


def test_asha_stops_most_trials_early_and_the_best_ran_to_the_end(pg_client):
    pg_client.create_study(
        {
            "name": "asha",
            "objective": {"metric": "val_accuracy"},
            "search_space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
            "algorithm": {"name": "asha", "seed": 0, "reduction_factor": 3, "grace_period": 1},
            "budget": {"max_trials": 27, "max_epochs": 9},
        }
    )
    reached = {1: 0, 3: 0, 9: 0}
    for _ in range(27):
        trial = pg_client.ask("asha")
        quality = 1 - (trial.params["x"] - 0.6) ** 2
        for epoch in range(1, 10):
            if trial.report(
                epoch, {"val_accuracy": _curve(quality, epoch), "train_loss": 1 - quality}
            ):
                break
        else:
            trial.complete({"val_accuracy": _curve(quality, 9)})
        for rung in reached:
            reached[rung] += epoch >= rung
    # rungs at 1, 3 and 9 epochs hold roughly 27 / 9 / 3 trials
    assert reached[1] == 27
    assert 6 <= reached[3] <= 13, reached
    assert 2 <= reached[9] <= 6, reached
    study = pg_client.get_study("asha")
    assert study.status == "completed"
    assert study.trial_counts["pruned"] == 27 - reached[9]
    assert study.trial_counts["completed"] == reached[9]
    best = pg_client.trial("asha", study.best.number)
    assert best.state == "completed" and best.last_step == 9
    pruned = pg_client.trials("asha", state="pruned")
    assert all(t.last_step in (1, 3) for t in pruned)


@pytest.mark.parametrize("rule", ["hyperband", "median"])
def test_other_early_stopping_rules_combine_with_bayesian(pg_client, rule):
    pg_client.create_study(
        {
            "name": f"bo-{rule}",
            "objective": {"metric": "loss", "direction": "minimize"},
            "search_space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
            "algorithm": {
                "name": "bayesian",
                "seed": 1,
                "early_stopping": rule,
                "n_startup_trials": 4,
            },
            "budget": {"max_trials": 16, "max_epochs": 9},
        }
    )
    for _ in range(16):
        trial = pg_client.ask(f"bo-{rule}")
        for epoch in range(1, 10):
            loss = (trial.params["x"] - 0.3) ** 2 + 1 / epoch
            if trial.report(epoch, {"loss": loss}):
                break
        else:
            trial.complete({"loss": loss})
    counts = pg_client.get_study(f"bo-{rule}").trial_counts
    assert counts["pruned"] >= 4, counts
    assert counts["completed"] >= 1 and counts["running"] == 0


@pytest.mark.parametrize(
    ("dist", "value", "expected"),
    [
        (FloatDistribution(0.0, 1.0), 0.5, True),
        (FloatDistribution(0.0, 1.0), 1.5, False),
        (FloatDistribution(0.0, 1.0), math.nan, False),
        (FloatDistribution(0.1, 0.5, step=0.1), 0.30000000000000004, True),
        (FloatDistribution(0.1, 0.5, step=0.1), 0.25, False),
        (FloatDistribution(1e-5, 1e-1, log=True), 1e-3, True),
        (IntDistribution(2, 12, step=2), 6, True),
        (IntDistribution(2, 12, step=2), 7, False),
        (IntDistribution(2, 12, step=2), 6.5, False),
        (IntDistribution(2, 12), 14, False),
        (IntDistribution(0, 2), True, False),
        (CategoricalDistribution([1, 2, "adam"]), "adam", True),
        (CategoricalDistribution([1, 2, "adam"]), True, False),
        (CategoricalDistribution([1, 2, "adam"]), "sgd", False),
    ],
)
def test_a_value_lies_in_a_distribution_as_optuna_would_say(dist, value, expected):
    """hpo's own containment check (Optuna's is private): ranges, steps, choices by type."""
    assert contains(dist, value) is expected
