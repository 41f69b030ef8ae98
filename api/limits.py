"""The request body limit: a body over ``max_bytes`` is answered 413 before it is parsed.

A pure ASGI middleware, so that nothing reads the body before it does, and the app never
sees a body over the limit:

- a declared ``Content-Length`` over the limit is refused at once, without reading a byte
  of the body (within the limit, the server holds the body to its declared length);
- a chunked body (``Transfer-Encoding: chunked``, whatever length it also claims) is counted
  as it streams in and refused as soon as the count passes the limit, so at most
  ``max_bytes`` plus one chunk of it is ever held (the app would hold the whole body anyway,
  to parse it).

The server (uvicorn) discards the rest of a refused body as it arrives.
"""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodyLimitMiddleware"]


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared, chunked = _framing(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send, declared)
            return
        if not chunked:  # the server holds a body to its declared length
            await self.app(scope, receive, send)
            return
        first = await self._read_within_limit(receive)
        if first is None:
            await self._refuse(scope, receive, send, None)
            return
        pending = [first]

        async def replay() -> Message:
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, send)

    async def _read_within_limit(self, receive: Receive) -> Message | None:
        """The whole streamed body as one message, or None once it passes the limit (what
        was read of it is dropped at once)."""
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return message  # the client went away; the app sees that as usual
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                return None
            parts.append(body)
            if not message.get("more_body", False):
                return {"type": "http.request", "body": b"".join(parts), "more_body": False}

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, declared: int | None
    ) -> None:
        size = f"is {declared:,} bytes, over" if declared is not None else "is over"
        detail = (
            f"the request body {size} the limit of {self.max_bytes:,} bytes "
            f"({_human(self.max_bytes)}); it was not parsed and nothing changed. Send a "
            "smaller body (a study spec names its data by path; it does not carry it), or ask "
            "the operator to raise HPO_MAX_BODY_BYTES"
        )
        await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)


def _framing(scope: Scope) -> tuple[int | None, bool]:
    """The declared ``Content-Length`` (None without one), and whether the body is chunked."""
    declared, chunked = None, False
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                pass  # the server refuses a malformed length before the app is called
        elif name == b"transfer-encoding":
            chunked = True
    return declared, chunked


def _human(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n} bytes"
