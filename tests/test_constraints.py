"""Constraints between parameters: the parser, creation-time checks, and asks that only ever
hand out feasible configurations (on PostgreSQL and SQLite, on every algorithm)."""

from __future__ import annotations

import itertools
import re

import pytest

from hpo import InvalidSpec, NoFeasibleConfiguration, parse_spec
from hpo.algorithms import PastTrial, sample_params
from hpo.constraints import (
    MAX_CONSTRAINT_CHARS,
    MAX_CONSTRAINTS,
    ConstraintError,
    parse_constraint,
    parse_constraints,
)
from tests.conftest import make_spec, row_counts

ISSUE_CONSTRAINTS = [
    "hidden_size % num_heads == 0",
    "batch_size * gradient_accumulation_steps <= 256",
]
KINDS = {
    "hidden_size": "number",
    "num_heads": "number",
    "batch_size": "number",
    "gradient_accumulation_steps": "number",
    "optimizer": "text",
    "model.layers": "number",
    "use_amp": "number",
}
HIDDEN = [64, 96, 128, 192, 256]
HEADS = [2, 3, 4, 8]
SPACE = {
    "hidden_size": {"type": "categorical", "choices": HIDDEN},
    "num_heads": {"type": "categorical", "choices": HEADS},
    "batch_size": {"type": "int", "low": 16, "high": 128, "step": 16},
    "gradient_accumulation_steps": {"type": "int", "low": 1, "high": 8},
}


def _feasible(p: dict) -> bool:
    return (
        p["hidden_size"] % p["num_heads"] == 0
        and p["batch_size"] * p["gradient_accumulation_steps"] <= 256
    )


FEASIBLE_GRID = sum(
    _feasible(dict(hidden_size=h, num_heads=n, batch_size=b, gradient_accumulation_steps=g))
    for h, n, b, g in itertools.product(HIDDEN, HEADS, range(16, 129, 16), range(1, 9))
)


# -- the parser ---------------------------------------------------------------------------------


def test_the_issue_examples_parse_and_decide_feasibility():
    modulo, product = parse_constraints(ISSUE_CONSTRAINTS, KINDS)
    assert modulo.names == {"hidden_size", "num_heads"}
    assert modulo({"hidden_size": 96, "num_heads": 3})
    assert not modulo({"hidden_size": 64, "num_heads": 3})
    assert product({"batch_size": 64, "gradient_accumulation_steps": 4})
    assert not product({"batch_size": 64, "gradient_accumulation_steps": 5})


