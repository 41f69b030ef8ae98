"""Pages on another origin cannot change anything, in a real Chromium: a form that posts
``text/plain``, and ``fetch(..., {mode: "no-cors"})``, against a signed-in dashboard and
against a controller with access control off. The dashboard's own same-origin call, with the
session's CSRF token, still works."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import Browser

from hpo import service
from tests._browser import chromium
from tests._live import LiveController
from tests.conftest import make_spec

ATTACK = """<!doctype html><html><body>
<form id="f" method="post" enctype="text/plain" action="{target}/api/v1/studies/target/cancel">
  <input name='{{"x":"' value='"}}'>
</form>
<script>
  const hits = [
    fetch("{target}/api/v1/studies/target/cancel", {{method: "POST", mode: "no-cors",
      credentials: "include"}}),
    fetch("{target}/api/v1/studies/target/trials", {{method: "POST", mode: "no-cors",
      credentials: "include", headers: {{"Content-Type": "text/plain"}}, body: "{{}}"}}),
    fetch("{target}/api/v1/studies", {{method: "POST", mode: "no-cors", credentials: "include",
      headers: {{"Content-Type": "text/plain"}},
      body: JSON.stringify({spec})}}),
  ];
  Promise.allSettled(hits).then(() => {{ document.title = "sent"; }});
</script></body></html>"""


@pytest.fixture(scope="module")
def browser():  # type: ignore[no-untyped-def]
    with chromium() as launched:
        yield launched


#: another site, and another origin of the same site (another port: SameSite cookies go along)
EVIL = ("http://evil.example/attack.html", "http://127.0.0.1:9/attack.html")


def _attack(browser: Browser, target: str, context=None) -> None:  # type: ignore[no-untyped-def]
    """Open a page of another site (served by the browser's request interception) that
    posts to ``target`` with no-cors fetches, then submits its text/plain form."""
    import json

    body = ATTACK.format(target=target, spec=json.dumps(make_spec("planted")))
    context = context or browser.new_context()
    for evil in EVIL:
        page = context.new_page()
        page.route(evil, lambda route: route.fulfill(body=body, content_type="text/html"))
        page.goto(evil, timeout=15000)
        page.wait_for_function("document.title === 'sent'", polling=100, timeout=15000)
        # the text/plain form post, as a person's click sends it
        with page.expect_response(lambda r: r.request.method == "POST", timeout=15000) as posted:
            page.evaluate("document.getElementById('f').submit()")
        assert posted.value.status in (401, 403), f"{evil}: {posted.value.status}"


def _untouched(live: LiveController, headers: dict[str, str]) -> None:
    study = live.api("GET", "/api/v1/studies/target", headers=headers).json()
    assert study["status"] == "running", "a page on another origin cancelled the study"
    assert study["n_trials"] == 0, "a page on another origin asked for a trial"
    missing = live.api("GET", "/api/v1/studies/planted", headers=headers)
    assert missing.status_code == 404, "a page on another origin created a study"


def test_another_origin_cannot_change_a_signed_in_dashboards_studies(browser, tmp_path) -> None:
    live = LiveController(f"sqlite:///{tmp_path / 'hpo.db'}").start(dispatch=False)
    try:
        db = live.app.state.db
        _, owner = service.create_key(db, name="owner", role="member")
        headers = {"X-API-Key": owner}
        assert live.api("POST", "/api/v1/studies", json=make_spec("target"), headers=headers)
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{live.url}/studies/target")
        assert "/signin" in page.url
        page.fill("#key", owner)
        page.click("button[type=submit]")
        page.wait_for_url(f"{live.url}/studies/target")
        cookie = next(c for c in context.cookies() if c["name"] == "hpo_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        # the headers the browser got with the dashboard's page
        shown = page.goto(f"{live.url}/studies/target")
        assert shown is not None
        got = shown.all_headers()
        assert "script-src 'self'" in got["content-security-policy"]
        assert "frame-ancestors 'none'" in got["content-security-policy"]
        assert got["x-frame-options"] == "DENY"
        assert got["x-content-type-options"] == "nosniff"
        assert got["referrer-policy"]
        # the page's own API calls carry the session: the study's summary and trials load
        page.wait_for_function(
            "document.body.dataset.loaded === 'study'", polling=100, timeout=20000
        )

        _attack(browser, live.url, context)
        _untouched(live, headers)

        # the dashboard itself may: same origin, with the token its page carries
        status = page.evaluate(
            """async () => {
                const csrf = document.querySelector('meta[name=hpo-csrf]').content;
                const r = await fetch('/api/v1/studies/target/cancel',
                    {method: 'POST', headers: {'X-CSRF-Token': csrf}});
                return r.status;
            }"""
        )
        assert status == 200
        study = live.api("GET", "/api/v1/studies/target", headers=headers).json()
        assert study["status"] == "cancelled"
        context.close()
    finally:
        live.stop()


def test_another_origin_cannot_change_a_controller_with_access_control_off(
    browser, tmp_path
) -> None:
    live = LiveController(f"sqlite:///{tmp_path / 'hpo.db'}").start(dispatch=False)
    try:
        assert httpx.post(f"{live.url}/api/v1/studies", json=make_spec("target")).is_success
        context = browser.new_context()
        _attack(browser, live.url, context)
        _untouched(live, {})
        context.close()
    finally:
        live.stop()
