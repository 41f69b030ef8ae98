"""The ``hpo`` command line against a real controller: ``hpo serve`` runs as a subprocess on a
SQLite file (``python -m controller``, what the console script runs), and the commands run
in-process through ``main([...])``."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from controller.cli import main
from hpo.client import Client
from tests._servers import cli_env, free_port, hpo_serve_process

ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_S = 30


class Server:
    def __init__(self, url: str, db_url: str, log: Path) -> None:
        self.url, self.db_url, self.log = url, db_url, log


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``hpo serve`` on a free port and a fresh SQLite file, for the whole module."""
    tmp = tmp_path_factory.mktemp("serve")
    db_url, log = f"sqlite:///{tmp / 'hpo.db'}", tmp / "serve.log"
    with hpo_serve_process(
        db_url, timeout=STARTUP_TIMEOUT_S, base_env=cli_env(), log_path=log, cwd=tmp
    ) as serving:
        yield Server(serving.url, db_url, log)


def hpo(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``hpo ARGS`` in-process: exit code, stdout, stderr."""
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def spec_file(tmp_path: Path, name: str, max_trials: int = 3) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"name: {name}\n"
        "objective: {metric: acc, direction: maximize}\n"
        "search_space:\n"
        "  x: {type: float, low: 0, high: 1}\n"
        "algorithm: {name: random, seed: 1}\n"
        f"budget: {{max_trials: {max_trials}}}\n"
    )
    return path


def create(capsys: pytest.CaptureFixture[str], server: Server, tmp_path: Path, name: str) -> str:
    code, out, err = hpo(
        capsys, "study", "create", str(spec_file(tmp_path, name)), "--url", server.url
    )
    assert code == 0, err
    return out


# -- help and imports --------------------------------------------------------------------------


def test_module_help_lists_the_subcommands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "controller", "--help"],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    listed = [line.split()[0] for line in result.stdout.split("COMMAND\n", 1)[1].splitlines()]
    assert [c for c in listed if c in ("serve", "demo", "db", "study")] == [
        "serve",
        "demo",
        "db",
        "study",
    ]


def test_the_core_command_line_points_to_serve_and_demo() -> None:
    """``python -m hpo`` is the core alone: no serve or demo, and it says where they are."""
    help_run = subprocess.run(
        [sys.executable, "-m", "hpo", "--help"],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
    )
    assert help_run.returncode == 0, help_run.stderr
    assert "study" in help_run.stdout and "python -m controller" in help_run.stdout
    serve = subprocess.run(
        [sys.executable, "-m", "hpo", "serve"],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
    )
    assert serve.returncode == 2
    assert serve.stderr.startswith("error: `serve` is not part of the core command line")
    assert "hpo serve" in serve.stderr and "python -m controller serve" in serve.stderr


def test_no_arguments_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = hpo(capsys)
    assert code == 2
    assert "usage: hpo" in err and "study" in err


def test_study_commands_are_listed_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["study", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("create", "list", "show", "best", "cancel", "delete"):
        assert command in out


def test_importing_hpo_and_its_cli_loads_no_web_server_or_heavy_module() -> None:
    heavy = ["fastapi", "uvicorn", "ray", "torch", "transformers", "plotly"]
    code = (
        "import sys, hpo, hpo.cli, hpo.client, controller.cli; "
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# -- serve and db ------------------------------------------------------------------------------


def test_serve_announces_its_address_database_and_docs(server: Server) -> None:
    access, banner = server.log.read_text().splitlines()[:2]
    assert access.startswith("hpo: access control off: no API keys yet")
    assert banner == (
        f"hpo serving on {server.url} (database: {server.db_url}) — API docs at {server.url}/docs"
    )
    assert httpx.get(f"{server.url}/docs", timeout=5).status_code == 200


def test_serve_logs_each_request_once_with_time_level_and_logger(server: Server) -> None:
    httpx.get(f"{server.url}/healthz?from=test", timeout=5)
    pattern = re.compile(
        r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO hpo\.access GET /healthz\?from=test 200 "
        r"\d+\.\d ms$",
        re.MULTILINE,
    )
    deadline = time.monotonic() + 5
    while not pattern.search(server.log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    log = server.log.read_text()
    assert pattern.search(log), log
    assert "HTTP/1.1" not in log, "uvicorn's own access log should be off"


def _head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(str(ROOT / "hpo" / "migrations")).get_current_head()
    assert head is not None
    return head


def test_db_upgrade_creates_the_tables_and_prints_the_revision(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    code, out, err = hpo(capsys, "db", "upgrade", "--database-url", url)
    assert code == 0, err
    assert out.strip() == f"database {url} is at revision {_head_revision()}"
    with sqlite3.connect(tmp_path / "x.db") as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"hpo_studies", "hpo_trial_runs", "hpo_metrics", "studies", "trials"} <= tables


def test_db_errors_are_one_line_and_hide_the_password(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"postgresql+psycopg2://hpo:s3cret@127.0.0.1:{free_port()}/hpo"
    code, out, err = hpo(capsys, "db", "upgrade", "--database-url", url)
    assert code == 1 and out == ""
    assert err.startswith("error: cannot open database postgresql+psycopg2://hpo:***@")
    assert "s3cret" not in err and "Traceback" not in err


# -- studies -----------------------------------------------------------------------------------


def test_create_list_show_and_best(
    capsys: pytest.CaptureFixture[str], server: Server, tmp_path: Path
) -> None:
    out = create(capsys, server, tmp_path, "cli-flow")
    assert "cli-flow" in out and "random" in out and "3" in out

    code, out, _ = hpo(capsys, "study", "list", "--url", server.url)
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["ID", "NAME", "STATUS", "ALGORITHM", "TRIALS", "BEST"]
    row = next(r for r in rows if " cli-flow " in r)
    assert row.split()[1:] == ["cli-flow", "running", "random", "0/3", "-"]
    assert header.index("NAME") == row.index("cli-flow")  # columns line up

    with Client(server.url) as client:
        trial = client.ask("cli-flow")
        trial.complete({"acc": 0.9})

    code, out, _ = hpo(capsys, "study", "show", "cli-flow", "--url", server.url)
    assert code == 0
    assert "status:    running" in out
    assert "maximize acc" in out
    assert "1 handed out: 1 completed" in out
    assert "acc = 0.9" in out

    code, out, _ = hpo(capsys, "study", "show", "cli-flow", "--json", "--url", server.url)
    shown = json.loads(out)
    assert shown["name"] == "cli-flow" and shown["trial_counts"]["completed"] == 1

    code, out, _ = hpo(capsys, "study", "best", "cli-flow", "--json", "--url", server.url)
    assert code == 0
    assert json.loads(out) == trial.params

    code, out, _ = hpo(capsys, "study", "best", "cli-flow", "--url", server.url)
    assert f"best trial: {trial.number}" in out and "0.9" in out
    assert f"x: {json.dumps(trial.params['x'])}" in out


def test_duplicate_create_fails_with_the_servers_message(
    capsys: pytest.CaptureFixture[str], server: Server, tmp_path: Path
) -> None:
    create(capsys, server, tmp_path, "cli-dup")
    code, out, err = hpo(
        capsys, "study", "create", str(spec_file(tmp_path, "cli-dup")), "--url", server.url
    )
    assert code == 1 and out == ""
    assert err.startswith("error: ") and "already exists" in err


@pytest.mark.parametrize("command", ["show", "best", "cancel"])
def test_unknown_study_is_an_error(
    capsys: pytest.CaptureFixture[str], server: Server, command: str
) -> None:
    code, _, err = hpo(capsys, "study", command, "no-such-study", "--url", server.url)
    assert code == 1
    assert err.startswith("error: ") and "no-such-study" in err and "Traceback" not in err


def test_best_before_any_completed_trial_is_an_error(
    capsys: pytest.CaptureFixture[str], server: Server, tmp_path: Path
) -> None:
    create(capsys, server, tmp_path, "cli-nobest")
    code, out, err = hpo(capsys, "study", "best", "cli-nobest", "--json", "--url", server.url)
    assert code == 1 and out == ""
    assert err.startswith("error: ")


def test_bad_spec_files_are_reported_without_a_traceback(
    capsys: pytest.CaptureFixture[str], server: Server, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    code, _, err = hpo(capsys, "study", "create", str(broken), "--url", server.url)
    assert code == 1 and "not valid YAML" in err and "Traceback" not in err

    incomplete = tmp_path / "incomplete.yaml"
    incomplete.write_text("name: cli-incomplete\nsearch_space: {x: {type: float, low: 0}}\n")
    code, _, err = hpo(capsys, "study", "create", str(incomplete), "--url", server.url)
    assert code == 1 and str(incomplete) in err
    assert "objective: required field is missing" in err and "search_space.x.high" in err

    code, _, err = hpo(
        capsys, "study", "create", str(tmp_path / "missing.yaml"), "--url", server.url
    )
    assert code == 1 and err.startswith("error: cannot read") and "missing.yaml" in err


def test_unreachable_controller_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = hpo(capsys, "study", "list", "--url", f"http://127.0.0.1:{free_port()}")
    assert code == 1
    assert err.startswith("error: cannot reach the hpo controller") and len(err.splitlines()) == 1


def test_cancel_then_list_shows_cancelled(
    capsys: pytest.CaptureFixture[str], server: Server, tmp_path: Path
) -> None:
    create(capsys, server, tmp_path, "cli-cancel")
    code, out, _ = hpo(capsys, "study", "cancel", "cli-cancel", "--url", server.url)
    assert code == 0 and "cancelled" in out
    code, out, _ = hpo(capsys, "study", "list", "--status", "cancelled", "--url", server.url)
    rows = [r.split() for r in out.splitlines()[1:]]
    assert any(r[1:3] == ["cli-cancel", "cancelled"] for r in rows)
    assert all(r[2] == "cancelled" for r in rows)
    code, out, _ = hpo(capsys, "study", "list", "--status", "completed", "--url", server.url)
    assert code == 0 and out.strip() == "no completed studies"


def test_delete_needs_confirmation_then_removes_the_study(
    capsys: pytest.CaptureFixture[str], server: Server, tmp_path: Path
) -> None:
    create(capsys, server, tmp_path, "cli-delete")
    code, _, err = hpo(capsys, "study", "delete", "cli-delete", "--url", server.url)
    assert code == 1 and "--yes" in err  # stdin is not a terminal under pytest
    assert hpo(capsys, "study", "show", "cli-delete", "--url", server.url)[0] == 0

    code, out, _ = hpo(capsys, "study", "delete", "cli-delete", "--yes", "--url", server.url)
    assert code == 0 and "deleted" in out
    code, _, err = hpo(capsys, "study", "show", "cli-delete", "--url", server.url)
    assert code == 1 and "cli-delete" in err