@pytest.mark.parametrize(
    ("text", "params", "expected"),
    [
        ("1 <= num_heads < hidden_size / 16", {"num_heads": 4, "hidden_size": 128}, True),
        ("1 <= num_heads < hidden_size / 16", {"num_heads": 8, "hidden_size": 128}, False),
        ("not (batch_size > 64) or num_heads == 2", {"batch_size": 128, "num_heads": 2}, True),
        ("-batch_size + 2 ** 3 < 0 and batch_size // 3 != 5", {"batch_size": 16}, False),
        ("optimizer == 'sgd' or batch_size <= 32", {"optimizer": "adam", "batch_size": 64}, False),
        ("'adam' != optimizer", {"optimizer": "sgd"}, True),
        ("model.layers * 2 >= 4", {"model.layers": 2}, True),
        ("use_amp == true and optimizer != null", {"use_amp": True, "optimizer": "sgd"}, True),
        ("use_amp == False or optimizer == None", {"use_amp": True, "optimizer": "sgd"}, False),
        # nested powers stop at the range of a 64-bit float, instead of growing without bound
        ("((((((batch_size ** 8) ** 8) ** 8) ** 8) ** 8) ** 8) > 0", {"batch_size": 16}, False),
        ("batch_size ** 2 == 256", {"batch_size": 16}, True),
        (f"batch_size ** 8 == {2**53 + 1} ** 2", {"batch_size": 16}, False),
        # a configuration without a parameter the constraint reads does not satisfy it
        ("batch_size > 0", {"num_heads": 2}, False),
        # division and modulo by zero make the point infeasible rather than raising
        ("batch_size / (num_heads - 2) > 0", {"batch_size": 16, "num_heads": 2}, False),
        ("hidden_size % (num_heads - 2) == 0", {"hidden_size": 64, "num_heads": 2}, False),
        ("not (hidden_size % (num_heads - 2) == 0)", {"hidden_size": 64, "num_heads": 2}, False),
    ],
)
def test_evaluation(text, params, expected):
    assert parse_constraint(text, KINDS)(params) is expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("__import__('os').system('true') == 0", "function calls are not allowed"),
        ("hidden_size.__class__ == 1", "attribute access is not allowed"),
        ("hidden_size.real > 0", "attribute access is not allowed"),
        ("[1][0] < hidden_size", "subscripts ([...]) are not allowed"),
        ("[1] < hidden_size", "lists are not allowed"),
        ("(lambda: 1)() == 1", "function calls are not allowed"),
        ("hidden_size if num_heads else 1", "conditional expressions"),
        ("'ab' * hidden_size == 'abab'", "'*' needs numbers, but text"),
        ("optimizer + 1 > 2", "'+' needs numbers, but text"),
        ("optimizer < 'b'", "text can only be compared with == or !="),
        ("optimizer == 'a' + 'b'", "'+' needs numbers"),
        ("hidden_size ** num_heads > 1", "constant integer exponent"),
        ("hidden_size ** 99 > 1", "constant integer exponent"),
        ("hidden_size in (1, 2)", "tuples are not allowed"),
        ("hidden_size is 1", "'is' and 'is not' are not allowed"),
        ("hidden_size & 1 == 0", "bitwise operators"),
        ("hidden_size", "must be a comparison"),
        ("(a := 1) > 0", "assignments"),
        ("hidden_size > 1e999", "numbers must be finite"),
        ("hidden_size > " + "9" * 400, "too large"),
        ("(hidden_size > 1) > 0", "compares the result of a comparison"),
        ("hidden_size %% num_heads == 0", "is not a valid expression"),
        ("hidden_size > ", "is not a valid expression"),
        ("import os", "is not a valid expression"),
        ("", "is empty"),
        ("hiden_size > 1", "'hiden_size' is not a parameter of the search space; known"),
        ("-" * 100 + "hidden_size > 0", "nests deeper than"),
        ("hidden_size > 1 " + "and hidden_size > 1 " * 30, "characters, but the limit is 500"),
    ],
)
def test_what_is_refused_is_named(text, message):
    with pytest.raises(ConstraintError, match=re.escape(message)):
        parse_constraint(text, KINDS)


def test_counts_are_limited_before_any_parsing():
    with pytest.raises(ConstraintError, match=f"the limit is {MAX_CONSTRAINTS}"):
        parse_constraints(["hidden_size > 1"] * (MAX_CONSTRAINTS + 1), KINDS)
    huge = "hidden_size > " + "1" * MAX_CONSTRAINT_CHARS
    with pytest.raises(ConstraintError, match="constraints\\[1\\].*the limit is 500"):
        parse_constraints(["hidden_size > 1", huge], KINDS)


# -- the samplers, pure -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["random", "asha", "bayesian"])
def test_a_seeded_study_redraws_the_same_feasible_configurations(name):
    spec = parse_spec(
        make_spec(
            search_space=SPACE, algorithm={"name": name, "seed": 5}, constraints=ISSUE_CONSTRAINTS
        )
    )
    draws = [
        [
            sample_params(
                spec.algorithm,
                spec.space,
                number=n,
                direction="maximize",
                constraints=spec.constraints,
            )
            for n in range(30)
        ]
        for _ in range(2)
    ]
    assert draws[0] == draws[1]
    assert all(_feasible(p) for p in draws[0])


def test_without_constraints_the_same_samplers_do_draw_infeasible_points():
    """What the redraws guard against: this space is mostly infeasible to a plain sampler."""
    spec = parse_spec(make_spec(search_space=SPACE, algorithm={"name": "random", "seed": 5}))
    draws = [
        sample_params(spec.algorithm, spec.space, number=n, direction="maximize") for n in range(30)
    ]
    assert sum(not _feasible(p) for p in draws) >= 5


