"""The dashboard in a real headless Chromium (Debian's package, driven by Playwright).

Each test leaves a screenshot under test-output/screenshots/ for a person to look at.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from hpo.client import Client
from tests._browser import chromium
from tests._live import LiveController

SHOTS = Path(__file__).resolve().parent.parent / "test-output" / "screenshots"
SPACE = {
    "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "num_layers": {"type": "int", "low": 1, "high": 6},
    "optimizer": {"type": "categorical", "choices": ["adamw", "sgd"]},
}


def _asha(name: str, **budget: int) -> dict:
    return {
        "name": name,
        "objective": {"metric": "val_accuracy"},
        "search_space": SPACE,
        "algorithm": {"name": "asha", "seed": 0, "reduction_factor": 3, "grace_period": 1},
        "budget": {"max_trials": 12, "max_epochs": 9, **budget},
    }


def _quality(p: dict) -> float:
    return (
        math.exp(-(((math.log10(p["learning_rate"]) + 2.5) / 1.5) ** 2))
        * (0.9 if p["optimizer"] == "adamw" else 0.7)
        + 0.01 * p["num_layers"]
    )


def run_trials(client: Client, study: str, n: int, *, fail_every: int = 0) -> None:
    for i in range(n):
        trial = client.ask(study, worker="test-worker")
        if fail_every and i % fail_every == fail_every - 1:
            trial.fail("CUDA out of memory (simulated)")
            continue
        q = _quality(trial.params)
        for epoch in range(1, 10):
            metrics = {
                "val_accuracy": q * (1 - math.exp(-epoch / 3)),
                "train_loss": 2 - q * epoch / 9,
            }
            if trial.report(epoch, metrics):
                break
        else:
            trial.complete(metrics)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A controller with a finished ASHA study, a running one, an empty and a cancelled one."""
    db = tmp_path_factory.mktemp("pages") / "hpo.db"
    live = LiveController(f"sqlite:///{db}").start(dispatch=False)
    client = Client(live.url)
    client.create_study(_asha("asha-digits"))
    run_trials(client, "asha-digits", 12, fail_every=5)
    client.create_study({**_asha("random-digits"), "algorithm": {"name": "random", "seed": 1}})
    run_trials(client, "random-digits", 6)
    client.create_study(_asha("live-study", max_trials=30))
    run_trials(client, "live-study", 3)
    client.create_study(_asha("empty-study"))
    client.create_study(_asha("cancelled-study"))
    client.cancel_study("cancelled-study")
    yield live, client
    live.stop()


@pytest.fixture(scope="module")
def browser():  # type: ignore[no-untyped-def]
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{request.node.name}.png"), full_page=True)
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def _loaded(page: Page, what: str) -> None:
    page.wait_for_selector(f"body[data-loaded='{what}']", timeout=30_000)


def _traces(page: Page, figure: str) -> int:
    page.wait_for_selector(f"#{figure}[data-traces]", timeout=30_000)
    return int(page.get_attribute(f"#{figure}", "data-traces") or -1)


def test_the_studies_page_lists_every_study_newest_first(site, page):
    live, client = site
    page.goto(f"{live.url}/")
    _loaded(page, "studies")
    rows = page.locator("#studies-table tbody tr")
    expect(rows).to_have_count(5)
    names = [rows.nth(i).locator("td").first.inner_text() for i in range(5)]
    assert names == ["cancelled-study", "empty-study", "live-study", "random-digits", "asha-digits"]
    expect(rows.nth(4)).to_contain_text("asha")
    expect(rows.nth(4)).to_contain_text("100%")
    page.select_option("#status-filter", "cancelled")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("cancelled-study")


def test_a_study_page_draws_its_views(site, page):
    live, client = site
    page.goto(f"{live.url}/studies/asha-digits")
    _loaded(page, "study")
    assert _traces(page, "fig-history") == 2  # the trials and the best so far
    assert page.locator("#fig-history svg.main-svg").count() >= 1
    assert page.locator("#fig-history .scatterlayer .trace").count() == 2
    curves = len(client.trials("asha-digits")) - len(client.trials("asha-digits", state="failed"))
    assert _traces(page, "fig-curves") == curves, "one learning curve per trial that reported"
    assert _traces(page, "fig-parallel") == 1
    assert _traces(page, "fig-importance") == 1
    assert _traces(page, "fig-slice") == len(SPACE)
    assert _traces(page, "fig-contour") >= 1
    expect(page.locator("#best-json")).to_contain_text("learning_rate")
    expect(page.locator("#best-call")).to_contain_text('best_config("asha-digits")')
    expect(page.locator("#trials-table tbody tr")).to_have_count(12)


