"""``algorithm: {name: auto}``, the default: what it picks, why, and that the study runs it."""

from __future__ import annotations

import pytest

from hpo import algorithms
from hpo.client import Client
from hpo.spec import parse_spec

CONTINUOUS = {
    "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "dropout": {"type": "float", "low": 0.0, "high": 0.5},
}
DISCRETE = {
    "batch_size": {"type": "categorical", "choices": [16, 32, 64]},
    "num_layers": {"type": "int", "low": 2, "high": 4},
}


def spec(space=CONTINUOUS, algorithm=None, **budget):
    data = {"name": "s", "objective": {"metric": "acc"}, "search_space": space, "budget": budget}
    if algorithm is not None:
        data["algorithm"] = algorithm
    return parse_spec(data)


def test_auto_is_the_default_algorithm():
    assert spec().algorithm.name == "auto"
    assert algorithms.in_force(spec()).name != "auto"


def test_a_grid_that_fits_the_budget_is_searched_as_a_grid():
    choice = algorithms.choose(spec(DISCRETE, max_trials=9))
    assert choice.algorithm.name == "grid"
    assert "9 points" in choice.reason and "9 full-length trials" in choice.reason
    epochs = algorithms.choose(spec(DISCRETE, max_epochs=10, max_trials=100))
    assert epochs.algorithm.name == "grid"


def test_a_grid_larger_than_the_budget_is_halved_instead():
    choice = algorithms.choose(spec(DISCRETE, max_trials=5, max_epochs=30))
    assert (choice.algorithm.name, choice.algorithm.pruner) == ("asha", "asha")
    assert "grid of 9 points is larger than the budget of 5" in choice.reason


def test_auto_grids_only_what_a_grid_study_may_run():
    huge = {f"p{i}": {"type": "int", "low": 0, "high": 9} for i in range(7)}  # 10**7 points
    assert algorithms.choose(spec(huge, max_trials=2**31 - 1)).algorithm.name == "asha"
    negative_seed = {"name": "auto", "seed": -1}
    chosen = algorithms.choose(spec(DISCRETE, algorithm=negative_seed, max_trials=9)).algorithm
    assert chosen.name == "asha", "numpy shuffles a grid with seeds 0 .. 2**32 - 1 only"


def test_a_grid_fits_by_its_points_that_satisfy_the_constraints():
    data = {
        "name": "s",
        "objective": {"metric": "acc"},
        "search_space": DISCRETE,
        "constraints": ["batch_size * num_layers <= 128"],
        "budget": {"max_trials": 7},
    }
    choice = algorithms.choose(parse_spec(data))
    assert choice.algorithm.name == "grid"
    assert "grid of 7 points" in choice.reason
    unconstrained = algorithms.choose(parse_spec({**data, "constraints": []}))
    assert unconstrained.algorithm.name == "asha", "9 points do not fit 7 trials"


def test_no_epoch_axis_means_plain_tpe():
    choice = algorithms.choose(spec(max_epochs=1))
    assert (choice.algorithm.name, choice.algorithm.model) == ("bayesian", "tpe")
    assert choice.algorithm.pruner == "none"
    assert "max_epochs is 1" in choice.reason


@pytest.mark.parametrize(("max_epochs", "grace"), [(10, 1), (52, 2), (100, 4), (1000, 37)])
def test_the_first_rung_scales_with_max_epochs(max_epochs, grace):
    choice = algorithms.choose(spec(max_epochs=max_epochs))
    chosen = choice.algorithm
    assert (chosen.name, chosen.pruner, chosen.reduction_factor) == ("asha", "asha", 3)
    assert chosen.grace_period == grace
    steps = algorithms.rung_steps(
        algorithms.halving_plan(chosen, spec(max_epochs=max_epochs).budget)
    )
    assert 2 <= len(steps) <= 4, "about three rungs below max_epochs"
    assert f"epochs {', '.join(map(str, steps))}" in choice.reason


def test_what_the_user_set_beside_auto_is_kept():
    chosen = algorithms.choose(
        spec(algorithm={"name": "auto", "seed": 7, "grace_period": 3}, max_epochs=30)
    ).algorithm
    assert (chosen.name, chosen.seed, chosen.grace_period) == ("asha", 7, 3)


def test_a_model_asked_for_beside_auto_gets_tpe_with_hyperband():
    for extra in ({"model": "gp"}, {"n_startup_trials": 5}, {"early_stopping": "median"}):
        choice = algorithms.choose(spec(algorithm={"name": "auto", **extra}, max_epochs=52))
        assert choice.algorithm.name == "bayesian", extra
        assert "asks for a model beside auto" in choice.reason
    hyperband = algorithms.choose(spec(algorithm={"name": "auto", "model": "gp"}, max_epochs=52))
    assert (hyperband.algorithm.pruner, hyperband.algorithm.grace_period) == ("hyperband", 2)


def test_an_auto_study_says_what_it_chose_and_stops_weak_trials(client):
    study = client.create_study(
        {
            "name": "auto-study",
            "objective": {"metric": "acc"},
            "search_space": CONTINUOUS,
            "algorithm": {"name": "auto", "seed": 3},
            "budget": {"max_epochs": 27, "max_trials": 40, "parallelism": 4},
        }
    )
    assert study.spec.algorithm.name == "auto"
    assert study.algorithm_choice is not None
    assert study.algorithm_choice.summary.startswith("asha: random search + successive halving")
    assert study.algorithm_choice.algorithm.grace_period == 1
    assert "continuous parameters" in study.algorithm_choice.reason
    assert client.get_study("auto-study").algorithm_choice == study.algorithm_choice
    stopped = 0
    for _ in range(40):
        trial = client.ask("auto-study")
        for epoch in range(1, 28):
            # the configuration decides how good a trial gets; early epochs tell it apart
            acc = (1 - trial.params["dropout"]) * epoch / 27
            if epoch == 27:
                trial.complete({"acc": acc})
            elif trial.report(epoch, {"acc": acc}):
                stopped += 1
                break
    assert stopped >= 10, "successive halving stops weak trials of an auto study"
    assert client.get_study("auto-study").status == "completed"


def test_the_cli_shows_the_choice_and_why(client, capsys):
    from hpo import cli

    client.create_study(
        {
            "name": "auto-cli",
            "objective": {"metric": "acc"},
            "search_space": DISCRETE,
            "budget": {"max_trials": 20},
        }
    )
    study = client.get_study("auto-cli")
    assert cli._algorithm(study) == "auto: grid"
    assert "whole grid of 9 points fits" in study.algorithm_choice.reason


def test_the_study_page_shows_what_auto_chose(tmp_path):
    from playwright.sync_api import expect

    from tests._browser import chromium
    from tests._live import LiveController

    live = LiveController(f"sqlite:///{tmp_path}/hpo.db").start(dispatch=False)
    try:
        Client(live.url).create_study(
            {
                "name": "auto-page",
                "objective": {"metric": "acc"},
                "search_space": CONTINUOUS,
                "budget": {"max_epochs": 52},
            }
        )
        with chromium() as browser:
            context = browser.new_context()
            page = context.new_page()
            page.goto(f"{live.url}/studies/auto-page")
            page.wait_for_selector("body[data-loaded='study']", timeout=30_000)
            choice = page.locator("#algorithm-choice")
            expect(choice).to_be_visible()
            expect(choice).to_contain_text("auto chose: asha: random search + successive")
            expect(choice).to_contain_text("first rung at epoch 2")
            context.close()
    finally:
        live.stop()