def test_gp_redraws_too():
    pytest.importorskip("torch")
    pytest.importorskip("scipy")
    spec = parse_spec(
        make_spec(
            search_space=SPACE,
            algorithm={"name": "bayesian", "model": "gp", "seed": 3, "n_startup_trials": 4},
            constraints=ISSUE_CONSTRAINTS,
        )
    )
    history = []
    for n in range(12):
        params = sample_params(
            spec.algorithm,
            spec.space,
            number=n,
            direction="maximize",
            history=history,
            constraints=spec.constraints,
        )
        assert _feasible(params), params
        history.append(PastTrial(n, "completed", params, params["hidden_size"] / 256))


def test_a_constraint_nothing_satisfies_ends_the_ask_with_an_error_not_a_point():
    """The spec refuses such a space; a hand-built one shows the bound on the redraws."""
    spec = parse_spec(make_spec(algorithm={"name": "bayesian", "seed": 1}))
    with pytest.raises(NoFeasibleConfiguration, match="no configuration that satisfies"):
        sample_params(
            spec.algorithm,
            spec.space,
            number=0,
            direction="maximize",
            constraints=["x > 2"],
        )


def test_a_grid_whose_constraints_keep_every_point_keeps_the_grid_order():
    plain = parse_spec(make_spec(search_space=SPACE, algorithm={"name": "grid", "seed": 9}))
    kept = parse_spec(
        make_spec(
            search_space=SPACE, algorithm={"name": "grid", "seed": 9}, constraints=["num_heads > 0"]
        )
    )
    for n in range(0, 1280, 37):
        assert sample_params(
            kept.algorithm, kept.space, number=n, direction="maximize", constraints=kept.constraints
        ) == sample_params(plain.algorithm, plain.space, number=n, direction="maximize")


# -- over the API, on both databases ------------------------------------------------------------


def _create(api, **overrides):
    return api.post("/api/v1/studies", json=make_spec(search_space=SPACE, **overrides))


@pytest.mark.parametrize(
    ("constraints", "algorithm", "message"),
    [
        (["hidden_size %% num_heads == 0"], "random", "is not a valid expression"),
        (["hidden_size % heads == 0"], "random", "'heads' is not a parameter"),
        (["open('x') == 1"], "random", "function calls are not allowed"),
        (["hidden_size > 256"], "random", "no configuration among 4,096 sampled"),
        (["hidden_size > 256"], "grid", "none of the 1,280 points of the grid"),
        (["hidden_size < num_heads", "batch_size > 0"], "bayesian", "'hidden_size < num_heads'"),
    ],
)
def test_bad_constraints_are_refused_with_422_and_nothing_stored(
    api, db_url, constraints, algorithm, message
):
    before = row_counts(db_url)
    resp = _create(api, algorithm={"name": algorithm}, constraints=constraints)
    assert resp.status_code == 422, resp.text
    detail = resp.json()["detail"]
    assert message in detail
    assert "constraints" in detail
    assert row_counts(db_url) == before
    assert api.get("/api/v1/studies/s1").status_code == 404


def test_a_grid_too_large_to_check_is_refused_with_the_limit(api):
    space = {**SPACE, "dropout": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.001}}
    resp = api.post(
        "/api/v1/studies",
        json=make_spec(
            search_space=space, algorithm={"name": "grid"}, constraints=ISSUE_CONSTRAINTS
        ),
    )
    assert resp.status_code == 422
    assert "a grid with constraints may have at most 65,536 points" in resp.json()["detail"]


