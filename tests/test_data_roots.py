"""Workload options that name files stay inside the operator's data roots (HPO_DATA_DIRS).

The controller refuses a study that names a file elsewhere (422, nothing stored), on both
databases; the worker checks again before it reads; and a failure reason never carries a file's
content or a value of the worker's environment.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from hpo.client import Client
from hpo.redact import scrub
from hpo.settings import Settings
from tests._live import LiveController
from tests.conftest import row_counts
from tests.custom_workload import URL_PASSWORD
from workers import runner


def text_classification(name: str, **options: object) -> dict:
    return {
        "name": name,
        "objective": {"metric": "val_accuracy", "direction": "maximize"},
        "search_space": {"learning_rate": {"type": "categorical", "choices": [1e-3]}},
        "algorithm": {"name": "random", "seed": 0},
        "budget": {"max_trials": 3, "max_epochs": 1},
        "workload": {"name": "text-classification", "options": options},
    }


def charlm(name: str, **options: object) -> dict:
    spec = text_classification(name, **options)
    spec["objective"] = {"metric": "val_loss", "direction": "minimize"}
    spec["workload"] = {"name": "charlm-gpt", "options": options}
    return spec


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    """A data root with a good file, and ways out of it: a file outside, links to it."""
    root = tmp_path / "data"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    good = root / "reviews.jsonl"
    good.write_text('{"text": "good", "label": 1}\n', encoding="utf-8")
    secret = outside / "secret.jsonl"
    secret.write_text('{"text": "password hunter2", "label": 1}\n', encoding="utf-8")
    (root / "link.jsonl").symlink_to(secret)
    (root / "linked_dir").symlink_to(outside, target_is_directory=True)
    (root / "inner_link.jsonl").symlink_to(good)
    return {"root": root, "outside": outside, "good": good, "secret": secret}


def roots_app(db_url: str, *roots: Path):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from api import create_app

    app = create_app(Settings(database_url=db_url, data_dirs=[str(r) for r in roots]))
    return TestClient(app, base_url="http://localhost")


def test_operators_give_data_roots_as_a_json_list_or_like_path(monkeypatch) -> None:
    monkeypatch.setenv("HPO_DATA_DIRS", f"/srv/data{os.pathsep}/mnt/corpora/{os.pathsep}")
    assert Settings().data_dirs == ["/srv/data", "/mnt/corpora"]
    monkeypatch.setenv("HPO_DATA_DIRS", '["/srv/data", "/mnt/with:colon"]')
    assert Settings().data_dirs == ["/srv/data", "/mnt/with:colon"]
    monkeypatch.delenv("HPO_DATA_DIRS")
    assert Settings().data_dirs == [], "none by default: no option may name a file"
    monkeypatch.setenv("HPO_DATA_DIRS", "data")
    with pytest.raises(ValidationError, match="'data'.*must be an absolute path"):
        Settings()
    monkeypatch.setenv("HPO_DATA_DIRS", '["/srv/data",')
    with pytest.raises(ValidationError, match="not a JSON list"):
        Settings()


def test_a_study_that_names_a_file_outside_the_roots_is_refused_and_stores_nothing(
    db_url: str, layout: dict[str, Path]
) -> None:
    root = layout["root"]
    refused = {
        "the worker's environment": text_classification("a", data_path="/proc/self/environ"),
        "the password file": text_classification("b", data_path="/etc/passwd"),
        "a '..' escape": text_classification("c", data_path=f"{root}/../outside/secret.jsonl"),
        "a symlink out of the root": text_classification("d", data_path=f"{root}/link.jsonl"),
        "a file under a linked directory": text_classification(
            "e", data_path=f"{root}/linked_dir/secret.jsonl"
        ),
        "a relative path": text_classification("f", data_path="data/reviews.jsonl"),
        "a model hub name": text_classification(
            "g", data_path=str(layout["good"]), pretrained="bert-base-uncased"
        ),
        "a text for the language model": charlm("h", text_path="/etc/passwd"),
        "a path that is not a string": text_classification("i", data_path=["/etc/passwd"]),
        "a root that is only a prefix": text_classification("j", data_path=f"{root}2/x.jsonl"),
    }
    with roots_app(db_url, root) as api:
        before = row_counts(db_url)
        wrong = []
        for case, spec in refused.items():
            resp = api.post("/api/v1/studies", json=spec)
            detail = str(resp.json().get("detail"))
            option = "text_path" if "text_path" in detail else "data_path"
            if "pretrained" in spec["workload"]["options"]:
                option = "pretrained"
            if resp.status_code != 422 or f"workload.options.{option}" not in detail:
                wrong.append(f"{case}: {resp.status_code} {detail[:300]}")
            elif str(root) not in detail:
                wrong.append(f"{case}: the message does not name the allowed root: {detail}")
            elif "hunter2" in detail or "root:x:0" in detail:
                wrong.append(f"{case}: the message shows a file's content: {detail}")
        assert not wrong, "\n".join(wrong)
        assert row_counts(db_url) == before
        assert api.get("/api/v1/studies").json()["count"] == 0


def test_a_refusal_says_what_was_wrong_and_how_to_fix_it(db_url: str, layout) -> None:
    with roots_app(db_url, layout["root"]) as api:
        escaped = api.post(
            "/api/v1/studies",
            json=text_classification("s", data_path=f"{layout['root']}/link.jsonl"),
        ).json()["detail"]
        hub = api.post(
            "/api/v1/studies",
            json=text_classification("s", data_path=str(layout["good"]), pretrained="bert-base"),
        ).json()["detail"]
    assert escaped == (
        f"workload.options.data_path: '{layout['root']}/link.jsonl' is outside the allowed data "
        f"roots once '..' and symlinks are resolved; allowed: {layout['root']} (HPO_DATA_DIRS)"
    )
    assert hub.startswith("workload.options.pretrained: 'bert-base' is not an absolute path")
    assert "nothing is looked up by name or downloaded" in hub


def test_with_no_roots_no_option_may_name_a_file_but_the_built_in_data_works(
    api, db_url: str, layout
) -> None:
    resp = api.post("/api/v1/studies", json=text_classification("t", data_path=str(layout["good"])))
    assert resp.status_code == 422
    assert "no data roots are configured" in resp.json()["detail"]
    assert "HPO_DATA_DIRS=" in resp.json()["detail"]
    assert api.get("/api/v1/studies").json()["count"] == 0
    # charlm-gpt's default text (the stdlib) and digits-vit's data need no root
    assert api.post("/api/v1/studies", json=charlm("default-text")).status_code == 201
    digits = charlm("digits")
    digits["objective"] = {"metric": "val_accuracy", "direction": "maximize"}
    digits["workload"] = {"name": "digits-vit", "options": {"max_samples": 100}}
    assert api.post("/api/v1/studies", json=digits).status_code == 201


def test_a_file_inside_a_root_is_accepted(db_url: str, layout, tmp_path: Path) -> None:
    other = tmp_path / "models"
    other.mkdir()
    with roots_app(db_url, layout["root"], other) as api:
        for name, options in {
            "plain": {"data_path": str(layout["good"])},
            "link-inside": {"data_path": str(layout["root"] / "inner_link.jsonl")},
            # the controller need not see the file: on a cluster it may be on the workers only
            "not-here-yet": {"data_path": str(layout["root"] / "later" / "big.csv")},
            "second-root": {"data_path": str(layout["good"]), "pretrained": str(other / "bert")},
        }.items():
            resp = api.post("/api/v1/studies", json=text_classification(name, **options))
            assert resp.status_code == 201, f"{name}: {resp.text}"
            assert resp.json()["spec"]["workload"]["options"] == options


@pytest.fixture
def live_roots(fresh_postgres: str, layout):  # type: ignore[no-untyped-def]
    """A controller on a real port that dispatches nothing: the test runs the worker itself."""
    controller = LiveController(
        fresh_postgres,
        data_dirs=[str(layout["root"])],
        workloads={"leak": "tests.custom_workload:leak_environment"},
    ).start(dispatch=False)
    yield controller
    controller.stop()


def run_one(live: LiveController, study: str, **job: object) -> dict:
    """Ask a trial of ``study``, run it with the worker's runner here, return its last run."""
    client = Client(live.url)
    assignment = client.ask(study).assignment
    spec = client.get_study(study).spec
    outcome = runner.run(
        runner.TrialJob(
            controller_url=live.url,
            assignment=assignment,
            workload=spec.workload.name,
            options=spec.workload.options,
            max_epochs=1,
            registered=live.settings.workloads,
            **job,  # type: ignore[arg-type]
        )
    )
    assert outcome == "failed"
    return client.trial(study, assignment.number).runs[-1].model_dump()


