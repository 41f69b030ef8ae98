"""The dashboard's figure builders, fed with real study data read back through the app.

Studies are run through the trial protocol (ask, report per epoch, complete or fail) on the
real app, read back with the client and the service's dashboard reads, and each figure is
checked against what was reported. The studies are built once for the module, on SQLite: the
builders are pure (one backend tells as much as two) and the reads they draw are covered on
both backends by the API suite; building them per test would take most of a minute.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dashboards import figures
from dashboards._style import STATE_COLORS
from hpo import service
from hpo.client import Client
from hpo.schemas import TrialDetail, TrialPublic
from hpo.spec import StudySpec
from tests.conftest import make_spec

SPACE = {
    "x": {"type": "float", "low": 0.0, "high": 1.0},
    "lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-1, "log": True},
    "n": {"type": "int", "low": 1, "high": 4},
    "opt": {"type": "categorical", "choices": ["adam", "sgd"]},
}
Reported = dict[int, list[tuple[int, dict[str, float]]]]


def _quality(params: dict[str, Any]) -> float:
    bonus = 0.1 if params["opt"] == "adam" else 0.0
    return 1 - (params["x"] - 0.6) ** 2 - 0.05 * abs(math.log10(params["lr"]) + 2.5) + bonus


def _run(
    client: Client,
    study: str,
    n: int,
    *,
    epochs: int,
    fail: tuple[int, ...] = (),
    running: tuple[int, ...] = (),
) -> Reported:
    """Run ``n`` trials: report every epoch, stop when told; ``fail`` and ``running`` are
    indexes of trials that fail after two epochs or stay running after one."""
    reported: Reported = {}
    for i in range(n):
        trial = client.ask(study)
        quality, reports = _quality(trial.params), []
        for epoch in range(1, epochs + 1):
            metrics = {"val_acc": quality * (1 - math.exp(-epoch / 2)), "loss": 1 - quality}
            if trial.number % 2 == 0:
                metrics["grad_norm"] = 1 / epoch
            reports.append((epoch, metrics))
            stop = trial.report(epoch, metrics)
            if stop or (i in fail and epoch == 2) or (i in running and epoch == 1):
                break
        reported[trial.number] = reports
        if i in fail:
            trial.fail("CUDA error: an illegal memory access", kind="exception")
        elif not stop and i not in running:
            trial.complete(reports[-1][1])
    return reported


def _spec(name: str, **overrides: Any) -> dict[str, Any]:
    spec = make_spec(name, objective={"metric": "val_acc", "direction": "maximize"})
    spec.update(search_space=SPACE, **overrides)
    return spec


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The real app on a SQLite file, shared by the module's tests."""
    from api import create_app
    from hpo.settings import Settings

    url = f"sqlite:///{tmp_path_factory.mktemp('figures') / 'hpo.db'}"
    application = create_app(Settings(database_url=url))
    yield application
    application.state.db.dispose()


@pytest.fixture(scope="module")
def client(app: Any) -> Iterator[Client]:
    with TestClient(app, base_url="http://localhost") as http:
        yield Client(http=http)


@pytest.fixture(scope="module")
def rand(client: Client) -> Reported:
    """A random-search study: nine completed trials, one failed, one still running."""
    client.create_study(_spec("rand", budget={"max_trials": 20, "max_epochs": 3}))
    return _run(client, "rand", 11, epochs=3, fail=(4,), running=(10,))


@pytest.fixture(scope="module")
def asha(client: Client) -> Reported:
    """An ASHA study (rungs at 1 and 3 of 9 epochs): most trials pruned, one failed."""
    algorithm = {"name": "asha", "seed": 0, "reduction_factor": 3, "grace_period": 1}
    client.create_study(_spec("asha", algorithm=algorithm, budget={"max_epochs": 9}))
    return _run(client, "asha", 12, epochs=9, fail=(2,))


def _space() -> dict[str, Any]:
    return StudySpec.model_validate(_spec("any")).space


def _completed(trials: list[TrialPublic]) -> list[TrialPublic]:
    return sorted((t for t in trials if t.state == "completed"), key=lambda t: t.number)