# on PostgreSQL, the production database: the ask path is the same SQL on both, and 2,000
# asks (TPE's modelling 500 trials) cost a minute and a half per database
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("algorithm", ["grid", "random", "asha", "bayesian"])
def test_no_infeasible_configuration_is_ever_handed_out(api, algorithm):
    created = _create(
        api,
        algorithm={"name": algorithm, "seed": 11},
        constraints=ISSUE_CONSTRAINTS,
        budget={"max_trials": 500, "max_epochs": 4},
    )
    assert created.status_code == 201, created.text
    assert created.json()["spec"]["constraints"] == ISSUE_CONSTRAINTS
    seen = []
    for _ in range(500):
        resp = api.post("/api/v1/studies/s1/trials")
        assert resp.status_code == 201, resp.text
        trial = resp.json()
        params = trial["params"]
        assert _feasible(params), params
        seen.append(params)
        value = params["hidden_size"] / 256 - params["gradient_accumulation_steps"] / 16
        done = api.post(
            f"/api/v1/studies/s1/trials/{trial['number']}/complete",
            json={"metrics": {"acc": value}},
            headers={"Authorization": f"Bearer {trial['token']}"},
        )
        assert done.status_code == 200, done.text
    if algorithm == "grid":
        assert len({tuple(sorted(p.items())) for p in seen}) == 500  # each point once


def test_the_grid_size_counts_only_feasible_points_and_the_grid_ends_there(api):
    created = _create(
        api,
        algorithm={"name": "grid", "seed": 2},
        constraints=ISSUE_CONSTRAINTS,
        budget={"max_epochs": 4},
    )
    assert created.status_code == 201, created.text
    assert 0 < FEASIBLE_GRID < 1280
    assert created.json()["size"] == FEASIBLE_GRID
    assert api.get("/api/v1/studies/s1").json()["size"] == FEASIBLE_GRID
    seen = set()
    for _ in range(FEASIBLE_GRID):
        resp = api.post("/api/v1/studies/s1/trials")
        assert resp.status_code == 201, resp.text
        params = resp.json()["params"]
        assert _feasible(params)
        seen.add(tuple(sorted(params.items())))
    assert len(seen) == FEASIBLE_GRID
    extra = api.post("/api/v1/studies/s1/trials")
    assert extra.status_code == 409
    assert f"all {FEASIBLE_GRID} trials were handed out" in extra.json()["detail"]


def test_costly_constraints_are_checked_within_a_bounded_amount_of_work():
    wide = {
        "a": {"type": "int", "low": 0, "high": 255},
        "b": {"type": "int", "low": 0, "high": 255},
    }
    costly = "a + b + a + b + a + b > 0 and a + b < 1000"
    assert parse_spec(
        make_spec(search_space=wide, algorithm={"name": "grid"}, constraints=["a < b"])
    )
    with pytest.raises(InvalidSpec, match="65,536 combinations of constrained values"):
        parse_spec(make_spec(search_space=wide, algorithm={"name": "grid"}, constraints=[costly]))
    long = " + ".join(["(x + x)"] * 20) + " > 100"
    with pytest.raises(InvalidSpec, match="no configuration among") as refused:
        parse_spec(make_spec(constraints=[long] * 10))
    sampled = re.search(r"among ([\d,]+) sampled", str(refused.value))
    assert sampled and 64 <= int(sampled.group(1).replace(",", "")) < 4096


def test_parse_spec_reports_the_failing_constraint_by_index():
    with pytest.raises(InvalidSpec, match=r"constraints\[1\] 'batch_size \*\* x > 1'"):
        parse_spec(
            make_spec(search_space=SPACE, constraints=["batch_size > 1", "batch_size ** x > 1"])
        )


def test_study_show_says_the_constraints_beside_the_feasible_size(api, capsys, monkeypatch):
    from hpo import cli
    from hpo.client import Client

    _create(api, algorithm={"name": "grid"}, constraints=ISSUE_CONSTRAINTS, budget={})
    monkeypatch.setattr(cli, "Client", lambda url: Client(http=api))
    assert cli.main(["study", "show", "s1", "--url", "http://localhost"]) == 0
    out = capsys.readouterr().out
    assert f"budget:    {FEASIBLE_GRID} trials" in out
    assert f"where:     {'; '.join(ISSUE_CONSTRAINTS)}" in out
