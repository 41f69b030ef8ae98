"""Issue 8, point 3: user text is data, never markup, in every page and every Plotly label
and hover, under the Content-Security-Policy, in a real headless Chromium.

One study carries markup wherever a user may type text: categorical choices, the objective's
name, reported metric names, a failure reason and a worker name. Every page of it is opened
with a listener for CSP violations, dialogs and console errors; the page must draw its plots,
show the text as written, and hold no element or link made from it.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from hpo.client import Client
from tests._browser import chromium
from tests._live import LiveController
from tests.test_pages import SHOTS

EVIL_LINK = '<a href="https://evil.example">x</a>'
EVIL_IMG = "<img src=x onerror=alert(1)>"
AMP = "a < b & c"
TEMPLATE = "%{y}"
CHOICES = [EVIL_LINK, EVIL_IMG, AMP, TEMPLATE]
OBJECTIVE = '<a href="https://evil.example">acc</a>'
OTHER_METRIC = "<img src=x onerror=alert(2)>"
REASON = '<a href="https://evil.example">boom</a><img src=x onerror=alert(3)> & more'
WORKER = "<img src=x onerror=alert(4)>"
SPEC = {
    "name": "markup",
    "objective": {"metric": OBJECTIVE},
    "search_space": {
        "choice": {"type": "categorical", "choices": CHOICES},
        "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "n": {"type": "int", "low": 1, "high": 4},
    },
    "algorithm": {"name": "random", "seed": 0},
    "budget": {"max_trials": 16, "max_epochs": 3},
}
# counts the page's CSP violations from before its first script runs
WATCH = """
window.__csp = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    db = tmp_path_factory.mktemp("user-text") / "hpo.db"
    live = LiveController(f"sqlite:///{db}").start(dispatch=False)
    client = Client(live.url)
    client.create_study(SPEC)
    client.create_study({**SPEC, "name": "plain"})
    numbers = {"completed": [], "failed": []}
    for study in ("markup", "plain"):
        for i in range(16):
            trial = client.ask(study, worker=WORKER)
            if i % 5 == 4:
                trial.fail(REASON)
                numbers["failed"].append(trial.number)
                continue
            value = 0.1 * (CHOICES.index(trial.params["choice"]) + 1) + 0.01 * trial.params["n"]
            for epoch in range(1, 4):
                metrics = {OBJECTIVE: value * epoch / 3, OTHER_METRIC: 1 - value * epoch / 3}
                trial.report(epoch, metrics)
            trial.complete(metrics)
            numbers["completed"].append(trial.number)
    yield live, numbers
    live.stop()


@pytest.fixture(scope="module")
def browser():  # type: ignore[no-untyped-def]
    with chromium(webgl=True) as launched:
        yield launched


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.add_init_script(WATCH)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"error: {exc}"))
    page.on(
        "dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"), dialog.dismiss())
    )

    def console(msg) -> None:  # type: ignore[no-untyped-def]
        # the app has no favicon: the browser's own request for one is not the page's doing
        if msg.type == "error" and not msg.location.get("url", "").endswith("/favicon.ico"):
            problems.append(f"console: {msg.text}")

    page.on("console", console)
    page.problems = problems  # type: ignore[attr-defined]
    yield page
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{request.node.name}.png"), full_page=True)
    context.close()


def _made_from_user_text(page: Page) -> list[str]:
    """Links, images and handlers the page holds that came from the markup in user text
    (text in ids or data attributes is data: it makes nothing)."""
    return page.evaluate(
        """() => [...document.querySelectorAll("*")].flatMap((el) => {
          const live = (a) => /^(href|xlink:href|src|srcset|action|formaction)$/.test(a.name) ||
            a.name.startsWith("on");
          const found = [...el.attributes]
            .filter((a) => live(a) && (a.value.includes("evil.example") || a.name.startsWith("on")))
            .map((a) => `${el.tagName} ${a.name}=${a.value}`);
          if (el.tagName.toLowerCase() === "img") found.push(`img src=${el.getAttribute("src")}`);
          return found;
        })"""
    )


def _plots_text(page: Page) -> str:
    return page.evaluate(
        "() => [...document.querySelectorAll('.plot')].map((d) => d.textContent).join('\\n')"
    )


