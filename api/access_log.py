"""One log line per request on ``hpo.access``: ``METHOD path status duration``.

A pure ASGI middleware (Starlette's ``BaseHTTPMiddleware`` costs a task and a queue per
request). Ordinary callers are logged at INFO. hpo's own components, which poll and report many
times a second (the dispatcher lists running studies twice a second, every worker heartbeats
and reports), say who they are in their User-Agent and are logged at DEBUG; a server error
(5xx) is a WARNING whoever asked (but a 503 to our own components, which the database outage
behind it already explains once), and an exception that escaped the app an ERROR.

Each record also carries ``method``, ``path``, ``status``, ``duration_ms`` and ``user_agent``
as attributes, for a structured handler.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["OWN_AGENTS", "AccessLogMiddleware"]

log = logging.getLogger("hpo.access")

#: User-Agent prefixes of hpo's own components (``hpo-dispatcher/0.1.0``, ...)
OWN_AGENTS = ("hpo-dispatcher/", "hpo-worker/", "hpo-demo/")


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except BaseException:
            _log(scope, status or 500, started, logging.ERROR)
            raise
        _log(scope, status, started, None)


def _user_agent(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"user-agent":
            return _printable(str(value.decode("latin-1")))
    return ""


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _log(scope: Scope, status: int, started: float, level: int | None) -> None:
    agent = _user_agent(scope)
    if level is None:
        if status >= 500 and not (status == 503 and agent.startswith(OWN_AGENTS)):
            # a 503 to our own components means the database is away: said once elsewhere
            level = logging.WARNING
        elif agent.startswith(OWN_AGENTS):
            level = logging.DEBUG
        else:
            level = logging.INFO
    if not log.isEnabledFor(level):
        return
    # as sent (still percent-encoded) and with control characters escaped: a caller must not
    # be able to write a line of its own into the log
    raw = scope.get("raw_path") or scope["path"].encode("utf-8")
    query = scope.get("query_string", b"")
    path = _printable((raw + (b"?" + query if query else b"")).decode("latin-1"))
    duration_ms = (time.perf_counter() - started) * 1000
    extra: dict[str, Any] = {
        "method": scope["method"],
        "path": path,
        "status": status,
        "duration_ms": duration_ms,
        "user_agent": agent,
    }
    log.log(level, "%s %s %d %.1f ms", scope["method"], path, status, duration_ms, extra=extra)
