"""`hpo keys` and the controller's start-up rule, as an operator meets them: a controller on
any address but loopback refuses to start with no key (and says how to make one), starts
once there is one, and the CLI and client then need ``HPO_API_KEY``."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from controller.cli import main
from tests._servers import cli_env, free_port, hpo_serve_process


def _hpo(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller", *args],
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


@contextmanager
def _serving(db_url: str, *args: str) -> Iterator[tuple[str, Path]]:
    port = free_port()
    log = Path(db_url.removeprefix("sqlite:///")).with_suffix(f".{port}.log")
    with hpo_serve_process(db_url, *args, port=port, base_env=cli_env(), log_path=log) as serving:
        yield serving.url, log


def test_serve_on_every_interface_refuses_to_start_without_a_key(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'hpo.db'}"
    run = _hpo("serve", "--host", "0.0.0.0", "--port", str(free_port()), "--database-url", db_url)
    assert run.returncode != 0
    assert "refusing to serve on 0.0.0.0" in run.stderr
    assert "hpo keys create --name admin --role admin" in run.stderr
    assert "--insecure-no-auth" in run.stderr


def test_insecure_no_auth_serves_anyone_and_says_so(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'hpo.db'}"
    with _serving(db_url, "--host", "0.0.0.0", "--insecure-no-auth") as (url, log):
        assert httpx.get(f"{url}/api/v1/studies").status_code == 200
        assert "WARNING: access control is OFF" in log.read_text()


def test_keys_turn_access_control_on_and_the_cli_reads_hpo_api_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db_url = f"sqlite:///{tmp_path / 'hpo.db'}"
    created = _hpo(
        "keys", "create", "--name", "alice", "--role", "member", "--database-url", db_url
    )
    assert created.returncode == 0, created.stderr
    key = re.search(r"^\s+(hpo_\S+)$", created.stdout, re.M)
    assert key, created.stdout
    listed = _hpo("keys", "list", "--database-url", db_url)
    assert "alice" in listed.stdout and "member" in listed.stdout
    assert key.group(1) not in listed.stdout, "a key must never be shown again"

    with _serving(db_url, "--host", "0.0.0.0") as (url, log):
        assert "access control on" in log.read_text()
        spec = tmp_path / "study.yaml"
        spec.write_text(
            "name: mine\nobjective: {metric: acc}\n"
            "search_space: {x: {type: float, low: 0, high: 1}}\n"
            "algorithm: {name: random}\nbudget: {max_trials: 2}\n"
        )
        monkeypatch.delenv("HPO_API_KEY", raising=False)
        assert main(["study", "list", "--url", url]) == 1
        assert "needs an API key" in capsys.readouterr().err
        monkeypatch.setenv("HPO_API_KEY", key.group(1))
        assert main(["study", "create", str(spec), "--url", url]) == 0
        capsys.readouterr()
        assert main(["study", "show", "mine", "--url", url, "--json"]) == 0
        assert '"created_by": "alice"' in capsys.readouterr().out

        revoked = _hpo("keys", "revoke", "alice", "--database-url", db_url)
        assert revoked.returncode == 0, revoked.stderr
        deadline = time.monotonic() + 15  # another process revoked it: within seconds
        while main(["study", "list", "--url", url]) == 0:
            assert time.monotonic() < deadline, "a revoked key still works"
            time.sleep(0.5)
        assert "not valid" in capsys.readouterr().err


def test_keys_commands_explain_bad_input(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'hpo.db'}"
    bad_role = _hpo("keys", "create", "--name", "x", "--role", "root", "--database-url", db_url)
    assert bad_role.returncode == 2 and "invalid choice: 'root'" in bad_role.stderr
    bad_name = _hpo("keys", "create", "--name", "a b", "--role", "viewer", "--database-url", db_url)
    assert bad_name.returncode == 1 and "is not allowed" in bad_name.stderr
    scoped = _hpo(
        "keys",
        "create",
        "--name",
        "v",
        "--role",
        "viewer",
        "--study",
        "x",
        "--database-url",
        db_url,
    )
    assert scoped.returncode == 1 and "only a worker key" in scoped.stderr
    missing = _hpo("keys", "revoke", "nobody", "--database-url", db_url)
    assert missing.returncode == 1 and "no API key named 'nobody'" in missing.stderr
