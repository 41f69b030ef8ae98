"""Who is calling: API keys, dashboard sessions, and the checks on requests from browsers.

A caller is resolved once per request, in this order:

1. an ``X-API-Key`` header: the key's principal, or 401 for a wrong or revoked key. Browsers
   cannot send that header across origins without a CORS preflight (which this app never
   grants), so such requests need no CSRF token;
2. the ``hpo_session`` cookie of a dashboard sign-in: its key's principal; a request that
   changes state must also carry the session's CSRF token (``X-CSRF-Token``) and come from
   this origin (``Origin``, ``Sec-Fetch-Site``);
3. nobody: the anonymous admin when access control is off (no operator key yet and a
   loopback address, or ``--insecure-no-auth``), where state changes must still come from
   this origin and the request must be addressed to a loopback name (DNS rebinding); else
   401, saying how to get a key.

Key and session look-ups are cached for a few seconds by an object the app owns; a revoke or
sign-out through this app empties it at once, one through another controller or the CLI
takes effect within :data:`CACHE_SECONDS`.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from hpo import Forbidden, Unauthorized, service
from hpo.access import ANONYMOUS, Action, Principal, check, role_may
from hpo.settings import Settings
from hpo.storage import Database

API_KEY_HEADER = "X-API-Key"
SESSION_COOKIE = "hpo_session"
CSRF_HEADER = "X-CSRF-Token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: how long a key, session or "no keys yet" answer is reused without asking the database
CACHE_SECONDS = 5.0
_CACHE_ENTRIES = 4096

# declared for the OpenAPI document (the check itself is resolve() below)
api_key_scheme = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="An API key (`hpo keys create`); not needed while the controller has access "
    "control off. Dashboard pages use a session cookie from `/signin` instead.",
)


@dataclass(frozen=True)
class Caller:
    principal: Principal
    #: the session's CSRF token, for a caller recognised by a dashboard session
    csrf: str | None = None


def is_loopback_host(host: str) -> bool:
    """Whether a ``Host`` header names this machine only (``localhost``, 127.0.0.0/8, ::1)."""
    name = host.strip().lower()
    if name.startswith("["):  # [::1]:8000
        name = name[1 : name.find("]")] if "]" in name else name[1:]
    elif name.count(":") == 1:
        name = name.rsplit(":", 1)[0]
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_allowed(host: str, patterns: list[str]) -> bool:
    """Whether ``host`` (port dropped) matches one of ``patterns`` (``*.example.com`` too)."""
    name = host.strip().lower()
    name = name[: name.find("]") + 1] if name.startswith("[") else name.rsplit(":", 1)[0]
    for pattern in patterns:
        pattern = pattern.lower()
        if pattern == "*" or name == pattern:
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]):
            return True
    return False


def same_origin(request: Request) -> bool:
    """Whether a browser says the request comes from a page of this origin (a request from
    a program, which sends neither header, passes)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    return origin != "null" and urlsplit(origin).netloc.lower() == host.lower()


class _Expiring:
    """A small map whose entries expire (a bounded, app-owned cache)."""

    def __init__(self) -> None:
        self._items: OrderedDict[str, tuple[float, Any]] = OrderedDict()

    def get(self, key: str) -> tuple[bool, Any]:
        found = self._items.get(key)
        if found is None or found[0] < time.monotonic():
            return False, None
        return True, found[1]

    def put(self, key: str, value: Any) -> None:
        self._items[key] = (time.monotonic() + CACHE_SECONDS, value)
        self._items.move_to_end(key)
        while len(self._items) > _CACHE_ENTRIES:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()


