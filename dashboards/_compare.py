"""Comparison builders: trials side by side, a trial's own metrics, studies against compute."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from hpo.schemas import RunPublic, TrialDetail, TrialPublic
from hpo.vocabulary import TrialState

from . import _style as s
from ._style import ParamSpec

Figure = dict[str, Any]
NO_TRIALS = "no completed trials yet"
HOVER = "%{text}<extra></extra>"


def _series(detail: TrialDetail, metric: str) -> tuple[list[int], list[float]]:
    points = [(r.step, r.metrics[metric]) for r in detail.reports if metric in r.metrics]
    return [step for step, _ in points], [value for _, value in points]


def _metric_names(detail: TrialDetail) -> set[str]:
    return {name for r in detail.reports for name in r.metrics}


def _objective_first(names: set[str], objective: str | None) -> list[str]:
    return sorted(names, key=lambda m: (m != objective, m))


def _guess_objective(details: list[TrialDetail]) -> str | None:
    """The metric whose final value is the trial's value, in the first trial that tells."""
    for d in details:
        hits = [m for m, v in (d.final_metrics or {}).items() if v == d.value]
        if d.value is not None and len(hits) == 1:
            return hits[0]
    return None


def _row(name: str, values: list[Any]) -> dict[str, Any]:
    return {"name": name, "values": values, "differs": len({repr(v) for v in values}) > 1}


def _curves_figure(metric: str, traces: list[go.Scatter], **layout: Any) -> Figure:
    fig = go.Figure(data=traces, layout=s.base_layout(**layout))
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text=s.esc(metric))
    return s.to_dict(fig)


def _overlay(details: list[TrialDetail], metric: str) -> Figure:
    traces = []
    for i, d in enumerate(details):
        steps, values = _series(d, metric)
        hover = s.hover_text(d.number, d.params, f"state = {d.state}")
        traces.append(
            go.Scatter(
                name=f"trial {d.number}",
                x=steps,
                y=values,
                mode="lines+markers",
                line={"color": s.series_color(i)},
                marker={"size": 5},
                **s.hover_with(hover, metric),
            )
        )
    return _curves_figure(metric, traces)


def compare_trials(
    details: list[TrialDetail], space: dict[str, ParamSpec], *, objective: str | None = None
) -> dict[str, Any]:
    """Trials side by side: a table of what differs, and their curves overlaid per metric.

    Args:
        details: the trials to compare, in the order their columns should appear.
        space: the study's search space; one table row per parameter, in its order.
        objective: the objective's name, whose figure comes first; when not given, guessed
            from a trial whose final metrics hold its value.

    Returns:
        ``{"params": rows, "figures": {metric: figure}}``. The rows are ``state``, ``value``
        and ``last_step``, then one per parameter, each ``{"name", "values", "differs"}``
        (one value per trial). ``figures`` holds one figure per metric that every trial
        reported (one trace per trial, x = step): the objective first, the others by name.
    """
    rows = [_row(k, [getattr(d, k) for d in details]) for k in ("state", "value", "last_step")]
    rows.extend(_row(p, [d.params.get(p) for d in details]) for p in space)
    common = _metric_names(details[0]) if details else set()
    for d in details[1:]:
        common &= _metric_names(d)
    order = _objective_first(common, objective or _guess_objective(details))
    return {"params": rows, "figures": {m: _overlay(details, m) for m in order}}


def metric_curves(detail: TrialDetail, *, objective: str | None = None) -> dict[str, Figure]:
    """One small figure per metric the trial reported, x = step, for the trial's page.

    A retried trial shows every attempt's curve: the earlier ones dashed and grey, named by
    attempt and by how they ended, the latest in the colour of the trial's state.

    Args:
        detail: the trial, with its reports and its attempts' reports.
        objective: the objective's name, whose figure comes first; when not given, guessed
            from the trial's final metrics (a completed trial's tell).

    Returns:
        Per metric, the objective first and the others by name; an empty dict when it has
        reported nothing yet.
    """
    attempts = [run for run in detail.runs if run.reports] or []
    names = _metric_names(detail) | {n for run in attempts for r in run.reports for n in r.metrics}
    figures: dict[str, Figure] = {}
    for metric in _objective_first(names, objective or _guess_objective([detail])):
        traces = [_attempt_trace(run, metric) for run in attempts[:-1]]
        steps, values = _series(detail, metric)
        name = f"attempt {detail.runs[-1].attempt}" if len(detail.runs) > 1 else s.esc(metric)
        traces.append(
            go.Scatter(
                name=name,
                x=steps,
                y=values,
                mode="lines+markers",
                line={"color": s.state_color(detail.state)},
                marker={"size": 5},
                **s.hover_with(name, metric),
            )
        )
        margin = {"l": 50, "r": 10, "t": 10, "b": 40}
        figures[metric] = _curves_figure(metric, traces, showlegend=len(traces) > 1, margin=margin)
    return figures


