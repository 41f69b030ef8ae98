"""BOHB's configurations that no model proposes come from a scrambled Halton sequence."""

from __future__ import annotations

import pytest

from hpo import algorithms
from hpo.algorithms._quasi_random import halton, quasi_random_params, scramble_key
from hpo.algorithms._space import contains
from hpo.spec import parse_spec


@pytest.mark.parametrize("key", ["seed:0", "seed:7", "study:lr-sweep"])
def test_the_first_points_fall_one_into_each_interval_of_every_dimension(key):
    """The first b**k points of the dimension in base b (2, 3, 5, 7, 11) split its range into
    b**k equal intervals and put one point in each: what uniform draws almost never do."""
    bases = (2, 3, 5, 7, 11)
    for dim, base in enumerate(bases):
        for k in (1, 2, 3):
            count = base**k
            if count > 1500:
                continue
            cells = {int(halton(i, len(bases), key)[dim] * count) for i in range(count)}
            assert cells == set(range(count)), (key, base, k)


def test_a_space_of_many_parameters_is_stratified_too():
    """Past 54 parameters the bases exceed FULL_PERMUTATION_BASE and get affine scrambles."""
    from hpo.algorithms._quasi_random import FULL_PERMUTATION_BASE, _primes

    dims = 60
    base = _primes(dims)[-1]
    assert base > FULL_PERMUTATION_BASE
    cells = {int(halton(i, dims, "seed:3")[-1] * base) for i in range(base)}
    assert cells == set(range(base))


def test_each_key_scrambles_its_own_sequence():
    first = [halton(i, 6, "seed:1") for i in range(50)]
    assert first == [halton(i, 6, "seed:1") for i in range(50)], "a pure function of the key"
    assert first != [halton(i, 6, "seed:2") for i in range(50)]
    assert all(0.0 <= u < 1.0 for point in first for u in point)
    # unscrambled Halton starts at the origin and its high bases move in lockstep; scrambled,
    # point 0 is anywhere and no two coordinates of it are equal
    assert len({round(u, 9) for u in first[0]}) == 6
    assert halton(10**12, 3, "seed:1") != halton(10**12 + 1, 3, "seed:1"), "any trial number"
    with pytest.raises(ValueError, match=">= 0"):
        halton(-1, 2, "seed:1")


def test_the_key_is_the_seed_else_the_study_name():
    assert scramble_key(3, "a") == scramble_key(3, "b"), "the same seed under any name"
    assert scramble_key(None, "a") == scramble_key(None, "a") != scramble_key(None, "b")
    assert scramble_key(None, None) != scramble_key(None, None), "unkeyed: fresh each time"


SPACE = {
    "lr": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
    "dropout": {"type": "float", "low": 0.0, "high": 0.5},
    "wd": {"type": "float", "low": 0.0, "high": 0.3, "step": 0.1},
    "layers": {"type": "int", "low": 1, "high": 4},
    "batch": {"type": "int", "low": 16, "high": 512, "log": True},
    "heads": {"type": "int", "low": 2, "high": 16, "step": 2},
    "optimizer": {"type": "categorical", "choices": ["adamw", "sgd", None, True]},
}


def test_every_point_is_a_configuration_of_the_space_and_reaches_its_ends():
    spec = parse_spec({"name": "q", "objective": {"metric": "acc"}, "search_space": SPACE})
    dists = algorithms.distributions(spec.space)
    points = [quasi_random_params(spec.space, number=n, key="seed:5") for n in range(400)]
    for params in points:
        assert list(params) == list(SPACE)
        for name, value in params.items():
            assert contains(dists[name], value), (name, value)
    for name in ("wd", "layers", "heads"):
        values = {p[name] for p in points}
        assert values == set(spec.space[name].grid_values()), name
    batches = [p["batch"] for p in points]
    assert min(batches) == 16 and max(batches) > 450, "the log range, end to end"
    assert sum(b < 64 for b in batches) > 150, "log-uniform: as many in 16..64 as in 128..512"
    assert {repr(p["optimizer"]) for p in points} == {"'adamw'", "'sgd'", "None", "True"}
    assert 1e-5 <= min(p["lr"] for p in points) < 2e-5 and max(p["lr"] for p in points) > 0.05


def test_declaring_the_parameters_in_another_order_changes_nothing():
    spec = parse_spec({"name": "q", "objective": {"metric": "acc"}, "search_space": SPACE})
    flipped = parse_spec(
        {
            "name": "q",
            "objective": {"metric": "acc"},
            "search_space": dict(reversed(list(SPACE.items()))),
        }
    )
    for n in range(20):
        ours = quasi_random_params(spec.space, number=n, key="seed:5")
        theirs = quasi_random_params(flipped.space, number=n, key="seed:5")
        assert ours == theirs


def _bohb(seed):
    return parse_spec(
        {
            "name": "spread",
            "objective": {"metric": "acc"},
            "search_space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
            "algorithm": {"name": "auto", **({"seed": seed} if seed is not None else {})},
            "budget": {"max_epochs": 52},
        }
    )


@pytest.mark.parametrize("seed", [0, 1, None])
def test_auto_spreads_its_first_trials_over_the_space(seed):
    """Before any model, trial n of an auto study is Halton point n: the first 8 trials lie
    in 8 different eighths of x's range (8 uniform draws do that 0.24 % of the time). A study
    without a seed is spread too, by its name, and draws the same again under that name."""
    spec = _bohb(seed)
    algorithm = algorithms.in_force(spec)
    assert algorithm.model == "bohb"

    def first_draws(name):
        return [
            algorithms.sample_params(
                algorithm,
                spec.space,
                number=n,
                direction="maximize",
                history=[],
                study_name=name,
            )["x"]
            for n in range(8)
        ]

    xs = first_draws("spread")
    assert sorted(int(x * 8) for x in xs) == list(range(8)), xs
    if seed is None:
        assert first_draws("spread") == xs
        assert first_draws("another") != xs
    else:
        assert first_draws("another") == xs, "a seeded study draws by its seed alone"


def test_a_quasi_random_point_that_breaks_a_constraint_is_drawn_again():
    """The redraws of an infeasible point are random draws with their own seeds (an unseeded
    study included), so the ask still finds the feasible part of the space."""
    spec = parse_spec(
        {
            "name": "c",
            "objective": {"metric": "acc"},
            "search_space": {
                "x": {"type": "float", "low": 0.0, "high": 1.0},
                "y": {"type": "float", "low": 0.0, "high": 1.0},
            },
            "constraints": ["x + y <= 0.3"],
            "algorithm": {"name": "auto"},
            "budget": {"max_epochs": 52},
        }
    )
    algorithm = algorithms.in_force(spec)
    for n in range(40):
        params = algorithms.sample_params(
            algorithm,
            spec.space,
            number=n,
            direction="maximize",
            history=[],
            constraints=spec.constraints,
            study_name="c",
        )
        assert params["x"] + params["y"] <= 0.3
