"""A throwaway PostgreSQL server for the test session.

Started with the server binaries on PATH (``initdb``, ``pg_ctl``); as root, ``initdb`` runs as
the ``postgres`` user, which PostgreSQL requires. ``HPO_TEST_POSTGRES_URL`` points the tests
at an existing server instead. A server that cannot start fails the session loudly: storage
tests never skip silently.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_owner(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    if runuser is None:
        raise PostgresUnavailable("running as root needs `runuser` to start PostgreSQL as postgres")
    return [runuser, "-u", "postgres", "--", *cmd]


class ThrowawayPostgres:
    """``with ThrowawayPostgres() as pg: pg.url`` is a superuser URL to a fresh server."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="hpo-pg-"))
        self.data = self.root / "data"
        self.url = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, cmd: list[str]) -> None:
        result = subprocess.run(_as_owner(cmd), capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise PostgresUnavailable(
                f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
            )

    def start(self) -> ThrowawayPostgres:
        for tool in ("initdb", "pg_ctl"):
            if shutil.which(tool) is None:
                raise PostgresUnavailable(
                    f"`{tool}` is not on PATH; install the PostgreSQL server (Debian: "
                    "postgresql) or set HPO_TEST_POSTGRES_URL to an existing server"
                )
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self._run(
            [
                shutil.which("initdb") or "initdb",
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ]
        )
        self._start_server()
        return self

    def _start_server(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        self._run(
            [
                shutil.which("pg_ctl") or "pg_ctl",
                "-D",
                str(self.data),
                "-o",
                options,
                "-l",
                str(self.root / "log"),
                "-w",
                "-t",
                "60",
                "start",
            ]
        )

    def pause(self) -> None:
        """Stop the server as an outage would (it refuses connections), keeping its data."""
        self._run(
            [shutil.which("pg_ctl") or "pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop"]
        )

    def resume(self) -> None:
        """Start the paused server again on the same port, with the same data."""
        self._start_server()

    def stop(self) -> None:
        if self.data.exists():
            subprocess.run(
                _as_owner(["pg_ctl", "-D", str(self.data), "-m", "immediate", "stop"]),
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> ThrowawayPostgres:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