def _attempt_trace(run: RunPublic, metric: str) -> go.Scatter:
    points = [(r.step, r.metrics[metric]) for r in run.reports if metric in r.metrics]
    name = f"attempt {run.attempt} ({run.failure_kind or run.state})"
    return go.Scatter(
        name=name,
        x=[step for step, _ in points],
        y=[value for _, value in points],
        mode="lines+markers",
        line={"color": s.state_color(TrialState.CANCELLED), "dash": "dash"},
        marker={"size": 4},
        **s.hover_with(name, metric),
    )


def study_progress(
    trials: list[TrialPublic], spent: dict[int, tuple[int, float | None]]
) -> list[dict[str, Any]]:
    """A study's finished trials in finishing order, with the compute spent up to each.

    Args:
        trials: the study's trials; those not finished yet are skipped.
        spent: per trial number, epochs and GPU-seconds (``hpo.service.compute_spent``).

    Returns:
        The ``points`` of a :func:`compare_studies` series: ``trial`` (1-based count of
        finished trials), ``value`` (None unless completed), cumulative ``epochs`` and
        ``gpu_seconds`` (None from the first trial without a GPU measurement on).
    """
    finished = [t for t in trials if t.finished_at is not None]
    finished.sort(key=lambda t: (t.finished_at, t.number))
    points: list[dict[str, Any]] = []
    epochs, seconds, measured = 0, 0.0, True
    for i, t in enumerate(finished, start=1):
        trial_epochs, trial_seconds = spent.get(t.number, (t.last_step or 0, None))
        epochs += trial_epochs
        measured = measured and trial_seconds is not None
        seconds += trial_seconds or 0.0
        value = t.value if t.state == "completed" else None
        gpu = seconds if measured else None
        points.append({"trial": i, "value": value, "epochs": epochs, "gpu_seconds": gpu})
    return points


#: x-axes of compare_studies: button label, point key, axis title
_X_AXES = (
    ("trials", "trial", "trials finished"),
    ("epochs", "epochs", "epochs trained"),
    ("GPU-seconds", "gpu_seconds", "GPU-seconds"),
)


def _best_points(points: list[dict[str, Any]], maximize: bool) -> list[tuple[dict, float]]:
    """The points where a study's best changes, then its last point, each with the best."""
    valued = [(p, p["value"]) for p in points if p.get("value") is not None]
    picks = [valued[i] for i in s.improvements([v for _, v in valued], maximize)]
    if picks and points[-1] is not picks[-1][0]:
        picks.append((points[-1], picks[-1][1]))
    return picks


def _x_buttons(bests: list[list[tuple[dict, float]]], gpu: bool) -> list[dict[str, Any]]:
    return [
        {
            "label": label,
            "method": "update",  # restyle every line's x, relayout the axis title
            "args": [
                {"x": [[p[key] for p, _ in best] for best in bests]},
                {"xaxis.title.text": title},
            ],
        }
        for label, key, title in _X_AXES
        if gpu or key != "gpu_seconds"
    ]


def compare_studies(series: list[dict[str, Any]]) -> Figure:
    """The best-so-far of several studies on one chart, over trials, epochs or GPU-seconds.

    Buttons above the chart switch the x-axis; ``GPU-seconds`` is offered only when every
    study measured them.

    Args:
        series: one item per study, ``{"name", "direction", "points"}``, the points as
            :func:`study_progress` makes them. A study without a completed trial yet gets
            an empty line (and its legend entry).
    """
    bests = [_best_points(item["points"], item["direction"] == "maximize") for item in series]
    if not any(bests):
        return s.empty_figure(NO_TRIALS)
    gpu = all(p.get("gpu_seconds") is not None for item in series for p in item["points"])
    fig = go.Figure(layout=s.base_layout())
    for i, (item, best) in enumerate(zip(series, bests, strict=True)):
        fig.add_scatter(
            name=s.esc(item["name"]),
            x=[p["trial"] for p, _ in best],
            y=[v for _, v in best],
            mode="lines+markers",
            line={"shape": "hv", "color": s.series_color(i)},
            marker={"size": 4},
            hovertemplate=f"<b>{s.esc(item['name'])}</b> ({item['direction']})<br>"
            "x = %{x:.4g}<br>best = %{y:.4g}<extra></extra>",
        )
    menu: dict[str, Any] = {
        "type": "buttons",
        "direction": "right",
        "buttons": _x_buttons(bests, gpu),
    }
    menu.update(active=0, showactive=True, x=1, xanchor="right", y=1.02, yanchor="bottom")
    fig.update_layout(updatemenus=[menu])
    fig.update_xaxes(title_text=_X_AXES[0][2])
    fig.update_yaxes(title_text="best so far")
    return s.to_dict(fig)
