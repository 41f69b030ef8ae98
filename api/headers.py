"""Security headers on every response: pages, API answers, static files and errors.

The dashboard's pages load scripts from the app alone (``/static/dashboard.js``,
``/static/plotly.min.js``) and run no inline script, so the Content-Security-Policy allows
``script-src 'self'`` and nothing else. Styles may be inline: Plotly sets ``style``
attributes and inserts its own ``<style>`` rules as it draws. Nothing may frame a page, and
no page sends its URL (which names studies) to another site.

One exception, for one page: Plotly draws the parallel coordinates with WebGL through regl,
which compiles its draw commands with ``new Function``; without ``'unsafe-eval'`` the view
stays blank ("WebGL is not supported", and a ``script-src eval`` violation per command,
seen in Chromium). The study page, the only one that draws them, sets
:data:`WEBGL_PAGE_POLICY` itself (a policy the app set is kept as it is). Inline scripts
stay refused there too. Plotly's "strict" bundle (npm ``plotly.js-strict-dist-min``, the
same 4.1.1) ships regl's commands precompiled and would make the exception unnecessary.

The interactive API docs (``/docs``, ``/redoc``) are FastAPI's: they load Swagger UI or ReDoc
from a CDN and start it with an inline script, so those paths alone get a policy that allows
that CDN and inline scripts; they show the OpenAPI document, never user text.

:data:`SECURITY_HEADERS` is also what :mod:`api.errors` adds to a 500, which Starlette sends
from outside every middleware.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "SECURITY_HEADERS",
    "WEBGL_PAGE_POLICY",
    "SecurityHeadersMiddleware",
]

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
#: the study page's: regl (Plotly's WebGL traces: parallel coordinates) needs eval
WEBGL_PAGE_POLICY = CONTENT_SECURITY_POLICY.replace(
    "script-src 'self'", "script-src 'self' 'unsafe-eval'"
)
_CDN = "https://cdn.jsdelivr.net"
#: FastAPI's /docs and /redoc: Swagger UI / ReDoc from the CDN, started by an inline script
DOCS_POLICY = "; ".join(
    [
        "default-src 'self'",
        f"script-src 'self' 'unsafe-inline' {_CDN}",
        f"style-src 'self' 'unsafe-inline' {_CDN} https://fonts.googleapis.com",
        f"img-src 'self' data: {_CDN} https://fastapi.tiangolo.com",
        "font-src 'self' data: https://fonts.gstatic.com",
        f"worker-src 'self' blob: {_CDN}",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)
_DOCS_PATHS = ("/docs", "/redoc")

SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
_CSP = b"content-security-policy"
_RAW = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
_RAW_DOCS = [(k, DOCS_POLICY.encode() if k == _CSP else v) for k, v in _RAW]


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        docs = path == "/docs/oauth2-redirect" or path in _DOCS_PATHS
        extra = _RAW_DOCS if docs else _RAW

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                own = {k.lower() for k, _ in headers}  # a page's own policy stays
                message = {**message, "headers": headers + [h for h in extra if h[0] not in own]}
            await send(message)

        await self.app(scope, receive, with_headers)