def _plain_json(fig: dict[str, Any]) -> None:
    text = json.dumps(fig)  # JSON-ready, and no base64 typed arrays the tests could not read
    assert "bdata" not in text
    assert fig["layout"]["template"]["layout"]  # plotly_white travels with the figure
    assert "title" not in fig["layout"]  # the page has the headings


def test_history_shows_every_completed_value_and_a_monotone_best(client, rand):
    trials = client.trials("rand")
    done = _completed(trials)
    fig = figures.optimization_history(trials, metric="val_acc", direction="maximize")
    _plain_json(fig)
    markers, best = fig["data"]
    assert [markers["name"], best["name"]] == ["trials", "best so far"]
    assert markers["x"] == [t.number for t in done]
    assert markers["y"] == [t.value for t in done]
    assert all(b2 >= b1 for b1, b2 in zip(best["y"], best["y"][1:], strict=False))
    assert best["y"][-1] == client.get_study("rand").best.value
    assert best["x"][-1] == done[-1].number and best["line"]["shape"] == "hv"
    assert f"trial {done[0].number}" in markers["text"][0] and "lr = " in markers["text"][0]
    assert fig["layout"]["yaxis"]["title"]["text"] == "val_acc"

    low = figures.optimization_history(trials, metric="val_acc", direction="minimize")
    assert all(
        b2 <= b1 for b1, b2 in zip(low["data"][1]["y"], low["data"][1]["y"][1:], strict=False)
    )
    assert low["data"][1]["y"][-1] == min(t.value for t in done)


def test_learning_curves_draw_what_was_reported_and_end_pruned_trials_early(app, client, asha):
    curves = service.objective_curves(app.state.db, ref="asha")
    trials = {t.number: t for t in client.trials("asha")}
    fig = figures.learning_curves(curves, trials, metric="val_acc", max_epochs=9, rungs={0: [1, 3]})
    _plain_json(fig)
    assert len(fig["data"]) == len(asha) == len(trials)
    states = {t.state for t in trials.values()}
    assert {"completed", "pruned", "failed"} <= states
    for trace, number in zip(fig["data"], sorted(asha), strict=True):
        trial = trials[number]
        assert trace["x"] == [step for step, _ in asha[number]]
        assert trace["y"] == [m["val_acc"] for _, m in asha[number]]
        assert trace["line"]["color"] == STATE_COLORS[trial.state]
        assert f"trial {number}" in trace["meta"][0]
        if trial.state == "pruned":
            assert trace["x"][-1] == trial.last_step < 9
            assert trace["marker"]["symbol"] == "x" and trace["marker"]["size"][-1] > 0
            assert not any(trace["marker"]["size"][:-1])
        if trial.state == "completed":
            assert trace["x"][-1] == 9 and trace["mode"] == "lines"
    assert sorted(t["name"] for t in fig["data"] if t["showlegend"]) == sorted(states)
    rungs = [shape for shape in fig["layout"]["shapes"] if shape["line"]["dash"] == "dot"]
    assert sorted(shape["x0"] for shape in rungs) == [1, 3]


def test_parallel_coordinates_have_an_axis_per_parameter_and_the_objective(client, rand):
    trials = client.trials("rand")
    done = _completed(trials)
    fig = figures.parallel_coordinates(trials, _space(), metric="val_acc", direction="maximize")
    _plain_json(fig)
    (trace,) = fig["data"]
    assert trace["type"] == "parcoords"
    dims = {d["label"]: d for d in trace["dimensions"]}
    assert [d["label"] for d in trace["dimensions"]] == ["x", "lr (log)", "n", "opt", "val_acc"]
    assert dims["opt"]["ticktext"] == ["adam", "sgd"]
    assert dims["opt"]["values"] == [["adam", "sgd"].index(t.params["opt"]) for t in done]
    assert dims["lr (log)"]["values"] == pytest.approx([math.log10(t.params["lr"]) for t in done])
    assert dims["lr (log)"]["ticktext"] == ["0.0001", "0.001", "0.01", "0.1"]
    assert dims["val_acc"]["values"] == trace["line"]["color"] == [t.value for t in done]


