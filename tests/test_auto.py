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


def _run_27_epochs(trial) -> bool:  # type: ignore[no-untyped-def]
    """Report 27 epochs whose accuracy grows with 1 - dropout (so early epochs tell
    configurations apart); True when early stopping ended the trial first."""
    for epoch in range(1, 28):
        acc = (1 - trial.params["dropout"]) * epoch / 27
        if epoch == 27:
            trial.complete({"acc": acc})
        elif trial.report(epoch, {"acc": acc}):
            return True
    return False


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
    assert (choice.algorithm.name, choice.algorithm.pruner) == ("bayesian", "asha")
    assert choice.algorithm.model == "bohb"
    assert "grid of 9 points is larger than the budget of 5" in choice.reason


def test_auto_grids_only_what_a_grid_study_may_run():
    huge = {f"p{i}": {"type": "int", "low": 0, "high": 9} for i in range(7)}  # 10**7 points
    assert algorithms.choose(spec(huge, max_trials=2**31 - 1)).algorithm.name == "bayesian"
    negative_seed = {"name": "auto", "seed": -1}
    chosen = algorithms.choose(spec(DISCRETE, algorithm=negative_seed, max_trials=9)).algorithm
    assert chosen.name == "bayesian", "numpy shuffles a grid with seeds 0 .. 2**32 - 1 only"


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
    assert unconstrained.algorithm.name == "bayesian", "9 points do not fit 7 trials"


def test_no_epoch_axis_means_plain_tpe():
    choice = algorithms.choose(spec(max_epochs=1))
    assert (choice.algorithm.name, choice.algorithm.model) == ("bayesian", "tpe")
    assert choice.algorithm.pruner == "none"
    assert "max_epochs is 1" in choice.reason


@pytest.mark.parametrize(("max_epochs", "grace"), [(10, 1), (52, 2), (100, 4), (1000, 37)])
def test_the_first_rung_scales_with_max_epochs(max_epochs, grace):
    choice = algorithms.choose(spec(max_epochs=max_epochs))
    chosen = choice.algorithm
    assert (chosen.name, chosen.model, chosen.pruner) == ("bayesian", "bohb", "asha")
    assert (chosen.reduction_factor, chosen.n_startup_trials) == (3, 3)
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
    assert (chosen.name, chosen.seed, chosen.grace_period) == ("bayesian", 7, 3)
    fewer = algorithms.choose(spec(algorithm={"name": "auto", "n_startup_trials": 5}))
    assert fewer.algorithm.n_startup_trials == 5
    assert "longest budget with 5 values" in fewer.summary
    median = algorithms.choose(spec(algorithm={"name": "auto", "early_stopping": "median"}))
    assert (median.algorithm.model, median.algorithm.pruner) == ("bohb", "median")
    assert "with median early stopping" in median.reason


def test_a_default_value_set_beside_auto_is_kept_too():
    """``grace_period: 1`` and ``model: tpe`` are the defaults of any algorithm; set beside
    ``auto`` they are what the user asked for, not what auto may pick for them."""
    first = algorithms.choose(spec(algorithm={"name": "auto", "grace_period": 1}, max_epochs=52))
    assert first.algorithm.grace_period == 1
    assert "first rung at epoch 1 once it holds 3 values)" in first.summary
    at_once = algorithms.choose(
        spec(algorithm={"name": "auto", "first_rung_quorum": 1}, max_epochs=52)
    )
    assert at_once.algorithm.first_rung_quorum == 1
    assert at_once.summary.endswith("first rung at epoch 2)"), "Optuna's rule, as asked"
    tpe = algorithms.choose(spec(algorithm={"name": "auto", "model": "tpe"}, max_epochs=52))
    assert (tpe.algorithm.model, tpe.algorithm.grace_period) == ("tpe", 2)
    assert "asks for model tpe beside auto" in tpe.reason
    unset = algorithms.choose(spec(algorithm={"name": "auto", "seed": None}, max_epochs=52))
    assert unset.algorithm == algorithms.choose(spec(max_epochs=52)).algorithm, "null = unset"


def test_an_auto_spec_reads_back_with_what_was_set_and_nothing_more(client):
    """What the user set beside auto survives the database and a GET (a stored spec once had
    every field, and auto could not tell a default the user wrote from one left out)."""
    created = client.create_study(
        {
            "name": "auto-set",
            "objective": {"metric": "acc"},
            "search_space": CONTINUOUS,
            "algorithm": {"name": "auto", "grace_period": 1},
            "budget": {"max_epochs": 52},
        }
    )
    fetched = client.get_study("auto-set")
    assert fetched.spec.algorithm.model_dump() == {"name": "auto", "grace_period": 1}
    assert fetched.algorithm_choice == created.algorithm_choice
    assert fetched.algorithm_choice.algorithm.grace_period == 1
    left_out = {k: v for k, v in fetched.spec.model_dump().items() if k != "algorithm"}
    plain = parse_spec(left_out)
    assert plain.algorithm.model_dump() == {"name": "auto"}
    again = parse_spec(plain.model_dump(mode="json"))
    assert again.algorithm.model_fields_set == {"name"}
    assert "first rung at epoch 2" in algorithms.choose(again).summary


