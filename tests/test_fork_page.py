"""Issue 9, point 6: the study page shows a fork's lineage (its parent and what it inherited,
the parent's forks) as links, and marks inherited trials, in a real headless Chromium."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from hpo.client import Client
from tests._browser import chromium
from tests._live import LiveController
from tests.conftest import make_spec
from tests.test_pages import SHOTS


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    db = tmp_path_factory.mktemp("fork-page") / "hpo.db"
    live = LiveController(f"sqlite:///{db}").start(dispatch=False)
    client = Client(live.url)
    client.create_study(make_spec("base.v1"))
    for _ in range(4):
        trial = client.ask("base.v1")
        trial.complete({"acc": trial.params["x"]})
    client.ask("base.v1").fail("boom")  # not inherited
    client.fork_study("base.v1", make_spec("base.v2", budget={"max_trials": 3, "max_epochs": 5}))
    trial = client.ask("base.v2")
    trial.complete({"acc": 0.5})
    yield live
    live.stop()


@pytest.fixture(scope="module")
def browser():  # type: ignore[no-untyped-def]
    with chromium() as launched:
        yield launched


def _open(browser, url: str, shot: str, what: str = "study"):  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    page.wait_for_selector(f"body[data-loaded='{what}']", timeout=30_000)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{shot}.png"), full_page=True)
    assert errors == []
    return page


def test_a_fork_shows_its_parent_and_marks_its_inherited_trials(site, browser):
    page = _open(browser, f"{site.url}/studies/base.v2", "fork-lineage")
    lineage = page.locator("#study-lineage")
    expect(lineage).to_have_text("forked from base.v1 (4 trials inherited)")
    expect(lineage.locator("a")).to_have_attribute("href", "/studies/base.v1")
    rows = page.locator("#trials-table tbody tr")
    expect(rows).to_have_count(5)
    marks = page.locator("#trials-table tbody tr .inherited")
    expect(marks).to_have_count(4)
    expect(marks.first).to_have_text("inherited from base.v1 #0")
    expect(marks.first.locator("a")).to_have_attribute("href", "/studies/base.v1/trials/0")
    expect(rows.nth(4).locator(".inherited")).to_have_count(0)  # its own trial, #4
    # the budget card counts the fork's own trials: 1 of 3, not 5
    expect(page.locator("#study-cards .card").first).to_contain_text("1 / 3")
    expect(page.locator("#study-cards .progress").first).to_have_attribute(
        "title", "1 of 3 trials done"
    )
    page.close()


def test_a_parent_lists_its_forks(site, browser):
    page = _open(browser, f"{site.url}/studies/base.v1", "fork-parent")
    lineage = page.locator("#study-lineage")
    expect(lineage).to_have_text("forks: base.v2")
    expect(lineage.locator("a")).to_have_attribute("href", "/studies/base.v2")
    expect(page.locator("#trials-table tbody tr .inherited")).to_have_count(0)
    page.close()


def test_an_inherited_trials_page_opens(site, browser):
    page = _open(browser, f"{site.url}/studies/base.v2/trials/0", "fork-trial", "trial")
    expect(page.locator("#trial-state")).to_have_text("completed")
    expect(page.locator("#runs-table tbody tr")).to_have_count(0)  # it never ran in the fork
    inherited = page.locator("#inherited-card")
    expect(inherited).to_contain_text("base.v1 #0")
    expect(inherited.locator("a")).to_have_attribute("href", "/studies/base.v1/trials/0")
    page.close()
