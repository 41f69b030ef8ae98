"""The study spec and the pure decision code, without a database or a server."""

from __future__ import annotations

import pytest
import yaml

from hpo import InvalidSpec, load_spec, parse_spec
from hpo.algorithms import build_pruner, build_sampler, grid_points, grid_size, trial_seed
from hpo.budget import decide_ask, is_finished, study_size
from tests.conftest import make_spec


def test_yaml_and_json_are_one_schema(tmp_path):
    spec = make_spec(
        "yaml-study",
        search_space="transformer-small",
        algorithm={"name": "asha", "seed": 0, "reduction_factor": 3, "grace_period": 1},
        budget={"max_trials": 40, "max_epochs": 9, "parallelism": 4},
        workload={"name": "external"},
        resources={"gpus_per_trial": 1, "cpus_per_trial": 1},
    )
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert load_spec(path) == parse_spec(spec)
    assert load_spec(path).algorithm.pruner == "asha"


def test_invalid_yaml_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(InvalidSpec, match="broken.yaml is not valid YAML"):
        load_spec(path)


def test_every_problem_is_reported_at_once():
    bad = make_spec(algorithm={"name": "anneal"}, budget={"max_trials": 0, "parallelism": -1})
    with pytest.raises(InvalidSpec) as info:
        parse_spec(bad)
    message = info.value.message
    assert "unknown algorithm 'anneal'" in message
    assert "budget.max_trials" in message and "budget.parallelism" in message


@pytest.mark.parametrize("name", ["123", "has space", "-dash", "x" * 129])
def test_study_names_must_be_addressable(name):
    with pytest.raises(InvalidSpec, match="name"):
        parse_spec(make_spec(name))


def test_asha_needs_room_between_grace_period_and_max_epochs():
    with pytest.raises(InvalidSpec, match="grace_period < max_epochs"):
        parse_spec(
            make_spec(algorithm={"name": "asha", "grace_period": 3}, budget={"max_epochs": 3})
        )


def test_grid_points_and_size():
    spec = parse_spec(
        make_spec(
            search_space={
                "d": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.1},
                "n": {"type": "int", "low": 1, "high": 6, "step": 2},
                "c": {"type": "categorical", "choices": ["a", "b"]},
            },
            algorithm={"name": "grid"},
        )
    )
    points = grid_points(spec.space)
    assert points["d"] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    assert points["n"] == [1, 3, 5]
    assert grid_size(spec.space) == 36
    assert study_size(spec, 36) == 20  # make_spec's max_trials caps the grid


def test_ask_decisions():
    assert decide_ask(status="running", handed_out=3, size=4, name="s").allowed
    full = decide_ask(status="running", handed_out=4, size=4, name="s")
    assert not full.allowed and "all 4 trials were handed out" in full.reason
    assert decide_ask(status="running", handed_out=10**6, size=None, name="s").allowed
    assert "cancelled" in decide_ask(status="cancelled", handed_out=0, size=4, name="s").reason
    assert is_finished(handed_out=4, size=4, running=0)
    assert not is_finished(handed_out=4, size=4, running=1)
    assert not is_finished(handed_out=9, size=None, running=0)


def test_trial_seeds_are_stable_and_distinct():
    assert trial_seed(None, 3) is None
    assert trial_seed(5, 3) == trial_seed(5, 3)
    assert len({trial_seed(5, n) for n in range(100)}) == 100


def test_algorithm_adapters_pick_the_documented_optuna_pieces():
    import optuna

    spec = parse_spec(
        make_spec(
            algorithm={"name": "bayesian", "early_stopping": "asha", "seed": 1},
            budget={"max_epochs": 27},
        )
    )
    sampler = build_sampler(spec.algorithm, spec.space, trial_number=0)
    assert isinstance(sampler, optuna.samplers.TPESampler)
    pruner = build_pruner(spec.algorithm, spec.budget)
    assert isinstance(pruner, optuna.pruners.SuccessiveHalvingPruner)
    gp = parse_spec(make_spec(algorithm={"name": "bayesian", "model": "gp"}))
    assert isinstance(
        build_sampler(gp.algorithm, gp.space, trial_number=0), optuna.samplers.GPSampler
    )
    asha = parse_spec(make_spec(algorithm={"name": "asha"}))
    assert isinstance(
        build_sampler(asha.algorithm, asha.space, trial_number=0), optuna.samplers.RandomSampler
    )
    assert isinstance(
        build_pruner(parse_spec(make_spec()).algorithm, spec.budget), optuna.pruners.NopPruner
    )


@pytest.mark.parametrize(
    ("given", "model"),
    [
        ({"early_stopping": "asha"}, "bohb"),
        ({"early_stopping": "hyperband"}, "bohb"),
        ({"early_stopping": "asha", "model": "tpe"}, "tpe"),
        ({"early_stopping": "hyperband", "model": "gp"}, "gp"),
        ({"early_stopping": "median"}, "tpe"),
        ({"early_stopping": "none"}, "tpe"),
        ({}, "tpe"),
    ],
)
def test_bayesian_with_successive_halving_models_like_bohb_unless_told(given, model):
    spec = parse_spec(make_spec(algorithm={"name": "bayesian", **given}))
    assert spec.algorithm.model == model and type(spec.algorithm.model) is str
    # what is stored says its model: read back (or after a restart), the study keeps it
    stored = spec.model_dump(mode="json")
    assert stored["algorithm"]["model"] == model
    assert parse_spec(stored).algorithm.model == model
    # a study stored before this default (model: tpe written out) keeps TPE
    old = {**stored, "algorithm": {**stored["algorithm"], "model": "tpe"}}
    assert parse_spec(old).algorithm.model == "tpe"