def test_a_model_asked_for_beside_auto_replaces_bohb():
    gp = algorithms.choose(spec(algorithm={"name": "auto", "model": "gp"}, max_epochs=52))
    chosen = gp.algorithm
    assert (chosen.name, chosen.model, chosen.pruner, chosen.grace_period) == (
        "bayesian",
        "gp",
        "asha",
        2,
    )
    assert chosen.n_startup_trials == 10, "the GP keeps its own default"
    assert gp.summary.startswith("bayesian (GP) + asha")
    assert "asks for model gp beside auto" in gp.reason


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
    assert study.algorithm_choice.summary.startswith("bayesian (BOHB: TPE fit on the longest")
    assert study.algorithm_choice.algorithm.grace_period == 1
    assert "continuous parameters" in study.algorithm_choice.reason
    assert client.get_study("auto-study").algorithm_choice == study.algorithm_choice
    stopped = sum(_run_27_epochs(client.ask("auto-study")) for _ in range(40))
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
            expect(choice).to_contain_text("auto chose: bayesian (BOHB: TPE fit on the longest")
            expect(choice).to_contain_text("first rung at epoch 2")
            context.close()
    finally:
        live.stop()


# -- BOHB, the model auto runs with an epoch axis ------------------------------------------


def _past(number, params, *, state="pruned", value=None, rungs=()):
    from hpo.algorithms import PastTrial

    return PastTrial(number, state, params, value, None, None, tuple(rungs))


def test_bohb_models_the_longest_budget_that_has_enough_values():
    from hpo.algorithms._bohb import observations

    history = [
        _past(0, {"x": 0.0}, rungs=[(2, 0.1), (6, 0.2), (18, 0.3)]),
        _past(1, {"x": 0.1}, rungs=[(2, 0.2), (6, 0.3)]),
        _past(2, {"x": 0.2}, rungs=[(2, 0.3), (6, 0.4)]),
        _past(3, {"x": 0.3}, rungs=[(2, 0.4)]),
        _past(4, {"x": 0.4}, state="completed", value=0.9, rungs=[(2, 0.5), (6, 0.6), (18, 0.7)]),
    ]
    at_6 = observations(history, first_rung=2, min_values=3)
    assert sorted(v for _, v in at_6) == [0.2, 0.3, 0.4, 0.6], "every trial that reached 6"
    assert sorted(v for _, v in observations(history, first_rung=2, min_values=2)) == [0.3, 0.7]
    assert observations(history, first_rung=2, min_values=1) == [({"x": 0.4}, 0.9)]
    assert observations(history, first_rung=2, min_values=5) == [], "never the first rung"
    assert len(observations(history, first_rung=1, min_values=5)) == 5


def test_bohb_draws_a_third_at_random_by_seed_and_number():
    from hpo.algorithms._bohb import draws_at_random

    draws = [draws_at_random(7, n) for n in range(3000)]
    assert 0.30 < sum(draws) / len(draws) < 0.37
    assert draws == [draws_at_random(7, n) for n in range(3000)]
    assert draws != [draws_at_random(8, n) for n in range(3000)]


def test_bohb_follows_the_later_rung_where_the_first_misleads():
    """At epoch 2 low x looks best, at epoch 6 high x is: the model follows epoch 6. With too
    few values there to model, and the first rung never modelled, every draw is random."""
    space = {"x": {"type": "float", "low": 0.0, "high": 1.0}}
    history = []
    for n in range(40):
        x = (n * 0.618) % 1.0
        rungs = [(2, 1.0 - x)] + ([(6, x)] if n % 3 == 0 else [])
        history.append(_past(n, {"x": x}, rungs=rungs))

    def draws(n_startup):
        algorithm = parse_spec(
            {
                "name": "b",
                "objective": {"metric": "acc"},
                "search_space": space,
                "algorithm": {
                    "name": "bayesian",
                    "model": "bohb",
                    "early_stopping": "asha",
                    "grace_period": 2,
                    "n_startup_trials": n_startup,
                    "seed": 1,
                },
                "budget": {"max_epochs": 52},
            }
        )
        xs = []
        for number in range(40, 100):
            params = algorithms.sample_params(
                algorithm.algorithm,
                algorithm.space,
                number=number,
                direction="maximize",
                history=history,
            )
            xs.append(params["x"])
        return sum(xs) / len(xs)

    assert draws(5) > 0.65, "two draws in three gather near high x"
    assert 0.35 < draws(20) < 0.65, "nothing to model past the first rung: random"


@pytest.mark.parametrize(
    ("algorithm", "stored_model", "modelled"),
    [
        ({"name": "auto"}, "tpe", True),  # auto's own choice is BOHB, whatever "model" says
        # bayesian with successive halving and no model named: BOHB's, reading the rungs too
        ({"name": "bayesian", "early_stopping": "asha"}, "bohb", True),
        ({"name": "bayesian", "early_stopping": "asha", "model": "tpe"}, "tpe", False),
    ],
    ids=["auto", "bayesian+asha", "bayesian+asha+tpe"],
)
def test_a_sampler_that_models_like_bohb_reads_the_rung_values(
    app, client, algorithm, stored_model, modelled
):
    from hpo.service._ask import _history

    client.create_study(
        {
            "name": "rungs",
            "objective": {"metric": "acc"},
            "search_space": CONTINUOUS,
            "algorithm": {**algorithm, "seed": 1},
            "budget": {"max_epochs": 27, "parallelism": 4},
        }
    )
    for _ in range(6):
        _run_27_epochs(client.ask("rungs"))
    study = client.get_study("rungs")
    assert study.spec.algorithm.model == stored_model
    with app.state.db.transaction() as session:
        history = _history(session, study.id, parse_spec(study.spec.model_dump(mode="json")))
    assert len(history) == 6
    if not modelled:  # TPE over the stopped trials never reads them
        assert all(past.rungs == () for past in history)
        return
    reached = {epoch for past in history for epoch, _ in past.rungs}
    assert reached and reached <= {1, 3, 9}, "the rungs of max_epochs 27: epochs 1, 3 and 9"
    first = history[0]  # the first trial at every rung goes on: it reached all three
    assert [epoch for epoch, _ in first.rungs] == [1, 3, 9]
    assert all(v == pytest.approx((1 - first.params["dropout"]) * e / 27) for e, v in first.rungs)
