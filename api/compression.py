"""Gzip for what is worth compressing: reads (figures, trial lists, plotly.js, pages).

The trial protocol's calls (POST: ask, report, heartbeat, complete, fail) answer a few dozen
bytes, many times a second; passing them through the gzip layer costs more than it could save,
so they skip it.
"""

from __future__ import annotations

from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send


class ReadsGZipMiddleware:
    def __init__(self, app: ASGIApp, *, minimum_size: int = 2048) -> None:
        self.app = app
        self.gzip = GZipMiddleware(app, minimum_size=minimum_size)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            await self.gzip(scope, receive, send)
        else:
            await self.app(scope, receive, send)
