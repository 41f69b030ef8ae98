"""The controller process: the REST API (uvicorn) plus the Ray dispatcher.

Used by ``hpo serve`` and ``hpo demo``. This is the one place that knows the API, the workers
and the core together (DESIGN.md); Ray is imported where it is first needed, so that
``hpo --help`` stays quick.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import threading
import time
from typing import Any

import uvicorn
from sqlalchemy.exc import SQLAlchemyError

import api
from api.auth import is_loopback_host
from hpo import service
from hpo.settings import Settings


class AccessRefused(Exception):
    """Serving on this address without access control would let anyone in."""


def access_line(settings: Settings, *, keys: bool, url: str) -> str:
    """The one line a controller prints at start about who may call it."""
    if settings.insecure_no_auth:
        return (
            f"hpo: WARNING: access control is OFF (--insecure-no-auth): anyone who can reach "
            f"{url} can create, cancel and delete studies and read everything"
        )
    if keys:
        return (
            "hpo: access control on: requests need an API key (X-API-Key, or HPO_API_KEY for "
            "the client and CLI); the dashboard signs in at /signin"
        )
    if is_loopback_host(settings.host):
        return (
            f"hpo: access control off: no API keys yet, and {settings.host} is reachable from "
            "this machine only; create one with `hpo keys create --name admin --role admin`"
        )
    raise AccessRefused(
        f"refusing to serve on {settings.host} with no API key: anyone who can reach it could "
        "create, cancel and delete studies and plant results. Create an admin key first: "
        "`hpo keys create --name admin --role admin` (with the same --database-url or "
        "HPO_DATABASE_URL), or set HPO_ADMIN_KEY to 32+ random characters; or, on a network you "
        "trust, pass --insecure-no-auth"
    )


def local_url(settings: Settings) -> str:
    """Where workers on this machine reach the controller."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    host = settings.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.port}"


class Controller:
    """The API server and, with ``settings.dispatch``, the dispatcher that runs trials on Ray.

    ``log_level`` is uvicorn's own (startup, errors). Uvicorn's access log is off: the app logs
    each request on ``hpo.access`` (:mod:`api.access_log`), quieter for hpo's own components.
    Handlers and formats are the caller's (:func:`controller.logs.configure_logging`).
    """

    def __init__(self, settings: Settings, *, log_level: str = "info") -> None:
        self.settings = settings
        self.url = local_url(settings)
        self.app = api.create_app(settings)
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                host=settings.host,
                port=settings.port,
                log_level=log_level,
                log_config=None,
                access_log=False,
            )
        )
        self.dispatcher: Any = None
        self._own_keys: list[str] = []
        self._thread: threading.Thread | None = None

    def start_ray(self, **init_kwargs: Any) -> str:
        """Join ``settings.ray_address`` or start a local Ray; returns a one-line summary."""
        import ray

        if not ray.is_initialized():
            ray.init(
                address=self.settings.ray_address,
                include_dashboard=False,
                log_to_driver=False,
                **init_kwargs,
            )
        res = ray.cluster_resources()
        where = self.settings.ray_address or "a local Ray"
        return f"{where} with {res.get('CPU', 0):g} CPUs and {res.get('GPU', 0):g} GPUs"

    def access(self) -> str:
        """Create the operator's ``HPO_ADMIN_KEY`` if it is new, then say in one line how
        callers are let in; raise :class:`AccessRefused` on an address others can reach with
        no key and no ``--insecure-no-auth``."""
        db, settings = self.app.state.db, self.settings
        secret = settings.bootstrap_admin_key()
        if secret and service.ensure_key(db, name="admin", role="admin", secret=secret):
            print("hpo: created the admin API key 'admin' from HPO_ADMIN_KEY", flush=True)
        return access_line(settings, keys=service.operator_keys_exist(db), url=self.url)

    def own_key(self, purpose: str, role: str) -> str:
        """A key of this controller's own (``dispatcher@host-pid-xxxxxx``), revoked when it
        stops."""
        host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:32] or "host"
        name = f"{purpose}@{host}-{os.getpid()}-{secrets.token_hex(3)}"
        _, key = service.create_key(self.app.state.db, name=name, role=role, builtin=True)
        self._own_keys.append(name)
        return key

    def _start_dispatcher(self) -> None:
        from workers.dispatcher import Dispatcher

        # the built-in dispatcher's own worker key: it works whether or not operators add keys
        key = self.own_key("dispatcher", "worker")
        self.dispatcher = Dispatcher(
            self.url,
            registered=self.settings.workloads,
            data_dirs=self.settings.data_dirs,
            heartbeat_timeout=self.settings.heartbeat_timeout,
            api_key=key,
            name=self._own_keys[-1],
            lease_seconds=self.settings.lease_seconds,
        )
        self.dispatcher.start()

    def _dispatch_when_ready(self) -> None:
        while not self.server.started and not self.server.should_exit:
            time.sleep(0.05)
        if self.server.started and self.settings.dispatch:
            self._start_dispatcher()

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted (uvicorn handles SIGINT/SIGTERM)."""
        threading.Thread(target=self._dispatch_when_ready, daemon=True).start()
        try:
            self.server.run()
        finally:
            self.close()

    def start_background(self, timeout: float = 60.0) -> None:
        """Serve from a background thread; returns once the API answers."""
        self._thread = threading.Thread(target=self.server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"the controller did not start on {self.url}")
            time.sleep(0.05)
        if self.settings.dispatch:
            self._start_dispatcher()

    def close(self) -> None:
        """Stop dispatching (trials in flight keep running on a shared cluster) and serving."""
        if self.dispatcher is not None:
            self.dispatcher.stop()
            self.dispatcher = None
        for name in self._own_keys:
            try:
                service.revoke_builtin(self.app.state.db, name=name)
            except SQLAlchemyError:  # the database is gone; the key stays listed as built-in
                pass
        self._own_keys.clear()
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.app.state.db.dispose()
