"""The controller process: the REST API (uvicorn) plus the Ray dispatcher.

Used by ``hpo serve`` and ``hpo demo``. This is the one place that knows the API, the workers
and the core together (DESIGN.md); Ray is imported where it is first needed, so that
``hpo --help`` stays quick.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn

import api
from hpo.settings import Settings


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

    def _start_dispatcher(self) -> None:
        from workers.dispatcher import Dispatcher

        self.dispatcher = Dispatcher(
            self.url,
            registered=self.settings.workloads,
            data_dirs=self.settings.data_dirs,
            heartbeat_timeout=self.settings.heartbeat_timeout,
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
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.app.state.db.dispose()