def test_the_trials_table_sorts_and_filters(site, page):
    live, client = site
    page.goto(f"{live.url}/studies/asha-digits")
    _loaded(page, "study")
    page.click("#trials-table th[data-sort='value']")
    page.click("#trials-table th[data-sort='value']")  # descending
    best = client.get_study("asha-digits").best
    expect(page.locator("#trials-table tbody tr").first).to_have_attribute(
        "data-number", str(best.number)
    )
    page.select_option("#trial-state", "failed")
    expect(page.locator("#trials-table tbody tr")).to_have_count(2)


def test_selecting_two_trials_opens_the_comparison(site, page):
    live, client = site
    completed = [t.number for t in client.trials("asha-digits", state="completed")][:2]
    page.goto(f"{live.url}/studies/asha-digits")
    _loaded(page, "study")
    for number in completed:
        page.check(f"#trials-table input.pick[data-number='{number}']")
    page.click("#compare-button")
    _loaded(page, "compare")
    assert page.url.endswith(f"/studies/asha-digits/compare?trials={completed[0]},{completed[1]}")
    expect(page.locator("#compare-table thead th")).to_have_count(3)
    assert page.locator("#compare-table tr.differs").count() >= 1
    assert _traces(page, "fig-compare-val_accuracy") == 2
    assert _traces(page, "fig-compare-train_loss") == 2


def test_a_running_study_updates_without_reload(site, page):
    live, client = site
    page.goto(f"{live.url}/studies/live-study")
    _loaded(page, "study")
    expect(page.locator("#trials-table tbody tr")).to_have_count(3)
    page.evaluate("window.__marker = 'same page'")
    run_trials(client, "live-study", 2)
    expect(page.locator("#trials-table tbody tr")).to_have_count(5, timeout=15_000)
    assert page.evaluate("window.__marker") == "same page", "the page must update in place"


def test_a_trial_page_shows_params_curves_and_runs(site, page):
    live, client = site
    failed = client.trials("asha-digits", state="failed")[0]
    page.goto(f"{live.url}/studies/asha-digits/trials/{failed.number}")
    _loaded(page, "trial")
    expect(page.locator("#failure-reason")).to_contain_text("CUDA out of memory")
    expect(page.locator("#params-table tr")).to_have_count(len(SPACE))
    expect(page.locator("#runs-table tbody tr")).to_have_count(1)
    expect(page.locator("#runs-table")).to_contain_text("test-worker")
    completed = client.trials("asha-digits", state="completed")[0]
    page.goto(f"{live.url}/studies/asha-digits/trials/{completed.number}")
    _loaded(page, "trial")
    assert _traces(page, "fig-metric-val_accuracy") == 1
    assert _traces(page, "fig-metric-train_loss") == 1


def test_studies_compare_on_one_chart(site, page):
    live, client = site
    page.goto(f"{live.url}/compare?studies=asha-digits,random-digits")
    _loaded(page, "compare-studies")
    assert _traces(page, "fig-compare-studies") == 2


def test_empty_and_cancelled_studies_render(site, page):
    live, client = site
    for name in ("empty-study", "cancelled-study"):
        page.goto(f"{live.url}/studies/{name}")
        _loaded(page, "study")
        expect(page.locator("#study-status")).to_have_text(
            "cancelled" if name.startswith("cancelled") else "running"
        )
        expect(page.locator("#best-body")).to_contain_text("no completed trial yet")
        assert _traces(page, "fig-history") == 0
        assert page.locator("#fig-history .annotation-text").count() == 1


def test_an_unknown_study_is_a_friendly_404(site, page):
    live, client = site
    response = page.goto(f"{live.url}/studies/no-such-study")
    assert response is not None and response.status == 404
    expect(page.locator("h1")).to_have_text("Not found")
    expect(page.locator(".message")).to_contain_text("no study 'no-such-study'")
    expect(page.locator("a.button")).to_have_attribute("href", "/")
