"""A live controller in this process: uvicorn on a real port plus the Ray dispatcher.

Workers are Ray tasks in other processes, so they need a real URL to report to. Ray itself is
started once per session (``ray_cluster`` in conftest) and shared.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import uvicorn

from api import create_app
from hpo.settings import Settings
from tests._servers import free_port
from workers.dispatcher import Dispatcher

#: worker silence allowed in tests that train on Ray but are not about lost workers: a worker
#: importing torch and building its model on a loaded 2-core machine has gone silent past the
#: default 6 s before its first report (its run then failed as "no heartbeat")
TRAINING_HEARTBEAT_TIMEOUT = 20.0


class LiveController:
    def __init__(self, database_url: str, *, port: int | None = None, **settings: Any) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        defaults: dict[str, Any] = {
            "heartbeat_timeout": 6.0,
            "start_timeout": 60.0,
            "reap_interval": 0.5,
        }
        self.settings = Settings(database_url=database_url, **{**defaults, **settings})
        self.app = create_app(self.settings)
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.dispatcher = Dispatcher(
            self.url,
            registered=self.settings.workloads,
            data_dirs=self.settings.data_dirs,
            heartbeat_timeout=self.settings.heartbeat_timeout,
            poll_interval=0.2,
        )

    def start(self, *, dispatch: bool = True) -> LiveController:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"controller on port {self.port} did not start")
            time.sleep(0.05)
        if dispatch:
            self.dispatcher.start()
        return self

    def stop(self, *, cancel: bool = True) -> None:
        """Stop the controller; without ``cancel`` its trials keep running on Ray (a crash)."""
        self.dispatcher.stop(cancel=cancel)
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.app.state.db.dispose()

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, f"{self.url}{path}", timeout=30, **kwargs)

    def wait_for(self, study: str, status: str = "completed", timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            body = self.api("GET", f"/api/v1/studies/{study}").json()
            if body["status"] == status:
                return body
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"study {study} still {body['status']} after {timeout} s: "
                    f"{body['trial_counts']}"
                )
            time.sleep(0.2)

    def runs(self, study: str) -> list[dict]:
        trials = self.api("GET", f"/api/v1/studies/{study}/trials", params={"limit": 1000}).json()[
            "data"
        ]
        return [
            {**run, "number": t["number"]}
            for t in trials
            for run in self.api("GET", f"/api/v1/studies/{study}/trials/{t['number']}").json()[
                "runs"
            ]
        ]