def _check_clean(page: Page) -> None:
    assert page.evaluate("window.__csp") == [], "Content-Security-Policy violations"
    assert page.problems == []  # type: ignore[attr-defined]
    assert _made_from_user_text(page) == []
    text = _plots_text(page)
    assert "&lt;" not in text and "&amp;" not in text and "&gt;" not in text, "escaped twice"


def _loaded(page: Page, what: str) -> None:
    page.wait_for_selector(f"body[data-loaded='{what}']", timeout=30_000)


def _traces(page: Page, figure: str) -> int:
    page.wait_for_selector(f"#{figure}[data-traces]", timeout=30_000)
    return int(page.get_attribute(f"#{figure}", "data-traces") or -1)


def test_the_study_page_draws_user_text_as_text(site, page):
    live, _ = site
    page.goto(f"{live.url}/studies/markup")
    _loaded(page, "study")
    for figure in ("history", "curves", "parallel", "importance", "slice", "contour"):
        assert _traces(page, f"fig-{figure}") >= 1, figure
    slice_text = page.locator("#fig-slice").text_content() or ""
    for choice in CHOICES:
        assert choice in slice_text, f"the slice's ticks must show {choice!r} as written"
    assert OBJECTIVE in (page.locator("#fig-history").text_content() or "")
    parallel = page.locator("#fig-parallel").text_content() or ""
    assert OBJECTIVE in parallel and EVIL_IMG in parallel
    expect(page.locator("#study-meta")).to_contain_text(OBJECTIVE)
    expect(page.locator("#trials-table")).to_contain_text(EVIL_LINK)
    # a hover shows the trial's choice as written, and builds nothing from it
    for trace in range(2):
        page.evaluate(
            "(t) => Plotly.Fx.hover(document.getElementById('fig-history'), "
            "[{curveNumber: t, pointNumber: 0}])",
            trace,
        )
        hover = page.locator("#fig-history .hoverlayer").text_content() or ""
        assert "trial" in hover and "choice = " in hover, hover
        assert any(f"choice = {c}" in hover for c in CHOICES), hover
        assert OBJECTIVE in hover, hover
    _check_clean(page)


def test_the_trial_pages_show_metrics_reasons_and_workers_as_text(site, page):
    live, numbers = site
    page.goto(f"{live.url}/studies/markup/trials/{numbers['completed'][0]}")
    _loaded(page, "trial")
    figures = page.locator("#metric-figures .plot")
    expect(figures).to_have_count(2)
    expect(page.locator("#metric-figures h2").first).to_have_text(OBJECTIVE)
    expect(page.locator("#metric-figures h2").last).to_have_text(OTHER_METRIC)
    assert OTHER_METRIC in _plots_text(page)
    expect(page.locator("#runs-table")).to_contain_text(WORKER)
    _check_clean(page)

    page.goto(f"{live.url}/studies/markup/trials/{numbers['failed'][0]}")
    _loaded(page, "trial")
    expect(page.locator("#failure-reason")).to_contain_text(REASON)
    _check_clean(page)


def test_the_comparisons_and_lists_show_user_text_as_text(site, page):
    live, numbers = site
    a, b = numbers["completed"][:2]
    page.goto(f"{live.url}/studies/markup/compare?trials={a},{b}")
    _loaded(page, "compare")
    page.wait_for_selector("#compare-figures .plot[data-traces]", timeout=30_000)
    expect(page.locator("#compare-figures .plot")).to_have_count(2)
    expect(page.locator("#compare-table")).to_contain_text("choice")
    assert OBJECTIVE in _plots_text(page)
    _check_clean(page)

    page.goto(f"{live.url}/compare?studies=markup,plain")
    _loaded(page, "compare-studies")
    assert _traces(page, "fig-compare-studies") == 2
    _check_clean(page)

    page.goto(f"{live.url}/")
    _loaded(page, "studies")
    expect(page.locator("#studies-table tbody tr")).to_have_count(2)
    _check_clean(page)


def test_a_404_echoes_the_address_as_text(site, page):
    live, _ = site
    response = page.goto(f"{live.url}/studies/{EVIL_IMG}")
    assert response is not None and response.status == 404
    expect(page.locator(".message")).to_contain_text("<img src")
    page.problems.remove(  # type: ignore[attr-defined]
        "console: Failed to load resource: the server responded with a status of 404 (Not Found)"
    )
    _check_clean(page)
