"""User text reaches every figure as data: escaped wherever Plotly reads markup (labels,
titles, ticks, legend names, hovers), and never inside a hover template, where ``%{y}`` would
be a placeholder. ``tests/test_pages_user_text.py`` shows the same figures drawn in Chromium.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from dashboards._style import esc
from tests.conftest import make_spec

LINK = '<a href="https://evil.example">x</a>'
IMG = "<img src=x onerror=alert(1)>"
TEMPLATE = "%{y}"
OBJECTIVE = "<b>acc</b> & <i>more</i>"
OTHER = "<a href='https://evil.example'>loss</a>"
MARKUP = [LINK, IMG, OBJECTIVE, OTHER]


def _strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}")
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item, f"{path}[]")
    elif isinstance(value, str):
        yield path, value


def _plain_text_places(path: str) -> bool:
    """Where Plotly writes text as text (parallel coordinates' ticks), and what is not a
    figure (the comparison's table rows, the contour's parameter list)."""
    return (
        path.endswith("dimensions[].ticktext[]")
        or path.startswith(".params")
        or path.startswith(".meta")
    )


def _check(figure: dict[str, Any], where: str) -> set[str]:
    """Every user string in ``figure`` is escaped; returns the escaped ones found."""
    found = set()
    for path, text in _strings(figure):
        if path.endswith("hovertemplate"):  # user text travels in text or meta instead
            assert "evil" not in text and "acc" not in text and "img" not in text, (where, text)
        if _plain_text_places(path):
            continue
        for raw in MARKUP:
            assert raw not in text, f"{where}: raw user markup at {path}: {text!r}"
            if esc(raw) in text:
                found.add(raw)
    return found


def test_every_figure_escapes_user_text(api):
    spec = make_spec(
        "markup",
        objective={"metric": OBJECTIVE},
        search_space={
            "choice": {"type": "categorical", "choices": [LINK, IMG, TEMPLATE]},
            "x": {"type": "float", "low": 0.0, "high": 1.0},
        },
        budget={"max_trials": 12, "max_epochs": 3},
    )
    assert api.post("/api/v1/studies", json=spec).status_code == 201
    numbers = []
    for i in range(12):
        trial = api.post("/api/v1/studies/markup/trials").json()
        auth = {"Authorization": f"Bearer {trial['token']}"}
        base = f"/api/v1/studies/markup/trials/{trial['number']}"
        value = trial["params"]["x"] + i / 100
        for step in (1, 2):
            metrics = {OBJECTIVE: value * step, OTHER: 1 - value * step}
            api.post(f"{base}/reports", json={"step": step, "metrics": metrics}, headers=auth)
        api.post(f"{base}/complete", json={"metrics": metrics}, headers=auth)
        numbers.append(trial["number"])

    study = "/api/v1/studies/markup"
    found: set[str] = set()
    for view in ("history", "curves", "parallel", "importance", "slice", "contour"):
        response = api.get(f"{study}/figures/{view}")
        assert response.status_code == 200, (view, response.text)
        found |= _check(response.json(), view)
    trial = api.get(f"{study}/trials/{numbers[0]}/figures").json()
    assert set(trial) == {OBJECTIVE, OTHER}  # the page's headings: text as written
    for metric, figure in trial.items():
        found |= _check(figure, f"trial figure {metric}")
    compared = api.get(f"{study}/figures/compare", params={"trials": "0,1"}).json()
    assert set(compared["figures"]) == {OBJECTIVE, OTHER}
    for metric, figure in compared["figures"].items():
        found |= _check(figure, f"compare {metric}")
    assert {row["name"] for row in compared["params"]} >= {"choice", "x"}
    studies = api.get("/api/v1/figures/compare-studies", params={"studies": "markup"}).json()
    found |= _check(studies, "compare-studies")
    # and the text is there, escaped, not dropped
    assert found == set(MARKUP), found