def test_gp_is_refused_where_torch_is_missing(monkeypatch):
    import importlib.util

    from hpo.algorithms import missing_requirements

    gp = parse_spec(make_spec(algorithm={"name": "bayesian", "model": "gp"})).algorithm
    assert missing_requirements(gp) == []  # torch and scipy are installed for the tests
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    (problem,) = missing_requirements(gp)
    assert "'gp' needs torch" in problem and "model: tpe" in problem


def test_algorithm_words_come_from_the_vocabulary_and_stay_plain_strings():
    from hpo.vocabulary import AlgorithmName

    spec = parse_spec(
        make_spec(algorithm={"name": "bayesian", "model": "gp", "early_stopping": "median"})
    )
    algorithm = spec.algorithm
    assert algorithm.name == "bayesian" == AlgorithmName.BAYESIAN
    assert algorithm.pruner == "median"
    assert {type(algorithm.name), type(algorithm.model), type(algorithm.early_stopping)} == {str}
    assert spec.model_dump()["algorithm"] == spec.model_dump(mode="json")["algorithm"]
    default = parse_spec({k: v for k, v in make_spec().items() if k != "algorithm"}).algorithm
    assert (default.name, default.model, default.pruner) == ("auto", "tpe", "none")
    assert type(default.model) is str


@pytest.mark.parametrize(
    ("algorithm", "message"),
    [
        ({"name": "bayesian", "model": "cmaes"}, "unknown model 'cmaes'; choose one of tpe, gp"),
        (
            {"name": "random", "early_stopping": "patience"},
            "unknown early_stopping 'patience'; choose one of asha, hyperband, median, none",
        ),
        ({"name": 3}, "unknown algorithm 3; choose one of auto, grid, random, bayesian, asha"),
        ({"name": "x" * 10_000}, "unknown algorithm 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...;"),
    ],
)
def test_unknown_words_name_the_choices(algorithm, message):
    with pytest.raises(InvalidSpec) as info:
        parse_spec(make_spec(algorithm=algorithm))
    assert message in info.value.message
    assert len(info.value.message) < 200


def test_a_grid_is_sized_by_arithmetic_and_capped():
    from hpo.spec import MAX_GRID_POINTS, IntParam

    # 10**12 + 1 values: listing them would take terabytes, so only arithmetic can answer
    trillion = make_spec(
        algorithm={"name": "grid"}, search_space={"n": {"type": "int", "low": 0, "high": 10**12}}
    )
    with pytest.raises(InvalidSpec) as info:
        parse_spec(trillion)
    assert "search_space: grid search over this space has 1,000,000,000,001 points" in str(
        info.value
    )
    assert f"the limit is {MAX_GRID_POINTS:,}; use a coarser 'step'" in str(info.value)
    at_limit = make_spec(
        algorithm={"name": "grid", "seed": 2**32 - 1},
        search_space={
            "a": {"type": "int", "low": 1, "high": 1000},
            "b": {"type": "float", "low": 0.0, "high": 0.999, "step": 0.001},
        },
    )
    assert grid_size(parse_spec(at_limit).space) == MAX_GRID_POINTS
    huge = {"a": IntParam(type="int", low=0, high=10**15), "b": IntParam(type="int", low=0, high=9)}
    assert grid_size(huge) == (10**15 + 1) * 10
    with pytest.raises(ValueError, match="over the limit"):
        grid_points(huge)
    with pytest.raises(ValueError, match="more than a grid may list"):
        huge["a"].grid_values()


def test_a_grid_seed_must_suit_numpy():
    grid = {"name": "grid", "seed": -1}
    with pytest.raises(InvalidSpec, match=r"algorithm.seed is -1, but grid search needs 0 <= seed"):
        parse_spec(make_spec(algorithm=grid, search_space="transformer-grid"))
    assert parse_spec(make_spec(algorithm={"name": "random", "seed": -1})).algorithm.seed == -1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": "alpha\n"}, "name: must not contain control characters (got 'alpha\\n')"),
        ({"name": "al\x00pha"}, "name: must not contain control characters"),
        ({"objective": {"metric": "acc\n"}}, "objective.metric: must not contain control"),
        ({"workload": {"name": "external\x00"}}, "workload.name: must not contain control"),
        (
            {"search_space": {"x\n": {"type": "float", "low": 0, "high": 1}}},
            "parameter name 'x\\n' is not allowed",
        ),
    ],
)
def test_names_end_where_they_seem_to(overrides, message):
    # a regex `match` with `$` let "alpha\n" through: `$` matches before a final newline
    with pytest.raises(InvalidSpec) as info:
        parse_spec(make_spec(**overrides))
    assert message in info.value.message