def test_the_worker_checks_the_roots_again_before_it_reads(live_roots, layout) -> None:
    root, good = layout["root"], layout["good"]
    model = root / "bert"
    model.mkdir()
    (model / "config.json").write_text("{}", encoding="utf-8")
    spec = text_classification("swap", data_path=str(good), pretrained=str(model))
    assert live_roots.api("POST", "/api/v1/studies", json=spec).status_code == 201
    roots = (str(root),)

    # after the study was created, its file became a link to a file outside the root
    good.unlink()
    good.symlink_to(layout["secret"])
    swapped = run_one(live_roots, "swap", data_dirs=roots)
    # and a file inside its model directory, one that leads out
    good.unlink()
    good.write_text('{"text": "good", "label": 1}\n', encoding="utf-8")
    (model / "vocab.txt").symlink_to(layout["secret"])
    inner = run_one(live_roots, "swap", data_dirs=roots)
    # roots narrowed since the study was created: the worker goes by the roots it is given
    narrowed = run_one(live_roots, "swap", data_dirs=())

    assert swapped["failure_kind"] == "exception"
    assert swapped["error"].startswith(
        f"OutsideDataRoots: workload.options.data_path: '{good}' is outside the allowed data roots"
    )
    assert "'vocab.txt', which leads outside the allowed data roots" in inner["error"]
    assert "no data roots are configured" in narrowed["error"]
    for run in (swapped, inner, narrowed):
        assert "hunter2" not in run["error"]
        assert "Traceback" not in run["error"], "the study's own mistake needs no traceback"


