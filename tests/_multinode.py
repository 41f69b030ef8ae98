"""A Ray cluster of several nodes on this one machine, and a proxy that stands for a
controller's public address; for ``tests/test_multinode.py``.

The cluster is Ray's own :class:`ray.cluster_utils.Cluster`, started without connecting this
process (which already holds the session's local Ray). Ray writes the address of a cluster it
starts to ``$RAY_TMPDIR/ray_current_cluster``, where every plain ``ray.init()`` on the machine
would find it and join it; so the cluster lives under a private ``RAY_TMPDIR`` of its own.
"""

from __future__ import annotations

import http.server
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from tests._servers import free_port


@contextmanager
def _ray_tmpdir(path: str) -> Iterator[None]:
    old = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = path
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = old


class GpuCluster:
    """A head node with no CPUs and no GPUs (nothing runs there), and worker nodes that
    declare GPUs the machine does not have, added and removed by the test."""

    def __init__(self) -> None:
        from ray.cluster_utils import Cluster

        # short: Ray's unix sockets live under it, and their paths may not exceed 107 bytes
        self.tmpdir = tempfile.mkdtemp(prefix="hpo-mn-", dir="/tmp")
        self.nodes: dict[str, Any] = {}  # node id (hex) -> ray's Node
        try:
            with _ray_tmpdir(self.tmpdir):
                self.cluster = Cluster(
                    initialize_head=True,
                    connect=False,
                    head_node_args={
                        "num_cpus": 0,
                        "num_gpus": 0,
                        "include_dashboard": False,
                        # a raylet killed outright is declared dead after ~5 s, not Ray's 15+
                        "_system_config": {
                            "health_check_period_ms": 1000,
                            "health_check_failure_threshold": 5,
                        },
                    },
                )
        except BaseException:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            raise
        self.address: str = self.cluster.address
        self.head_id: str = self.cluster.head_node.node_id

    @property
    def env(self) -> dict[str, str]:
        """What a process that joins this cluster needs in its environment."""
        return {"RAY_TMPDIR": self.tmpdir}

    def add_gpu_node(self, gpus: int, cpus: int = 2) -> str:
        """A worker node with ``gpus`` (fake) GPUs and the custom resource ``gpu_node``;
        returns its Ray node id once the cluster has registered it."""
        with _ray_tmpdir(self.tmpdir):
            node = self.cluster.add_node(
                num_cpus=cpus, num_gpus=gpus, resources={"gpu_node": 1}, wait=True
            )
        self.nodes[node.node_id] = node
        return str(node.node_id)

    def remove(self, node_id: str, *, graceful: bool = False) -> None:
        """Take a worker node away: ``graceful`` as ``ray stop`` on it would, else killed;
        returns once the cluster counts it dead (a killed one after a few missed health
        checks), so that what a controller reads of the cluster is true again."""
        with _ray_tmpdir(self.tmpdir):
            self.cluster.remove_node(self.nodes.pop(node_id), allow_graceful=graceful)
        self.cluster.wait_for_nodes(timeout=60)

    def remove_all(self) -> None:
        for node_id in list(self.nodes):
            self.remove(node_id, graceful=True)

    def shutdown(self) -> None:
        try:
            with _ray_tmpdir(self.tmpdir):  # it forgets the address in our RAY_TMPDIR only
                self.cluster.shutdown()
        finally:
            shutil.rmtree(self.tmpdir, ignore_errors=True)


_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class RecordingProxy:
    """An HTTP proxy on its own port, standing for the address workers are told to use
    (``HPO_PUBLIC_URL``); it forwards every request to ``target`` and records what it saw as
    ``(method, path, user agent)``."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.target = ""
        self.seen: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        self._http = httpx.Client(timeout=60)
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self, target: str) -> RecordingProxy:
        self.target = target.rstrip("/")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._http.close()

    def protocol_calls(self, study: str, agent: str = "hpo-worker/") -> list[tuple[str, str]]:
        """The trial-protocol calls of ``study`` made by ``agent``, as (trial number, action)."""
        pattern = re.compile(rf"/api/v1/studies/{re.escape(study)}/trials/(\d+)/(\w+)$")
        with self._lock:
            seen = list(self.seen)
        return [
            (m.group(1), m.group(2))
            for method, path, ua in seen
            if method == "POST" and ua.startswith(agent) and (m := pattern.match(path))
        ]

    def _forward(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP_BY_HOP}
        with self._lock:
            self.seen.append((handler.command, handler.path, headers.get("User-Agent", "")))
        try:
            answer = self._http.request(
                handler.command, self.target + handler.path, content=body, headers=headers
            )
        except httpx.TransportError:
            handler.send_error(502, "the controller did not answer the proxy")
            return
        handler.send_response(answer.status_code)
        for key, value in answer.headers.items():
            if key.lower() not in _HOP_BY_HOP | {"content-encoding"}:
                handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(answer.content)))
        handler.end_headers()
        handler.wfile.write(answer.content)

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the workers' httpx clients expect

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                proxy._forward(self)

            do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

        return Handler