def test_big_studies_are_capped_to_the_best_and_a_sample_of_the_rest():
    rng = random.Random(5)
    trials = [
        TrialPublic(
            number=i, state="completed", params={"x": rng.random(), "n": i % 4 + 1}, value=i / 100
        )
        for i in range(100)
    ]
    space = {"x": _space()["x"], "n": _space()["n"]}
    best = {0.0, 0.01, 0.02, 0.03, 0.04}
    note = "showing the best 5 trials and 5 of the other 95"
    lines = figures.parallel_coordinates(
        trials, space, metric="m", direction="minimize", max_lines=10
    )
    values = lines["data"][0]["dimensions"][-1]["values"]
    assert len(values) == 10 and best <= set(values)
    panels = figures.slice_plot(trials, space, metric="m", direction="minimize", max_points=10)
    assert [len(t["y"]) for t in panels["data"]] == [10, 10] and best <= set(panels["data"][0]["y"])
    grid = figures.contour(
        trials, space, metric="m", x="x", y="n", direction="minimize", max_points=10
    )
    assert len(grid["data"][-1]["x"]) == 10
    for fig in (lines, panels, grid):
        assert note in fig["layout"]["annotations"][-1]["text"]


def test_importance_bars_are_sorted_with_the_most_important_on_top(app, rand):
    importances = service.param_importances(app.state.db, ref="rand")
    assert set(importances) == set(SPACE)
    fig = figures.param_importance(importances)
    _plain_json(fig)
    (bars,) = fig["data"]
    assert bars["type"] == "bar" and bars["orientation"] == "h"
    assert bars["x"] == sorted(bars["x"])  # drawn bottom-up: the last bar is the top one
    assert bars["y"][-1] == max(importances, key=importances.__getitem__)
    assert sum(bars["x"]) == pytest.approx(100)
    assert fig["layout"]["xaxis"]["ticksuffix"] == "%"


def test_slice_plot_has_a_panel_per_parameter_on_the_right_kind_of_axis(client, rand):
    trials = client.trials("rand")
    done = _completed(trials)
    fig = figures.slice_plot(trials, _space(), metric="val_acc")
    _plain_json(fig)
    assert len(fig["data"]) == len(SPACE)
    for trace in fig["data"]:
        assert trace["y"] == [t.value for t in done]
        assert trace["marker"]["color"] == [t.number for t in done]
    x_trace = fig["data"][0]
    assert x_trace["x"] == [t.params["x"] for t in done]
    layout = fig["layout"]
    assert layout["xaxis2"]["type"] == "log" and layout["xaxis2"]["title"]["text"] == "lr"
    assert layout["xaxis4"]["type"] == "category"
    assert layout["xaxis4"]["categoryarray"] == ["adam", "sgd"]
    assert "yaxis4" in layout  # four panels wrap onto a second row


def test_contour_interpolates_over_two_parameters_and_shows_the_trials(client, rand):
    trials = client.trials("rand")
    done = _completed(trials)
    space = _space()
    fig = figures.contour(trials, space, metric="val_acc", x="x", y="lr")
    _plain_json(fig)
    assert [t["type"] for t in fig["data"]] == ["contour", "scatter"]
    grid, points = fig["data"]
    assert len(grid["z"]) == len(grid["y"]) and len(grid["z"][0]) == len(grid["x"])
    assert points["x"] == [t.params["x"] for t in done]
    assert points["y"] == pytest.approx([math.log10(t.params["lr"]) for t in done])
    assert fig["layout"]["yaxis"]["ticktext"] == ["0.0001", "0.001", "0.01", "0.1"]

    few = figures.contour(done[:3], space, metric="val_acc", x="x", y="opt")
    assert [t["type"] for t in few["data"]] == ["scatter"]
    assert few["data"][0]["marker"]["color"] == [t.value for t in done[:3]]
    assert few["layout"]["yaxis"]["ticktext"] == ["adam", "sgd"]
    with pytest.raises(ValueError, match="'depth' is not a parameter.*lr, n, opt, x"):
        figures.contour(trials, space, metric="val_acc", x="x", y="depth")


