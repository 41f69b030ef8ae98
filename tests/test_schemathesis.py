"""The API document is what the API does: schemathesis, with every check it has, against a live
``hpo serve --no-dispatch`` on each database.

It finds no server error, no answer that breaks the document (status, content type, headers,
body), no request the document calls invalid that is taken, and no request it calls valid that
is refused, but for the exclusions listed in :data:`EXCLUDED` with their reasons.

The database is seeded first with real studies and trials, and schemathesis draws the path's
``{study}`` and ``{number}``, the compare lists and the trial tokens from them (its
"dictionaries") in about half the cases, so that reads, figures and the trial protocol are
exercised on studies and trials that exist, not only answered 404.

``HPO_SCHEMATHESIS_SEED`` and ``HPO_SCHEMATHESIS_EXAMPLES`` replay or widen a run; a failure
prints schemathesis' report, with a curl line for each case.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests._servers import hpo_serve
from tests.conftest import make_spec

#: cases per operation and phase: about 2,400 requests and 30 s per database on 2 cores
#: (the whole test, both databases, about a minute)
EXAMPLES = int(os.environ.get("HPO_SCHEMATHESIS_EXAMPLES", "50"))
SEED = int(os.environ.get("HPO_SCHEMATHESIS_SEED", "20240808"))

#: (check, operations it is off for, why); every other check runs on every operation
EXCLUDED: list[tuple[str, list[str], str]] = [
    (
        "positive_data_acceptance",
        ["POST /api/v1/studies", "POST /api/v1/studies/{study}/fork"],
        "a study spec has rules across fields that JSON Schema cannot state (low below high, "
        "a grid's size, the workload's options, data roots; a fork keeps its parent's "
        "objective and workload): the issue itself asks for these to be refused with 422, so "
        "a spec the schema allows may rightly be refused",
    ),
    (
        "positive_data_acceptance",
        ["GET /api/v1/studies/{study}/figures/contour"],
        "x and y must name parameters of that study, which a schema shared by all studies "
        "cannot list: another name is rightly refused with 422",
    ),
    (
        "positive_data_acceptance",
        [
            "POST /api/v1/studies/{study}/trials/{number}/reports",
            "POST /api/v1/studies/{study}/trials/{number}/complete",
        ],
        "the metrics must hold the study's objective metric, whose name each study chooses: "
        "a report without it is rightly refused with 422",
    ),
    (
        "ensure_resource_availability",
        ["GET /api/v1/studies/{study}/best"],
        "a study has no best trial until one completes, and /best says so with 404 (hpo's "
        "NoCompletedTrial); the study itself is there at once, as the check wants",
    ),
]


#: the admin key the test makes before it starts the controller (access control on)
_ADMIN: dict[str, str] = {}


def api_headers() -> dict[str, str]:
    """What every request of this test carries: the admin key."""
    return {"X-API-Key": _ADMIN["key"]}


def _admin_key(db_url: str) -> str:
    from hpo import service
    from hpo.storage import Database

    db = Database(db_url)
    try:
        return service.create_key(db, name="admin", role="admin")[1]
    finally:
        db.dispose()


#: the trial protocol's calls, each given a running trial of its own to call on
PROTOCOL = ("reports", "heartbeat", "complete", "fail")


def _seed(url: str) -> dict[str, list[Any]]:
    """Studies and trials in every state the routes read, made over the API itself; returns
    the values schemathesis draws from (its dictionaries)."""
    with httpx.Client(base_url=url, headers=api_headers(), timeout=30) as http:
        return _seed_with(http)


def _seed_with(http: httpx.Client) -> dict[str, list[Any]]:
    space = {
        "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "layers": {"type": "int", "low": 1, "high": 4},
        "opt": {"type": "categorical", "choices": ["adam", "sgd"]},
    }
    for name in ("seeded", "spare-1", "spare-2", "spare-3"):
        created = http.post("/api/v1/studies", json=make_spec(name, search_space=space))
        assert created.status_code == 201, created.text
    seeds: dict[str, list[Any]] = {}
    # trials 0 and 1 completed, 2 failed, 3 running with reports, then one running per call
    for number in range(4 + len(PROTOCOL)):
        trial = http.post("/api/v1/studies/seeded/trials").json()
        assert trial["number"] == number, trial
        auth = {"Authorization": f"Bearer {trial['token']}"}
        if number >= 4:
            seeds[f"number_{PROTOCOL[number - 4]}"] = [number]
            seeds[f"token_{PROTOCOL[number - 4]}"] = [auth["Authorization"]]
            continue
        for step in (1, 2):
            report = {"step": step, "metrics": {"acc": 0.2 * step + 0.01 * number, "loss": 1.0}}
            sent = http.post(
                f"/api/v1/studies/seeded/trials/{number}/reports", json=report, headers=auth
            )
            assert sent.status_code == 200, sent.text
        if number < 3:
            end, body = (
                ("complete", {"metrics": {"acc": 0.5 + 0.1 * number}})
                if number < 2
                else ("fail", {"reason": "diverged", "kind": "nonfinite"})
            )
            ended = http.post(
                f"/api/v1/studies/seeded/trials/{number}/{end}", json=body, headers=auth
            )
            assert ended.status_code == 200, ended.text
    study_id = http.get("/api/v1/studies/seeded").json()["id"]
    return {
        **seeds,
        "studies": ["seeded", str(study_id)],
        "seeded": ["seeded"],
        "spare": ["spare-1", "spare-2", "spare-3"],
        "numbers": [0, 1, 2, 3],
        "compared_trials": ["0,1", "3,1,2", "0,0"],
        "compared_studies": ["seeded", f"seeded,spare-1,{study_id}"],
        "files": ["dashboard.js", "dashboard.css"],
    }


def _toml(value: Any) -> str:
    return json.dumps(value)  # a JSON string, list or number is TOML as well


def _bind(parameter: str, dictionary: str, probability: float = 0.5) -> str:
    return f'"{parameter}" = {{ dictionary = "{dictionary}", probability = {probability} }}'


def _config(seeds: dict[str, list[Any]]) -> str:
    # every check (as `--checks all`, which would also override the exclusions per operation);
    # max_response_time stays off: timings are the benchmarks' business, not a test's
    lines = ["[checks]", "enabled = true", "[dictionaries]"]
    lines += [f"{name} = {{ values = {_toml(values)} }}" for name, values in seeds.items()]
    lines += [
        "[parameters]",
        _bind("path.study", "studies"),
        _bind("path.number", "numbers"),
        _bind("query.trials", "compared_trials"),
        _bind("query.studies", "compared_studies"),
        _bind("path.name", "files"),
        # cancelling or deleting the seeded study would leave the other operations nothing
        "[[operations]]",
        'include-name = ["DELETE /api/v1/studies/{study}", "POST /api/v1/studies/{study}/cancel"]',
        f"parameters = {{ {_bind('path.study', 'spare')} }}",
    ]
    for call in PROTOCOL:
        # the right study, trial and token each 4 times in 5: half the cases call on the trial
        bindings = [
            _bind("path.study", "seeded", 0.8),
            _bind("path.number", f"number_{call}", 0.8),
            _bind("header.authorization", f"token_{call}", 0.8),
        ]
        lines += [
            "[[operations]]",
            f'include-name = "POST /api/v1/studies/{{study}}/trials/{{number}}/{call}"',
            f"parameters = {{ {', '.join(bindings)} }}",
        ]
    for check, operations, _ in EXCLUDED:
        lines += [
            "[[operations]]",
            f"include-name = {_toml(operations)}",
            f"checks.{check}.enabled = false",
        ]
    return "\n".join(lines) + "\n"


def _schemathesis(
    url: str, config: Path, cwd: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    headers = [arg for name, value in api_headers().items() for arg in ("-H", f"{name}: {value}")]
    command = [
        *(sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run"),
        f"{url}/openapi.json",
        *("--max-examples", str(EXAMPLES)),
        *("--seed", str(SEED)),
        # one worker: on Python 3.11.7 two threads of Hypothesis parsing source at once trip
        # CPython's "AST constructor recursion depth mismatch" (a schemathesis runtime error)
        *("--workers", "1"),
        *("--generation-database", "none"),
        *("--request-timeout", "30"),
        "--no-color",
        *headers,
        *extra,
    ]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)


def test_the_api_does_what_its_document_says(db_url: str, tmp_path: Path) -> None:
    _ADMIN["key"] = _admin_key(db_url)
    with hpo_serve(db_url, "--no-dispatch") as url:
        config = tmp_path / "schemathesis.toml"
        config.write_text(_config(_seed(url)))
        started = time.monotonic()
        run = _schemathesis(url, config, tmp_path)
        took = time.monotonic() - started
    report = run.stdout + run.stderr
    summary = report[report.rfind("SUMMARY") :] if "SUMMARY" in report else report[-3000:]
    print(f"schemathesis on {db_url.split(':')[0]}: {took:.0f} s\n{summary}")
    assert run.returncode == 0, report[-20000:]
    # and it did test: every operation of the document, in every phase
    selected = re.search(r"Selected: (\d+)/(\d+)\s+Tested: (\d+)", summary)
    assert selected and len(set(selected.groups())) == 1, summary
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in summary, summary