def test_a_failure_reason_keeps_the_traceback_but_no_environment_value(
    live_roots, monkeypatch
) -> None:
    secret = uuid.uuid4().hex
    monkeypatch.setenv("HPO_TEST_RUNNER_SECRET", secret)
    spec = {
        "name": "leaky",
        "objective": {"metric": "score"},
        "search_space": {"x": {"type": "float", "low": 0, "high": 1}},
        "workload": {"name": "leak", "options": {"variable": "HPO_TEST_RUNNER_SECRET"}},
    }
    assert live_roots.api("POST", "/api/v1/studies", json=spec).status_code == 201
    error = run_one(live_roots, "leaky")["error"]
    assert secret not in error and URL_PASSWORD not in error
    assert "cannot connect with token [redacted:HPO_TEST_RUNNER_SECRET] to " in error
    assert "postgresql://hpo:[redacted:password]@db:5432/hpo" in error
    # file, line and function stay: the traceback still points at the bug
    assert 'custom_workload.py", line ' in error and ", in leak_environment" in error
    assert 'runner.py", line ' in error


def test_a_decoding_error_never_shows_the_byte_it_could_not_decode() -> None:
    """Libraries re-raise a UnicodeDecodeError as their own error, chained: its message would
    quote a byte of the file they were reading."""
    data = "config \u00e9t\u00e9".encode("latin-1")  # as read from a file
    try:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise OSError("the config file is not valid JSON") from exc
    except OSError as chained:
        reason = runner.failure_reason(chained)
    assert "OSError: the config file is not valid JSON" in reason
    assert "can't decode bytes in position 7-7: invalid continuation byte" in reason
    assert "0xe9" not in reason and "\\xe9" not in reason


def test_scrub_hides_environment_values_and_url_passwords_but_keeps_paths(tmp_path) -> None:
    environ = {
        "HPO_DATABASE_URL": "postgresql://hpo:s3cr3t-pw@db:5432/hpo",
        "TOKEN": "abcdef0123456789",
        "TOKEN_PREFIX": "abcdef01",
        "SHORT": "1234567",  # shorter than 8: would blank out ordinary numbers
        "VIRTUAL_ENV": str(tmp_path),  # an existing path: file names stay readable
        "PATH": f"{tmp_path}{os.pathsep}/usr/bin",
    }
    text = (
        f'File "{tmp_path}/lib/mod.py", line 3, in connect\n'
        "OperationalError: postgresql://hpo:s3cr3t-pw@db:5432/hpo refused token "
        "abcdef0123456789 (prefix abcdef01), retry 1234567; "
        "also redis://:p@ss@cache:6379/0 and https://example.com:8443/x"
    )
    assert scrub(text, environ) == (
        f'File "{tmp_path}/lib/mod.py", line 3, in connect\n'
        "OperationalError: [redacted:HPO_DATABASE_URL] refused token [redacted:TOKEN] "
        "(prefix [redacted:TOKEN_PREFIX]), retry 1234567; "
        "also redis://:[redacted:password]@cache:6379/0 and https://example.com:8443/x"
    )