def test_compare_trials_marks_exactly_the_differing_params(client, asha):
    trials = client.trials("asha")
    first = next(t for t in trials if t.state == "completed")
    other = next(t for t in trials if t.state == "pruned" and t.number % 2 != first.number % 2)
    details = [client.trial("asha", first.number), client.trial("asha", other.number)]
    table = figures.compare_trials(details, _space())
    rows = {row["name"]: row for row in table["params"]}
    assert list(rows) == ["state", "value", "last_step", *SPACE]
    assert rows["state"]["values"] == ["completed", "pruned"] and rows["state"]["differs"]
    differing = {p for p in SPACE if first.params[p] != other.params[p]}
    assert {p for p in SPACE if rows[p]["differs"]} == differing
    assert rows["x"]["values"] == [first.params["x"], other.params["x"]]
    # only one of the two reported grad_norm; the objective comes first
    assert list(table["figures"]) == ["val_acc", "loss"]
    for metric, fig in table["figures"].items():
        assert [t["name"] for t in fig["data"]] == [f"trial {d.number}" for d in details]
        for trace, d in zip(fig["data"], details, strict=True):
            assert trace["x"] == [step for step, _ in asha[d.number]]
            assert trace["y"] == [m[metric] for _, m in asha[d.number]]

    same = figures.compare_trials([details[0], details[0]], _space(), objective="loss")
    assert not any(row["differs"] for row in same["params"])
    params = details[0].params
    retry = details[0].model_copy(update={"params": {**params, "n": params["n"] % 4 + 1}})
    one_off = figures.compare_trials([details[0], retry], _space())
    assert [row["name"] for row in one_off["params"] if row["differs"]] == ["n"]
    reported = set(asha[first.number][0][1])
    assert list(same["figures"]) == ["loss", *sorted(reported - {"loss"})]


def test_metric_curves_draw_each_reported_metric_objective_first(client, asha):
    detail = next(client.trial("asha", n) for n in asha if n % 2 == 0)
    number = detail.number
    curves = figures.metric_curves(detail, objective="val_acc")
    assert list(curves) == ["val_acc", "grad_norm", "loss"]
    completed = next(t for t in client.trials("asha") if t.state == "completed")
    guessed = figures.metric_curves(client.trial("asha", completed.number))
    assert next(iter(guessed)) == "val_acc"
    for metric, fig in curves.items():
        _plain_json(fig)
        (trace,) = fig["data"]
        assert trace["x"] == [step for step, _ in asha[number]]
        assert trace["y"] == [m[metric] for _, m in asha[number]]


def test_compare_studies_switches_between_trials_epochs_and_gpu_seconds(app, client, rand):
    client.create_study(_spec("gpu", resources={"gpus_per_trial": 1}))
    _run(client, "gpu", 3, epochs=2)
    db = app.state.db
    series = []
    for name in ("rand", "gpu"):
        trials, spent = client.trials(name), service.compute_spent(db, ref=name)
        points = figures.study_progress(trials, spent)
        finished = [t for t in trials if t.finished_at is not None]
        assert [p["trial"] for p in points] == list(range(1, len(finished) + 1))
        assert points[-1]["epochs"] == sum(spent[t.number][0] for t in finished)
        assert sorted(p["value"] for p in points if p["value"] is not None) == sorted(
            t.value for t in finished if t.state == "completed"
        )
        series.append({"name": name, "direction": "maximize", "points": points})
    rand_points, gpu_points = series[0]["points"], series[1]["points"]
    assert len(rand_points) == 10  # the running trial is not finished
    assert all(p["gpu_seconds"] is None for p in rand_points)
    assert all(p["gpu_seconds"] is not None for p in gpu_points)

    fig = figures.compare_studies(series)
    _plain_json(fig)
    assert [t["name"] for t in fig["data"]] == ["rand", "gpu"]
    (menu,) = fig["layout"]["updatemenus"]
    assert [b["label"] for b in menu["buttons"]] == ["trials", "epochs"]
    epochs = menu["buttons"][1]["args"]
    assert epochs[1] == {"xaxis.title.text": "epochs trained"}
    for xs, trace in zip(epochs[0]["x"], fig["data"], strict=True):
        assert len(xs) == len(trace["y"]) and xs == sorted(xs)
        assert all(b2 >= b1 for b1, b2 in zip(trace["y"], trace["y"][1:], strict=False))
    assert fig["data"][0]["y"][-1] == client.get_study("rand").best.value

    gpu_only = figures.compare_studies(series[1:])
    labels = [b["label"] for b in gpu_only["layout"]["updatemenus"][0]["buttons"]]
    assert labels == ["trials", "epochs", "GPU-seconds"]