class Gate:
    """The app's view of keys and sessions (``app.state.gate``): each answer of the database
    (a key's principal, a session's, whether operator keys exist) kept for a few seconds."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self._answers = _Expiring()

    def forget(self) -> None:
        """A key was revoked or a session ended here: ask the database again."""
        self._answers.clear()

    async def _ask(self, slot: str, read: Callable[..., Any], /, **kwargs: Any) -> Any:
        hit, answer = self._answers.get(slot)
        if not hit:
            answer = await run_in_threadpool(read, self.db, **kwargs)
            self._answers.put(slot, answer)
        return answer

    async def by_key(self, key: str) -> Principal | None:
        found: Principal | None = await self._ask(
            f"key:{service.digest(key)}", service.authenticate, key=key
        )
        return found

    async def by_session(self, token: str) -> tuple[Principal, str] | None:
        found: tuple[Principal, str] | None = await self._ask(
            f"session:{service.digest(token)}", service.session_principal, token=token
        )
        return found

    async def access_control_off(self) -> bool:
        """Off with ``--insecure-no-auth``, or on a loopback address before any operator key."""
        if self.settings.insecure_no_auth:
            return True
        if not is_loopback_host(self.settings.host):
            return False
        return not await self._ask("operator keys", service.operator_keys_exist)


def _gate(request: Request) -> Gate:
    gate: Gate = request.app.state.gate
    return gate


async def resolve(request: Request) -> Caller:
    """The caller of ``request`` (see the module docstring); raises 401/403."""
    cached: Caller | None = getattr(request.state, "caller", None)
    if cached is not None:
        return cached
    caller = await _resolve(request)
    request.state.caller = caller
    return caller


async def _resolve(request: Request) -> Caller:
    gate = _gate(request)
    key = request.headers.get(API_KEY_HEADER)
    if key is not None:
        principal = await gate.by_key(key.strip())
        if principal is None:
            raise Unauthorized(
                f"the API key in {API_KEY_HEADER} is not valid: unknown or revoked. "
                "`hpo keys list` shows the live ones; an admin can create one with "
                "`hpo keys create --name NAME --role ROLE`"
            )
        return Caller(principal)
    unsafe = request.method in UNSAFE_METHODS
    token = request.cookies.get(SESSION_COOKIE)
    found = await gate.by_session(token) if token else None
    if found is not None:
        principal, csrf = found
        if unsafe:
            _check_browser_request(request, csrf)
        return Caller(principal, csrf)
    if await gate.access_control_off():
        if unsafe and not same_origin(request):
            raise Forbidden(_CROSS_SITE)
        host = request.headers.get("host", "")
        settings = gate.settings
        if not (
            settings.insecure_no_auth
            or is_loopback_host(host)
            or host_allowed(host, settings.allowed_hosts)
        ):
            raise Forbidden(
                f"this controller has access control off, so it answers only requests "
                f"addressed to a loopback name such as localhost or 127.0.0.1, not {host[:80]!r} "
                "(a guard against DNS rebinding); create an API key (`hpo keys create`) or "
                "list the name in HPO_ALLOWED_HOSTS"
            )
        return Caller(ANONYMOUS)
    raise Unauthorized(
        f"this controller needs an API key: send it in the {API_KEY_HEADER} header (the hpo "
        "client and CLI read HPO_API_KEY), or sign in to the dashboard at /signin. An admin "
        "creates keys with `hpo keys create --name NAME --role ROLE`"
    )


_CROSS_SITE = (
    "a request that changes state must come from this controller's own pages or from a "
    "program, not from a page on another site"
)


def _check_browser_request(request: Request, csrf: str, *, form_token: str | None = None) -> None:
    """A state change made with a session cookie: same origin, and the session's CSRF token."""
    if not same_origin(request):
        raise Forbidden(_CROSS_SITE)
    sent = request.headers.get(CSRF_HEADER) or form_token or ""
    if not hmac.compare_digest(sent.encode(), csrf.encode()):
        raise Forbidden(
            f"a state change made with a dashboard session needs the session's CSRF token in "
            f"the {CSRF_HEADER} header (pages carry it in <meta name=hpo-csrf>); programs "
            f"should send an API key in {API_KEY_HEADER} instead"
        )


async def resolve_session_only(request: Request) -> Caller | None:
    """The session of the request's cookie, without the header checks (a form post checks
    its own token with :func:`check_form_csrf`)."""
    token = request.cookies.get(SESSION_COOKIE)
    found = await _gate(request).by_session(token) if token else None
    return None if found is None else Caller(*found)


def check_form_csrf(request: Request, caller: Caller, form_token: str | None) -> None:
    """For HTML form posts (sign-out), which send the token as a form field."""
    if caller.csrf is not None:
        _check_browser_request(request, caller.csrf, form_token=form_token)


async def _caller(
    request: Request, _key: Annotated[str | None, Depends(api_key_scheme)] = None
) -> Principal:
    return (await resolve(request)).principal


def requires(action: Action) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller, whose role must allow ``action`` (the study-level rules, a
    member's own studies or a worker key's patterns, are :func:`check_study`'s)."""

    async def dependency(principal: Annotated[Principal, Depends(_caller)]) -> Principal:
        if not role_may(principal.role, action):
            check(principal, action)  # raises, saying which roles may
        return principal

    dependency.__name__ = f"requires_{action.name.lower()}"
    return dependency


def check_study(db: Database, principal: Principal, action: Action, ref: str | int) -> None:
    """The study-level rule: a member's own studies, a worker key's patterns. Admins and
    unrestricted workers pass without a look-up (the trial protocol's hot path)."""
    if not principal.study_bound:
        return
    name, owner = service.study_owner(db, ref=ref)
    check(principal, action, study=name, owner=owner)


#: any caller the controller recognises (or the anonymous admin with access control off)
Anyone = Annotated[Principal, Depends(_caller)]
Reader = Annotated[Principal, Depends(requires(Action.READ))]
StudyReader = Annotated[Principal, Depends(requires(Action.READ_STUDY))]
Creator = Annotated[Principal, Depends(requires(Action.CREATE))]
Manager = Annotated[Principal, Depends(requires(Action.MANAGE))]
Runner = Annotated[Principal, Depends(requires(Action.PROTOCOL))]
DispatcherKey = Annotated[Principal, Depends(requires(Action.DISPATCH))]
Admin = Annotated[Principal, Depends(requires(Action.KEYS))]


class AllowedHostsMiddleware:
    """``HPO_ALLOWED_HOSTS``: answer 400 to a request addressed to any other ``Host``."""

    def __init__(self, app: ASGIApp, hosts: list[str]) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = Headers(scope=scope).get("host", "")
            if not host_allowed(host, self.hosts):
                detail = (
                    f"this controller answers requests addressed to {', '.join(self.hosts)}, "
                    f"not {host[:80]!r} (HPO_ALLOWED_HOSTS)"
                )
                await JSONResponse({"detail": detail}, status_code=400)(scope, receive, send)
                return
        await self.app(scope, receive, send)