def write_bad_data(root: Path, marker: str) -> dict[str, dict]:
    """One failing study per way a data file can be wrong; ``marker`` is in every file."""
    (root / "header.csv").write_text(f"{marker},sentence\n" + "a,b\n" * 20, encoding="utf-8")
    (root / "broken.jsonl").write_text(
        '{"text": "fine", "label": 1}\n{"text": "' + marker + '", "label": \n', encoding="utf-8"
    )
    (root / "one_label.jsonl").write_text(
        "".join(json.dumps({"text": f"text {i}", "label": marker}) + "\n" for i in range(20)),
        encoding="utf-8",
    )
    (root / "latin1.jsonl").write_bytes(
        json.dumps({"text": f"{marker} caf\u00e9", "label": 1}, ensure_ascii=False).encode(
            "latin-1"
        )
    )
    (root / "latin1.txt").write_bytes(f"{marker} caf\u00e9 ".encode("latin-1") * 200)
    return {
        "header": text_classification("header", data_path=str(root / "header.csv")),
        "broken": text_classification("broken", data_path=str(root / "broken.jsonl")),
        "one-label": text_classification("one-label", data_path=str(root / "one_label.jsonl")),
        "latin1": text_classification("latin1", data_path=str(root / "latin1.jsonl")),
        "latin1-text": charlm("latin1-text", text_path=str(root / "latin1.txt")),
    }


def every_get_answer(live: LiveController, studies: list[str]) -> dict[str, str]:
    """The body of every GET route (the API's, from its OpenAPI document, and the dashboard's
    pages, which it leaves out) for every study."""
    from api.routes import pages

    paths = [
        p for p, ops in live.api("GET", "/openapi.json").json()["paths"].items() if "get" in ops
    ]
    paths += [r.path for r in pages.router.routes if not r.path.startswith("/static/")]
    query = {"trials": "0,1", "studies": ",".join(studies), "limit": 1000}
    answers = {}
    for path in paths:
        for study in studies if "{study}" in path else [""]:
            url = path.replace("{study}", study).replace("{number}", "0")
            answers[url] = live.api("GET", url, params=query).text
    return answers


@pytest.mark.usefixtures("ray_cluster")
def test_no_answer_shows_a_secret_of_the_workers_environment_or_a_files_content(
    fresh_postgres: str, tmp_path: Path, worker_secret: str
) -> None:
    root = tmp_path / "data"
    root.mkdir()
    marker = uuid.uuid4().hex
    specs = write_bad_data(root, marker)
    specs["leak"] = {
        "name": "leak",
        "objective": {"metric": "score"},
        "search_space": {"x": {"type": "float", "low": 0, "high": 1}},
        "budget": {"max_trials": 1},
        "workload": {"name": "leak"},
    }
    live = LiveController(
        fresh_postgres,
        data_dirs=[str(root)],
        workloads={"leak": "tests.custom_workload:leak_environment"},
    ).start()
    try:
        for spec in specs.values():
            spec["budget"]["max_trials"] = 1
            resp = live.api("POST", "/api/v1/studies", json=spec)
            assert resp.status_code == 201, resp.text
        errors = {}
        for name in specs:
            study = live.wait_for(name, timeout=300)
            assert study["trial_counts"]["failed"] == 1, study["trial_counts"]
            errors[name] = live.runs(name)[-1]["error"]
        answers = every_get_answer(live, list(specs))
    finally:
        live.stop()

    # the secret did reach the worker, and was caught on its way out
    assert "[redacted:HPO_TEST_SECRET]" in errors["leak"]
    assert "postgresql://hpo:[redacted:password]@db" in errors["leak"]
    # each data failure says what is wrong with the file, without quoting it
    assert (
        "the CSV header has 2 column(s), but it needs the columns 'text', 'label'"
        in (errors["header"])
    )
    assert "broken.jsonl, line 2, column " in errors["broken"]
    assert "not valid JSON" in errors["broken"]
    assert "every example has the same label" in errors["one-label"]
    assert "latin1.jsonl is not UTF-8 text" in errors["latin1"]
    assert "latin1.txt is not UTF-8 text" in errors["latin1-text"]
    assert len(answers) > 20, sorted(answers)
    for url, body in answers.items():
        assert worker_secret not in body, f"GET {url} shows the worker's secret"
        assert URL_PASSWORD not in body, f"GET {url} shows a URL's password"
        assert marker not in body, f"GET {url} shows a file's content"
