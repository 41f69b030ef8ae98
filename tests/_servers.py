"""Real controller processes for tests that need more than one (uvicorn subprocesses)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def cli_env(**extra: str) -> dict[str, str]:
    """This process's environment for a command-line subprocess: without the ``HPO_`` settings
    of whoever runs the tests, with no dispatcher (no Ray), and this repository importable;
    ``extra`` on top."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPO_")}
    env["HPO_DISPATCH"] = "false"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return {**env, **extra}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def controller(database_url: str, *, timeout: float = 60.0) -> Iterator[str]:
    """Run ``api.create_app`` under uvicorn in a subprocess; yield its base URL."""
    port = free_port()
    command = ["-m", "uvicorn", "api.app:create_app", "--factory", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--log-level", "warning"]
    env = {**os.environ, "HPO_DATABASE_URL": database_url}
    with _serving([sys.executable, *command], env, port, timeout) as serving:
        yield serving.url


@contextmanager
def hpo_serve(
    database_url: str,
    *args: str,
    timeout: float = 60.0,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    port: int | None = None,
) -> Iterator[str]:
    """Run ``hpo serve ARGS`` on 127.0.0.1 and ``port`` (a free one by default); yield its base
    URL. ``env`` adds to this process's environment; ``log_path`` keeps its output there."""
    with hpo_serve_process(
        database_url, *args, timeout=timeout, env=env, log_path=log_path, port=port
    ) as serving:
        yield serving.url


@dataclass
class Serving:
    """A controller process a test may kill, and where its output goes."""

    url: str
    proc: subprocess.Popen[str]
    log_path: Path | None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""


@contextmanager
def hpo_serve_process(
    database_url: str,
    *args: str,
    timeout: float = 60.0,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    port: int | None = None,
    base_env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Iterator[Serving]:
    """:func:`hpo_serve`, yielding the process too (to kill it) and its output so far.
    ``base_env`` is the environment ``env`` adds to (this process's by default); ``cwd`` the
    directory it runs in."""
    port = port or free_port()
    command = ["-m", "controller", "serve", "--port", str(port), "--database-url", database_url]
    environ = {**(os.environ if base_env is None else base_env), **(env or {})}
    with _serving(
        [sys.executable, *command, *args], environ, port, timeout, log_path, cwd
    ) as serving:
        yield serving


@contextmanager
def _serving(
    command: list[str],
    env: dict[str, str],
    port: int,
    timeout: float,
    log_path: Path | None = None,
    cwd: Path | None = None,
) -> Iterator[Serving]:
    # its output goes to a file: a pipe nobody reads fills up, and then the server blocks
    opened = open(log_path, "w+") if log_path else tempfile.TemporaryFile("w+")  # noqa: SIM115
    with opened as log:
        proc = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, text=True
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"controller exited early:\n{log.read()[-5000:]}")
                try:
                    if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"controller on port {port} did not answer in {timeout} s")
                time.sleep(0.2)
            yield Serving(url, proc, log_path)
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
