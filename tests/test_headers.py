"""Issue 8, point 3: the security headers are on every answer, pages, API, static files and
errors alike, and the pages' policy allows scripts from the app alone."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.headers import CONTENT_SECURITY_POLICY, WEBGL_PAGE_POLICY
from hpo.settings import Settings
from tests.conftest import make_spec

EXPECTED = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


@pytest.fixture(scope="module")
def http(tmp_path_factory):
    from api import create_app

    db = tmp_path_factory.mktemp("headers") / "hpo.db"
    app = create_app(Settings(database_url=f"sqlite:///{db}", mirror=False))

    @app.get("/test-only/boom", include_in_schema=False)
    def boom() -> None:
        raise RuntimeError("a bug of ours")

    with TestClient(app, base_url="http://localhost", raise_server_exceptions=False) as client:
        assert client.post("/api/v1/studies", json=make_spec()).status_code == 201
        yield client
    app.state.db.dispose()


def _policy(response) -> dict[str, str]:  # type: ignore[no-untyped-def]
    policy = response.headers["content-security-policy"]
    return {d.split()[0]: " ".join(d.split()[1:]) for d in policy.split("; ")}


ANSWERS = [
    ("GET", "/", 200),
    ("GET", "/studies/s1", 200),
    ("GET", "/studies/no-such-study", 404),
    ("GET", "/api/v1/studies", 200),
    ("GET", "/api/v1/studies/no-such-study", 404),
    ("GET", "/api/v1/studies?limit=0", 422),
    ("GET", "/static/dashboard.js", 200),
    ("GET", "/static/dashboard.css", 200),
    ("GET", "/static/plotly.min.js", 200),
    ("GET", "/static/no-such-file.js", 404),
    ("GET", "/no/such/route", 404),
    ("DELETE", "/api/v1/search-spaces", 405),
    ("GET", "/openapi.json", 200),
    ("GET", "/healthz", 200),
    ("GET", "/test-only/boom", 500),
]


@pytest.mark.parametrize(("method", "path", "status"), ANSWERS, ids=[a[1] for a in ANSWERS])
def test_every_answer_carries_the_security_headers(http, method, path, status):
    response = http.request(method, path)
    assert response.status_code == status
    for name, value in EXPECTED.items():
        assert response.headers.get(name) == value, (path, name, dict(response.headers))
    study_page = path == "/studies/s1"  # the one page with WebGL: see the test below
    policy = WEBGL_PAGE_POLICY if study_page else CONTENT_SECURITY_POLICY
    assert response.headers["content-security-policy"] == policy


def test_a_refused_body_carries_them_too(http):
    response = http.post(
        "/api/v1/studies", content=b" " * (2 << 20), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY


def test_the_pages_policy_allows_scripts_from_the_app_alone(http):
    for path in ("/", "/studies/s1/compare?trials=0,1", "/compare", "/studies/nope"):
        policy = _policy(http.get(path))
        assert policy["script-src"] == "'self'"  # no 'unsafe-inline', no 'unsafe-eval'
        assert policy["default-src"] == "'self'"
        assert policy["object-src"] == "'none'"
        assert policy["base-uri"] == "'none'"
        assert policy["frame-ancestors"] == "'none'"
    # the study page's parallel coordinates are WebGL, and regl compiles with new Function:
    # eval is allowed there, inline scripts still are not
    study = _policy(http.get("/studies/s1"))
    assert study["script-src"] == "'self' 'unsafe-eval'"
    assert {k: v for k, v in study.items() if k != "script-src"} == {
        k: v for k, v in _policy(http.get("/")).items() if k != "script-src"
    }


def test_no_page_runs_an_inline_script(http):
    """Every <script> of every page loads a file or holds JSON data."""
    import re

    for path in ("/", "/studies/s1", "/studies/s1/compare?trials=0,1", "/compare", "/nope"):
        html = http.get(path).text
        for tag in re.findall(r"<script\b[^>]*>", html):
            assert 'src="/static/' in tag or 'type="application/json"' in tag, (path, tag)


def test_the_api_docs_get_their_own_policy(http):
    """FastAPI's /docs loads Swagger UI from its CDN and starts it inline: only there."""
    docs = http.get("/docs")
    assert docs.status_code == 200
    policy = _policy(docs)
    assert "https://cdn.jsdelivr.net" in policy["script-src"]
    assert policy["frame-ancestors"] == "'none'"
    assert docs.headers["x-frame-options"] == "DENY"
