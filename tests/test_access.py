"""Access control: every endpoint and page, under every role, with no key, a wrong key and a
revoked key; owners; worker keys limited to some studies; sessions, CSRF and cross-site
requests; the loopback default with no keys. The real app, on both databases."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from api import create_app
from api.routes import dispatch, figures, keys, meta, pages, studies, trials
from hpo import service
from hpo.settings import Settings
from tests.conftest import make_spec

ROLES = ("admin", "owner", "member", "viewer", "worker", "scoped")
STRANGERS = ("nobody", "wrong", "revoked")
CALLERS = ROLES + STRANGERS
READERS = {"admin", "owner", "member", "viewer"}


class World:
    """An app with one key per role, a study owned by member ``owner`` ("mine"), one whose
    name the scoped worker key covers ("batch-1"), and helpers to make fresh trials."""

    def __init__(self, url: str) -> None:
        self.app = create_app(Settings(database_url=url))
        self.http = TestClient(self.app, base_url="http://localhost")
        self.http.__enter__()
        db = self.app.state.db
        self.keys: dict[str, str] = {}
        for caller, role, studies_ in [
            ("admin", "admin", None),
            ("owner", "member", None),
            ("member", "member", None),
            ("viewer", "viewer", None),
            ("worker", "worker", None),
            ("scoped", "worker", ["batch-*"]),
            ("revoked", "admin", None),
        ]:
            self.keys[caller] = service.create_key(db, name=caller, role=role, studies=studies_)[1]
        service.revoke_key(db, name="revoked")
        self.keys["wrong"] = "hpo_" + "x" * 43
        self.counter = 0
        for name in ("mine", "batch-1"):
            self.create(name, as_="owner")
        self.done = self.ask("mine")  # a completed trial, for figures and /best
        self.call(
            "admin",
            "POST",
            f"/api/v1/studies/mine/trials/{self.done[0]}/complete",
            json={"metrics": {"acc": 0.5}},
            headers={"Authorization": f"Bearer {self.done[1]}"},
        )

    def close(self) -> None:
        self.http.__exit__(None, None, None)
        self.app.state.db.dispose()

    def headers(self, caller: str) -> dict[str, str]:
        return {} if caller == "nobody" else {"X-API-Key": self.keys[caller]}

    def call(self, caller: str, method: str, url: str, **kwargs: Any) -> Any:
        headers = {**self.headers(caller), **kwargs.pop("headers", {})}
        return self.http.request(method, url, headers=headers, follow_redirects=False, **kwargs)

    def create(self, name: str, *, as_: str = "owner") -> None:
        spec = make_spec(name, budget={"max_trials": 1000, "max_epochs": 5})
        response = self.call(as_, "POST", "/api/v1/studies", json=spec)
        assert response.status_code == 201, response.text

    def unique(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.counter}"

    def fresh(self) -> str:
        name = self.unique("s")
        self.create(name)
        return name

    def ask(self, study: str) -> tuple[int, str]:
        response = self.call("admin", "POST", f"/api/v1/studies/{study}/trials")
        assert response.status_code == 201, response.text
        return response.json()["number"], response.json()["token"]


@pytest.fixture
def world(db_url: str):
    w = World(db_url)
    yield w
    w.close()


@dataclass
class Case:
    """One endpoint: how to call it (fresh state per caller), and what each caller gets."""

    method: str
    path: str  # the route's path template, to prove every route is walked
    request: Callable[[World], tuple[str, dict[str, Any]]]
    ok: int
    allowed: set[str]


def _static(url: str) -> Callable[[World], tuple[str, dict[str, Any]]]:
    return lambda w: (url, {})


def _protocol(action: str, body: dict[str, Any]) -> Callable[[World], tuple[str, dict[str, Any]]]:
    def request(w: World) -> tuple[str, dict[str, Any]]:
        number, token = w.ask("mine")
        return (
            f"/api/v1/studies/mine/trials/{number}/{action}",
            {"json": body, "headers": {"Authorization": f"Bearer {token}"}},
        )

    return request


FIG = "/api/v1/studies/{study}/figures"
PROTOCOL = {"admin", "owner", "worker"}  # "mine" is the owner's; the scoped worker's is batch-*
CASES = [
    Case("GET", "/api/v1/studies", _static("/api/v1/studies"), 200, READERS | {"worker", "scoped"}),
    Case(
        "POST",
        "/api/v1/studies",
        lambda w: ("/api/v1/studies", {"json": make_spec(w.unique("new"))}),
        201,
        {"admin", "owner", "member"},
    ),
    Case(
        "POST",
        "/api/v1/studies/{study}/fork",
        lambda w: ("/api/v1/studies/mine/fork", {"json": make_spec(w.unique("fork"))}),
        201,
        {"admin", "owner", "member"},
    ),
    Case(
        "GET", "/api/v1/studies/{study}", _static("/api/v1/studies/mine"), 200, READERS | {"worker"}
    ),
    Case("GET", "/api/v1/studies/{study}/best", _static("/api/v1/studies/mine/best"), 200, READERS),
    Case(
        "POST",
        "/api/v1/studies/{study}/cancel",
        lambda w: (f"/api/v1/studies/{w.fresh()}/cancel", {}),
        200,
        {"admin", "owner"},
    ),
    Case(
        "DELETE",
        "/api/v1/studies/{study}",
        lambda w: (f"/api/v1/studies/{w.fresh()}", {}),
        204,
        {"admin", "owner"},
    ),
    Case(
        "GET",
        "/api/v1/studies/{study}/trials",
        _static("/api/v1/studies/mine/trials"),
        200,
        READERS,
    ),
    Case(
        "GET",
        "/api/v1/studies/{study}/trials/{number}",
        lambda w: (f"/api/v1/studies/mine/trials/{w.done[0]}", {}),
        200,
        READERS,
    ),
    Case(
        "POST",
        "/api/v1/studies/{study}/trials",
        _static("/api/v1/studies/mine/trials"),
        201,
        PROTOCOL,
    ),
    Case(
        "POST",
        "/api/v1/studies/{study}/trials/{number}/reports",
        _protocol("reports", {"step": 1, "metrics": {"acc": 0.1}}),
        200,
        PROTOCOL,
    ),
    Case(
        "POST",
        "/api/v1/studies/{study}/trials/{number}/heartbeat",
        _protocol("heartbeat", {}),
        200,
        PROTOCOL,
    ),
    Case(
        "POST",
        "/api/v1/studies/{study}/trials/{number}/complete",
        _protocol("complete", {"metrics": {"acc": 0.3}}),
        200,
        PROTOCOL,
    ),
    Case(
        "POST",
        "/api/v1/studies/{study}/trials/{number}/fail",
        _protocol("fail", {"reason": "boom"}),
        200,
        PROTOCOL,
    ),
    *[
        Case("GET", f"{FIG}/{name}", _static(f"/api/v1/studies/mine/figures/{name}"), 200, READERS)
        for name in ("history", "curves", "parallel", "importance", "slice", "contour")
    ],
    Case(
        "GET",
        f"{FIG}/compare",
        _static("/api/v1/studies/mine/figures/compare?trials=0,1"),
        200,
        READERS,
    ),
    Case(
        "GET",
        "/api/v1/studies/{study}/trials/{number}/figures",
        lambda w: (f"/api/v1/studies/mine/trials/{w.done[0]}/figures", {}),
        200,
        READERS,
    ),
    Case(
        "GET",
        "/api/v1/figures/compare-studies",
        _static("/api/v1/figures/compare-studies?studies=mine,batch-1"),
        200,
        READERS,
    ),
    Case("GET", "/api/v1/search-spaces", _static("/api/v1/search-spaces"), 200, READERS),
    Case("GET", "/api/v1/vocabulary", _static("/api/v1/vocabulary"), 200, READERS),
    Case("GET", "/healthz", _static("/healthz"), 200, set(CALLERS)),
    Case("GET", "/api/v1/keys", _static("/api/v1/keys"), 200, {"admin"}),
    Case(
        "POST",
        "/api/v1/keys",
        lambda w: (
            "/api/v1/keys",
            {"json": {"name": f"k{w.counter}-{len(w.keys)}", "role": "viewer"}},
        ),
        201,
        {"admin"},
    ),
    Case("DELETE", "/api/v1/keys/{name}", _static("/api/v1/keys/viewer-spare"), 200, {"admin"}),
    Case(
        "POST",
        "/api/v1/leases",
        lambda w: (
            "/api/v1/leases",
            {"json": {"holder": w.unique("d"), "studies": ["mine", "batch-1"], "ttl_seconds": 1}},
        ),
        200,
        {"admin", "worker", "scoped"},
    ),
    Case(
        "DELETE",
        "/api/v1/leases/{holder}",
        _static("/api/v1/leases/nobody-holds"),
        200,
        {"admin", "worker", "scoped"},
    ),
    Case("GET", "/api/v1/whoami", _static("/api/v1/whoami"), 200, set(ROLES)),
    # pages: a reader gets the page; no key, or a bad one, goes to /signin; a worker, 403
    Case("GET", "/", _static("/"), 200, READERS),
    Case("GET", "/studies/{study}", _static("/studies/mine"), 200, READERS),
    Case(
        "GET",
        "/studies/{study}/trials/{number}",
        lambda w: (f"/studies/mine/trials/{w.done[0]}", {}),
        200,
        READERS,
    ),
    Case(
        "GET", "/studies/{study}/compare", _static("/studies/mine/compare?trials=0,1"), 200, READERS
    ),
    Case("GET", "/compare", _static("/compare?studies=mine"), 200, READERS),
    Case("GET", "/signin", _static("/signin"), 200, set(CALLERS)),
    Case("GET", "/static/plotly.min.js", _static("/static/plotly.min.js"), 200, set(CALLERS)),
    Case("GET", "/static/{name}", _static("/static/dashboard.js"), 200, set(CALLERS)),
]
# walked in their own tests below
ELSEWHERE = {("POST", "/signin"), ("POST", "/signout")}
PAGES = {
    c.path for c in CASES if not c.path.startswith(("/api/", "/healthz", "/static", "/signin"))
}


def _expected(case: Case, caller: str) -> int:
    if caller in case.allowed:
        return case.ok
    if case.path in PAGES:
        return 303 if caller in STRANGERS else 403
    if caller in STRANGERS:
        return 401
    return 403


def test_every_route_is_walked() -> None:
    routes = {
        (method, route.path)
        for module in (studies, trials, meta, figures, keys, pages, dispatch)
        for route in module.router.routes
        if isinstance(route, APIRoute)
        for method in route.methods - {"HEAD"}
    }
    walked = {(c.method, c.path) for c in CASES} | ELSEWHERE
    assert routes - walked == set(), "routes with no access case in this file"


def test_every_endpoint_and_page_gives_each_caller_the_status_its_role_allows(world) -> None:
    service.create_key(world.app.state.db, name="viewer-spare", role="viewer")
    wrong: list[str] = []
    for case in CASES:
        for caller in CALLERS:
            url, kwargs = case.request(world)
            response = world.call(caller, case.method, url, **kwargs)
            expected = _expected(case, caller)
            if response.status_code != expected:
                wrong.append(
                    f"{case.method} {url} as {caller}: {response.status_code}, expected "
                    f"{expected} ({response.text[:160]})"
                )
            elif expected == 303:
                assert response.headers["location"].startswith("/signin?next=")
            elif expected in (401, 403) and case.path not in PAGES:
                assert response.json()["detail"], "an error must say why"
    assert not wrong, "\n".join(wrong)


def test_a_member_cannot_cancel_or_delete_another_members_study_and_is_told_why(world) -> None:
    for method, url in [
        ("POST", "/api/v1/studies/mine/cancel"),
        ("DELETE", "/api/v1/studies/mine"),
    ]:
        response = world.call("member", method, url)
        assert response.status_code == 403
        assert "created" in response.json()["detail"] and "'owner'" in response.json()["detail"]
    study = world.call("viewer", "GET", "/api/v1/studies/mine").json()
    assert study["status"] == "running" and study["created_by"] == "owner"


def test_a_scoped_worker_key_sees_and_runs_only_its_studies(world) -> None:
    listed = world.call("scoped", "GET", "/api/v1/studies").json()
    assert [s["name"] for s in listed["data"]] == ["batch-1"] and listed["count"] == 1
    assert world.call("scoped", "GET", "/api/v1/studies/mine").status_code == 403
    asked = world.call("scoped", "POST", "/api/v1/studies/batch-1/trials")
    assert asked.status_code == 201
    denied = world.call("scoped", "POST", "/api/v1/studies/mine/trials")
    assert denied.status_code == 403 and "batch-*" in denied.json()["detail"]


def test_a_revoked_key_stops_working_at_once_and_keys_are_never_shown_again(world) -> None:
    created = world.call("admin", "POST", "/api/v1/keys", json={"name": "ci", "role": "member"})
    assert created.status_code == 201
    key = created.json()["key"]
    assert world.http.get("/api/v1/whoami", headers={"X-API-Key": key}).json()["name"] == "ci"
    listing = world.call("admin", "GET", "/api/v1/keys").text
    assert key not in listing and key[:8] in listing
    assert world.call("admin", "DELETE", "/api/v1/keys/ci").json()["revoked_at"]
    assert world.http.get("/api/v1/whoami", headers={"X-API-Key": key}).status_code == 401
    again = world.call("admin", "POST", "/api/v1/keys", json={"name": "ci", "role": "viewer"})
    assert again.status_code == 409 and "already exists" in again.json()["detail"]


def _sign_in(world: World, caller: str) -> tuple[str, str]:
    response = world.http.post(
        "/signin",
        data={"key": world.keys[caller], "next": "/studies/mine"},
        headers={"Origin": "http://localhost"},
        follow_redirects=False,
    )
    assert response.status_code == 303 and response.headers["location"] == "/studies/mine"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    page = world.http.get("/studies/mine")
    assert page.status_code == 200 and caller in page.text and "Sign out" in page.text
    csrf = re.search(r'<meta name="hpo-csrf" content="([^"]+)"', page.text)
    assert csrf
    return cookie, csrf.group(1)


def test_dashboard_sign_in_then_state_changes_need_the_csrf_token_and_this_origin(world) -> None:
    _, csrf = _sign_in(world, "owner")
    url = "/api/v1/studies/mine/cancel"
    assert world.http.post(url).status_code == 403  # the cookie alone
    cross = world.http.post(url, headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"})
    assert cross.status_code == 403
    fetched = world.http.post(url, headers={"X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"})
    assert fetched.status_code == 403
    assert world.call("viewer", "GET", "/api/v1/studies/mine").json()["status"] == "running"
    ok = world.http.post(url, headers={"X-CSRF-Token": csrf, "Origin": "http://localhost"})
    assert ok.status_code == 200 and ok.json()["status"] == "cancelled"
    # sign out: the form carries the token; the session is gone afterwards
    out = world.http.post("/signout", data={"csrf": csrf}, follow_redirects=False)
    assert out.status_code == 303
    world.http.cookies.clear()
    assert world.http.get("/", follow_redirects=False).status_code == 303


def test_sign_in_refuses_bad_keys_worker_keys_and_other_origins(world) -> None:
    def sign_in(key: str, origin: str = "http://localhost") -> Any:
        return world.http.post(
            "/signin", data={"key": key}, headers={"Origin": origin}, follow_redirects=False
        )

    assert sign_in("hpo_nope").status_code == 401
    assert sign_in(world.keys["revoked"]).status_code == 401
    assert sign_in(world.keys["worker"]).status_code == 403
    assert sign_in(world.keys["admin"], origin="https://evil.example").status_code == 403
    assert "set-cookie" not in sign_in(world.keys["admin"], origin="https://evil.example").headers
    hijack = world.http.post(
        "/signin",
        data={"key": world.keys["admin"], "next": "https://evil.example/"},
        headers={"Origin": "http://localhost"},
        follow_redirects=False,
    )
    assert hijack.headers["location"] == "/"


def test_revoking_a_key_ends_its_sessions(world) -> None:
    _sign_in(world, "viewer")
    assert world.http.get("/", follow_redirects=False).status_code == 200
    world.call("admin", "DELETE", "/api/v1/keys/viewer")
    assert world.http.get("/", follow_redirects=False).status_code == 303


# -- no keys yet: open on loopback only -------------------------------------------------------


@pytest.fixture
def open_app(tmp_path):
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'open.db'}"))
    yield app
    app.state.db.dispose()


def test_with_no_keys_loopback_callers_are_admin_but_other_hosts_and_sites_are_refused(
    open_app,
) -> None:
    with TestClient(open_app, base_url="http://localhost") as http:
        who = http.get("/api/v1/whoami").json()
        assert who == {"name": None, "role": "admin", "access_control": False}
        assert http.post("/api/v1/studies", json=make_spec("open")).status_code == 201
        assert http.get("/").status_code == 200 and "access control off" in http.get("/").text
        # a page on another site posting with no-cors sends its Origin: nothing changes
        cross = http.post("/api/v1/studies/open/cancel", headers={"Origin": "http://evil.example"})
        assert cross.status_code == 403
        assert http.get("/api/v1/studies/open").json()["status"] == "running"
        # a name that resolves here but is not loopback (DNS rebinding) is not let in
        rebound = http.get("/api/v1/studies", headers={"Host": "evil.example:8000"})
        assert rebound.status_code == 403 and "loopback" in rebound.json()["detail"]
        # the first key turns access control on (this app forgets what it knew at once)
        service.create_key(open_app.state.db, name="first", role="admin")
        open_app.state.gate.forget()
        assert http.get("/api/v1/studies").status_code == 401


def test_a_controller_bound_to_another_address_asks_for_a_key_even_with_none(tmp_path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'wide.db'}", host="0.0.0.0")
    app = create_app(settings)
    with TestClient(app, base_url="http://localhost") as http:
        assert http.get("/api/v1/studies").status_code == 401
    app.state.db.dispose()


def test_allowed_hosts_refuse_other_host_headers(tmp_path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'hosts.db'}", allowed_hosts=["hpo.example.com"]
    )
    app = create_app(settings)
    with TestClient(app, base_url="http://hpo.example.com") as http:
        assert http.get("/healthz").status_code == 200
        refused = http.get("/healthz", headers={"Host": "other.example"})
        assert refused.status_code == 400 and "HPO_ALLOWED_HOSTS" in refused.json()["detail"]
    app.state.db.dispose()