def _synthetic(n: int, seed: int = 3) -> list[TrialPublic]:
    rng = random.Random(seed)
    states = ["completed"] * 8 + ["pruned", "failed"]
    trials = []
    for i in range(n):
        state = rng.choice(states)
        value = rng.gauss(0, 1) + i / n if state == "completed" else None
        trials.append(TrialPublic(number=i, state=state, params={"x": rng.random()}, value=value))
    return trials


def test_thinning_keeps_the_best_so_far_exact():
    trials = _synthetic(12_000)
    done = [t for t in trials if t.value is not None]
    fig = figures.optimization_history(trials, metric="loss", direction="minimize")
    markers, best = fig["data"]
    assert len(done) > 5000 and len(markers["x"]) == 5000
    assert markers["x"][0] == done[0].number and markers["x"][-1] == done[-1].number
    assert f"of {len(done)} trials" in fig["layout"]["annotations"][0]["text"]
    expected, running = [], math.inf
    for t in done:
        if t.value < running:
            running = t.value
            expected.append((t.number, t.value))
    expected.append((done[-1].number, running))
    assert list(zip(best["x"], best["y"], strict=True)) == expected


def test_empty_inputs_give_an_annotation_not_an_error():
    space = _space()
    unfinished = [TrialPublic(number=0, state="running", params={"x": 0.5})]
    empty = [
        figures.optimization_history([], metric="m", direction="maximize"),
        figures.optimization_history(unfinished, metric="m", direction="maximize"),
        figures.learning_curves({}, {}, metric="m", max_epochs=5, rungs={0: [1]}),
        figures.parallel_coordinates([], space, metric="m", direction="minimize"),
        figures.param_importance({}),
        figures.slice_plot(unfinished, space, metric="m"),
        figures.contour([], space, metric="m", x="x", y="n"),
        figures.compare_studies([]),
        figures.compare_studies([{"name": "a", "direction": "maximize", "points": []}]),
    ]
    for fig in empty:
        _plain_json(fig)
        assert fig["data"] == []
        assert fig["layout"]["annotations"][0]["text"]
    assert "no completed trials yet" in empty[0]["layout"]["annotations"][0]["text"]
    assert figures.compare_trials([], space) == {
        "params": [
            {"name": n, "values": [], "differs": False}
            for n in ["state", "value", "last_step", *space]
        ],
        "figures": {},
    }
    now = datetime.now(timezone.utc)
    bare = TrialDetail(number=0, state="running", params={}, reports=[], runs=[])
    assert figures.metric_curves(bare) == {}
    assert figures.study_progress([], {}) == []
    assert figures.study_progress(unfinished, {0: (3, None)}) == []
    late = TrialPublic(number=1, state="pruned", params={}, last_step=2, finished_at=now)
    early = late.model_copy(
        update={
            "number": 2,
            "state": "completed",
            "value": 0.5,
            "finished_at": now - timedelta(seconds=1),
        }
    )
    assert figures.study_progress([late, early], {1: (2, 4.0), 2: (5, 1.5)}) == [
        {"trial": 1, "value": 0.5, "epochs": 5, "gpu_seconds": 1.5},
        {"trial": 2, "value": None, "epochs": 7, "gpu_seconds": 5.5},
    ]
