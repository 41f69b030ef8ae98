"""Issue 7, never a 500 for anything a caller sent: every value a spec carries is storable on
both databases and usable by the samplers, and every count has a limit.

Each bad spec is refused by ``parse_spec`` with a message naming the field and the rule, and by
the real API with 422 and nothing written, on PostgreSQL and SQLite.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from hpo import InvalidSpec, load_spec, parse_spec
from hpo.spec import (
    MAX_CHOICES,
    MAX_EPOCHS,
    MAX_GRID_POINTS,
    MAX_GRID_SEED,
    MAX_INT_PARAM,
    MAX_OPTIONS_DEPTH,
    MAX_OPTIONS_VALUES,
    MAX_PARAMS,
    MAX_REDUCTION_FACTOR,
    MAX_TRIALS,
    MAX_WALL_SECONDS,
)
from tests.conftest import make_spec, row_counts

INF, NAN = float("inf"), float("nan")
INT64_MAX = 2**63 - 1
ROOT = Path(__file__).resolve().parents[1]


def space(**params: object) -> dict[str, object]:
    return {"search_space": params}


def flt(low: float = 0.0, high: float = 1.0, **extra: object) -> dict[str, object]:
    return {"type": "float", "low": low, "high": high, **extra}


def int_(low: int = 0, high: int = 10, **extra: object) -> dict[str, object]:
    return {"type": "int", "low": low, "high": high, **extra}


def cat(*choices: object) -> dict[str, object]:
    return {"type": "categorical", "choices": list(choices)}


def options(opts: object) -> dict[str, object]:
    return {"workload": {"name": "external", "options": opts}}


def nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


GRID_1E12 = {
    "algorithm": {"name": "grid"},
    # 10**12 + 1 values: listing them would need terabytes, so sizing must be arithmetic
    **space(n=int_(0, 10**12)),
}

# (case, overrides of make_spec, field named in the message, the rule it states)
BAD = [
    # non-finite numbers, anywhere
    ("float step inf", space(x=flt(step=INF)), "search_space.x.step", "must be a finite number"),
    ("float low nan", space(x=flt(low=NAN)), "search_space.x.low", "must be a finite number"),
    ("float high -inf", space(x=flt(high=-INF)), "search_space.x.high", "must be a finite number"),
    (
        "max_wall_seconds inf",
        {"budget": {"max_wall_seconds": INF}},
        "budget.max_wall_seconds",
        "must be a finite number (got inf)",
    ),
    (
        "gpus nan",
        {"resources": {"gpus_per_trial": NAN}},
        "resources.gpus_per_trial",
        "must be a finite number",
    ),
    (
        "nan among choices",
        space(c=cat(0.1, NAN)),
        "search_space.c.choices",
        "choice 1 must be a finite number (got nan)",
    ),
    ("inf among choices", space(c=cat(INF)), "search_space.c.choices", "must be a finite number"),
    ("nan in options", options({"lr": NAN}), "workload.options", "lr: must be a finite number"),
    (
        "inf deep in options",
        options({"a": {"b": [1, {"c": -INF}]}}),
        "workload.options",
        "a.b[1].c: must be a finite number (got -inf)",
    ),
    # a NUL character (PostgreSQL cannot store it) or a lone surrogate (not UTF-8)
    ("NUL in name", {"name": "ab\x00c"}, "name", "must not contain control characters"),
    (
        "NUL in metric",
        {"objective": {"metric": "acc\x00"}},
        "objective.metric",
        "must not contain control characters",
    ),
    (
        "NUL in workload name",
        {"workload": {"name": "external\x00"}},
        "workload.name",
        "must not contain control characters",
    ),
    (
        "NUL in a choice",
        space(c=cat("adam", "sgd\x00")),
        "search_space.c.choices",
        "choice 1 must not contain a NUL character",
    ),
    (
        "NUL in an option key",
        options({"paths": {"tr\x00ain": "x"}}),
        "workload.options",
        "the key must not contain a NUL character",
    ),
    (
        "NUL in an option value",
        options({"paths": ["a", "b\x00"]}),
        "workload.options",
        "paths[1]: must not contain a NUL character",
    ),
    ("NUL in a parameter name", space(**{"x\x00": flt()}), "search_space", "parameter name"),
    (
        "NUL as the preset name",
        {"search_space": "transformer-small\x00"},
        "search_space",
        "unknown search-space preset",
    ),
    ("NUL in preset field", {"preset": "p\x00"}, "preset", "is not a preset name"),
    (
        "lone surrogate in a choice",
        space(c=cat("\ud800")),
        "search_space.c.choices",
        "must be valid Unicode text",
    ),
    (
        "lone surrogate in options",
        options({"s": "\udfff"}),
        "workload.options",
        "s: must be valid Unicode text",
    ),
    # integers beyond 64 bits, or beyond what Optuna keeps exactly
    ("seed over int64", {"algorithm": {"name": "random", "seed": 2**64}}, "algorithm.seed", "9223"),
    (
        "int param high over 2**53",
        space(n=int_(0, 10**30)),
        "search_space.n.high",
        "the integers Optuna stores exactly",
    ),
    (
        "int param low under -2**53",
        space(n=int_(-(2**60), 0)),
        "search_space.n.low",
        "the integers Optuna stores exactly",
    ),
    (
        "int param step over 2**53",
        space(n=int_(0, 10, step=2**64)),
        "search_space.n.step",
        "the integers Optuna stores exactly",
    ),
    (
        "max_trials over 32 bits",
        {"budget": {"max_trials": 2**63}},
        "budget.max_trials",
        f"less than or equal to {MAX_TRIALS}",
    ),
    (
        "max_epochs over its limit",
        {"budget": {"max_epochs": MAX_EPOCHS + 1}},
        "budget.max_epochs",
        f"less than or equal to {MAX_EPOCHS}",
    ),
    (
        "n_startup_trials over 32 bits",
        {"algorithm": {"name": "bayesian", "n_startup_trials": 2**64}},
        "algorithm.n_startup_trials",
        f"less than or equal to {MAX_TRIALS}",
    ),
    (
        "grace_period over its limit",
        {"algorithm": {"name": "asha", "grace_period": 2**70}},
        "algorithm.grace_period",
        f"grace_period <= {MAX_EPOCHS:,}",
    ),
    (
        "reduction_factor over its limit",
        {"algorithm": {"name": "asha", "reduction_factor": 2**64}},
        "algorithm.reduction_factor",
        f"reduction_factor <= {MAX_REDUCTION_FACTOR:,}",
    ),
    (
        "int in options over int64",
        options({"max_samples": 2**64}),
        "workload.options",
        "max_samples: must be an integer that fits in 64 bits",
    ),
    (
        "int among choices over int64",
        space(c=cat(1, -(2**63) - 1)),
        "search_space.c.choices",
        "choice 1 must be an integer that fits in 64 bits",
    ),
    (
        "grid seed numpy cannot take",
        {"algorithm": {"name": "grid", "seed": -1}, **space(c=cat(1, 2))},
        "algorithm.seed",
        f"0 <= seed <= {MAX_GRID_SEED}",
    ),
    # names: no trailing newline sneaking past a `$`
    ("name with a trailing newline", {"name": "alpha\n"}, "name", "control characters"),
    ("parameter with a trailing newline", space(**{"x\n": flt()}), "search_space", "'x\\n'"),
    # grids sized by arithmetic and bounded; stepped floats bounded for every algorithm
    ("grid of 10**12 points", GRID_1E12, "search_space", f"limit is {MAX_GRID_POINTS:,}"),
    (
        "grid product over the limit",
        {"algorithm": {"name": "grid"}, **space(a=int_(1, 1001), b=int_(1, 1000))},
        "search_space",
        "1,001,000 points",
    ),
    (
        "float step of 1e-300",
        space(x=flt(0, 1, step=1e-300)),
        "search_space.x",
        "must be step >= 1e-12",
    ),
    (
        "float step cutting too many values",
        space(x=flt(0, 1e6, step=1e-4)),
        "search_space.x",
        "into more than 1,000,000,000 values",
    ),
    (
        "float range overflowing",
        space(x=flt(-1e308, 1e308)),
        "search_space.x",
        "high - low overflows a 64-bit float",
    ),
    # counts and sizes
    (
        "too many parameters",
        {"search_space": {f"p{i}": flt() for i in range(MAX_PARAMS + 1)}},
        "search_space",
        f"the limit is {MAX_PARAMS:,}",
    ),
    (
        "too many choices",
        space(c=cat(*range(MAX_CHOICES + 1))),
        "search_space.c.choices",
        f"the limit is {MAX_CHOICES:,}",
    ),
    (
        "choices too long",
        space(c=cat("a" * 40_000, "b" * 40_000)),
        "search_space.c.choices",
        "characters as JSON",
    ),
    (
        "choices equal to Optuna",
        space(c=cat(1, 1.0)),
        "search_space.c.choices",
        "has duplicates",
    ),
    ("list as a choice", space(c=cat([1, 2])), "search_space.c.choices", "got list"),
    (
        "options nested too deep",
        options({"a": nested(MAX_OPTIONS_DEPTH)}),
        "workload.options",
        f"nests deeper than {MAX_OPTIONS_DEPTH} levels",
    ),
    (
        "options with too many values",
        options({"a": list(range(MAX_OPTIONS_VALUES))}),
        "workload.options",
        f"more than {MAX_OPTIONS_VALUES:,} values",
    ),
    (
        "options with too much text",
        options({"a": "x" * 70_000}),
        "workload.options",
        "characters of text",
    ),
    (
        "max_wall_seconds over ten years",
        {"budget": {"max_wall_seconds": MAX_WALL_SECONDS + 1}},
        "budget.max_wall_seconds",
        f"less than or equal to {MAX_WALL_SECONDS}",
    ),
    # the vocabulary's words, with the friendly message kept
    (
        "unknown sampler model",
        {"algorithm": {"name": "bayesian", "model": "cmaes"}},
        "algorithm.model",
        "unknown model 'cmaes'; choose one of tpe, gp",
    ),
    (
        "unknown early stopping",
        {"algorithm": {"name": "random", "early_stopping": "patience"}},
        "algorithm.early_stopping",
        "choose one of asha, hyperband, median, none",
    ),
    (
        "algorithm that is not a string",
        {"algorithm": {"name": 3}},
        "algorithm.name",
        "unknown algorithm 3; choose one of auto, grid, random, bayesian, asha",
    ),
]


def _problem(overrides: dict[str, object]) -> str:
    with pytest.raises(InvalidSpec) as info:
        parse_spec(make_spec(**overrides))
    return info.value.message


@pytest.mark.parametrize(("case", "overrides", "field", "rule"), BAD, ids=[c[0] for c in BAD])
def test_bad_spec_is_refused_naming_field_and_rule(case, overrides, field, rule):
    message = _problem(overrides)
    assert field in message and rule in message, message


def test_echoed_values_are_cut_short():
    message = _problem({"name": "x" * 1_000_000, "algorithm": {"name": "y" * 1_000_000}})
    assert len(message) < 500, message
    assert "unknown algorithm 'yyy" in message and "..." in message


def test_yaml_infinities_and_nans_are_refused_too(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(
        "name: a\nobjective: {metric: m}\n"
        "search_space: {x: {type: float, low: 0, high: .inf}, c: {type: categorical, "
        "choices: [.nan]}}\n"
    )
    with pytest.raises(InvalidSpec) as info:
        load_spec(path)
    assert "search_space.x.high: must be a finite number (got inf)" in info.value.message
    assert "search_space.c.choices: choice 0 must be a finite number" in info.value.message


def test_options_must_be_plain_json_data():
    message = _problem(options({"when": yaml.safe_load("2024-01-01")}))
    assert "workload.options: when: must be a string, number, true/false or null" in message
    message = _problem(options({"labels": {1: "one"}}))
    assert "keys must be strings" in message


GOOD = [
    ("name of 128 characters", {"name": "a" * 128}),
    ("name with every allowed sign", {"name": "a.b-c_d.1"}),
    ("seed zero", {"algorithm": {"name": "random", "seed": 0}}),
    ("negative seed outside a grid", {"algorithm": {"name": "random", "seed": -5}}),
    ("int64 seed outside a grid", {"algorithm": {"name": "bayesian", "seed": INT64_MAX}}),
    (
        "largest grid seed",
        {"algorithm": {"name": "grid", "seed": MAX_GRID_SEED}, **space(c=cat(1, 2))},
    ),
    ("int param at ±2**53", space(n=int_(-MAX_INT_PARAM, MAX_INT_PARAM))),
    ("float step of 1e-12", space(x=flt(0, 1e-4, step=1e-12))),
    ("wide float range", space(x=flt(-1e307, 1e307))),
    ("log range over many decades", space(x=flt(1e-300, 1e300, log=True))),
    (
        "grid of exactly the limit",
        {"algorithm": {"name": "grid"}, **space(a=int_(1, 1000), b=int_(1, 1000))},
    ),
    ("choices with tabs and accents", space(c=cat("tab\tand ünïcödé", "a\nb"))),
    (
        "choices at their limits",
        space(c=cat(*(f"v{i}" for i in range(MAX_CHOICES - 4)), None, True, -(2**63), 0.5)),
    ),
    (
        "options of every JSON kind, as deep as allowed",
        options(
            {
                "text_path": "/data/ünïcödé.txt",
                "big": INT64_MAX,
                "tiny": -1e308,
                "flags": [True, False, None],
                "deep": nested(MAX_OPTIONS_DEPTH - 1),
                "weird key!": {"": 0},
            }
        ),
    ),
    (
        "budget at its limits",
        {
            "budget": {
                "max_trials": MAX_TRIALS,
                "max_epochs": MAX_EPOCHS,
                "max_wall_seconds": MAX_WALL_SECONDS,
            },
            "algorithm": {
                "name": "asha",
                "grace_period": MAX_EPOCHS - 1,
                "reduction_factor": MAX_REDUCTION_FACTOR,
            },
        },
    ),
]


@pytest.mark.parametrize(("case", "overrides"), GOOD, ids=[c[0] for c in GOOD])
def test_edge_cases_stay_valid(case, overrides):
    spec = parse_spec(make_spec(**overrides))
    # what is stored is plain JSON that reads back as the same spec
    stored = json.loads(json.dumps(spec.model_dump(mode="json"), allow_nan=False))
    assert parse_spec(stored) == spec


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_examples_stay_valid(path):
    load_spec(path)


@pytest.mark.parametrize("preset", sorted(p.stem for p in (ROOT / "search_spaces").glob("*.yaml")))
def test_shipped_presets_stay_valid(preset):
    parse_spec(make_spec(search_space=preset))
    if "grid" in preset:
        parse_spec(make_spec(search_space=preset, algorithm={"name": "grid", "seed": 0}))


# Raw JSON bodies as a client could send them: json.dumps writes NaN and Infinity, escapes NUL
# and lone surrogates as \u0000 and \ud800, and 1e309 is read by the server as infinity.
RAW_BODIES = [
    (case, json.dumps(make_spec(**overrides)), field, rule) for case, overrides, field, rule in BAD
] + [
    (
        "max_wall_seconds 1e309",
        json.dumps(make_spec(budget={"max_wall_seconds": 5})).replace(
            '"max_wall_seconds": 5', '"max_wall_seconds": 1e309'
        ),
        "budget.max_wall_seconds",
        "must be a finite number (got inf)",
    ),
    (
        "float step -1e309",
        json.dumps(make_spec(**space(x=flt(step=0.5)))).replace('"step": 0.5', '"step": -1e309'),
        "search_space.x.step",
        "must be a finite number (got -inf)",
    ),
]


def test_every_bad_spec_is_422_over_the_api_and_stores_nothing(api, db_url):
    """All the bad specs against one database per backend (a database per case costs minutes)."""
    wrong = []
    for case, body, field, rule in RAW_BODIES:
        before = row_counts(db_url)
        resp = api.post(
            "/api/v1/studies", content=body, headers={"Content-Type": "application/json"}
        )
        detail = str(resp.json().get("detail") if resp.status_code == 422 else resp.text)
        if resp.status_code != 422 or field not in detail or rule not in detail:
            wrong.append(f"{case}: {resp.status_code} {detail[:200]}")
        elif row_counts(db_url) != before:
            wrong.append(f"{case}: 422, but rows were written")
    assert not wrong, "\n".join(wrong)
    assert api.get("/api/v1/studies").json()["count"] == 0


def test_a_good_edge_case_is_stored_and_asked_on_both_databases(api, db_url):
    spec = make_spec(
        "edges",
        **options({"path": "ünï", "n": INT64_MAX, "x": -1e308, "deep": nested(3)}),
        search_space={
            "n": int_(-MAX_INT_PARAM, MAX_INT_PARAM),
            "c": cat(None, True, -(2**63), "tab\there"),
        },
    )
    created = api.post("/api/v1/studies", json=spec)
    assert created.status_code == 201, created.text
    assert created.json()["spec"]["workload"]["options"]["n"] == INT64_MAX
    trial = api.post("/api/v1/studies/edges/trials")
    assert trial.status_code == 201, trial.text
    assert -MAX_INT_PARAM <= trial.json()["params"]["n"] <= MAX_INT_PARAM
