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
    with _serving([sys.executable, *command], env, port, timeout) as url:
        yield url


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
    port = port or free_port()
    command = ["-m", "controller", "serve", "--port", str(port), "--database-url", database_url]
    environ = {**os.environ, **(env or {})}
    with _serving([sys.executable, *command, *args], environ, port, timeout, log_path) as url:
        yield url


@contextmanager
def _serving(
    command: list[str],
    env: dict[str, str],
    port: int,
    timeout: float,
    log_path: Path | None = None,
) -> Iterator[str]:
    # its output goes to a file: a pipe nobody reads fills up, and then the server blocks
    opened = open(log_path, "w+") if log_path else tempfile.TemporaryFile("w+")  # noqa: SIM115
    with opened as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
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
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@dataclass
class Serving:
    """An ``hpo serve`` process a test may kill, with its log in a file it can read."""

    url: str
    proc: subprocess.Popen[str]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def hpo_serve_process(
    database_url: str, *args: str, log: Path, env: dict[str, str] | None = None
) -> Iterator[Serving]:
    """``hpo serve ARGS`` on 127.0.0.1 and a free port, logging to ``log``; stopped at the
    end unless the test killed it first."""
    port = free_port()
    command = [sys.executable, "-m", "controller", "serve", "--port", str(port)]
    command += ["--database-url", database_url, *args]
    with log.open("w") as out:
        proc = subprocess.Popen(
            command, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT
        )
    serving = Serving(f"http://127.0.0.1:{port}", proc, log)  # type: ignore[arg-type]
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"hpo serve exited early:\n{serving.output()[-5000:]}")
            try:
                if httpx.get(f"{serving.url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"hpo serve did not answer:\n{serving.output()[-5000:]}")
            time.sleep(0.2)
        yield serving
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
