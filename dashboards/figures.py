"""Pure figure builders of the web dashboard: plain data in, a Plotly figure dict out.

No database and no HTTP here: :mod:`dashboards.views` reads through :mod:`hpo.service`
(which aggregates on the server) and hands the result to a builder, whose dict goes to the
browser as is, for ``Plotly.newPlot(el, fig.data, fig.layout)``. Builders that may receive a
huge study cap what they draw (``max_points``, ``max_lines``) and say so in the figure. With
nothing to draw a builder returns a figure whose annotation says so, never an error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from hpo.schemas import TrialPublic
from hpo.spec import CategoricalParam

from . import _style as s
from ._compare import compare_studies, compare_trials, metric_curves, study_progress
from ._style import ParamSpec

__all__ = [
    "compare_studies",
    "compare_trials",
    "contour",
    "learning_curves",
    "metric_curves",
    "optimization_history",
    "param_importance",
    "parallel_coordinates",
    "slice_plot",
    "study_progress",
]

Figure = dict[str, Any]
NO_TRIALS = "no completed trials yet"
HOVER = "%{text}<extra></extra>"


def _completed(trials: Sequence[TrialPublic], *params: str) -> list[TrialPublic]:
    done = [t for t in trials if t.state == "completed" and t.value is not None]
    done = [t for t in done if all(p in t.params for p in params)]
    return sorted(done, key=lambda t: t.number)


def _hovers(trials: Sequence[TrialPublic], metric: str) -> list[str]:
    return [s.hover_text(t.number, t.params, f"{metric} = {s.fmt(t.value)}") for t in trials]


def _value(trial: TrialPublic) -> float:
    return trial.value if trial.value is not None else math.nan


def _capped(
    done: list[TrialPublic], direction: str, limit: int
) -> tuple[list[TrialPublic], str | None]:
    """At most ``limit`` trials: the best half and an even sample of the rest, with a note
    that says so (None when all are kept)."""
    if len(done) <= limit:
        return done, None
    kept = s.keep_best_and_sample(done, _value, direction == "maximize", limit)
    best, others = limit // 2, len(done) - limit // 2
    return kept, f"showing the best {best} trials and {limit - best} of the other {others}"


def optimization_history(
    trials: list[TrialPublic], *, metric: str, direction: str, max_points: int = 5000
) -> Figure:
    """The objective of every completed trial by trial number, and the best so far.

    Args:
        trials: the study's trials in any state and order; only completed ones are drawn.
        metric: the objective's name, the y-axis title.
        direction: ``maximize`` or ``minimize``; decides what "best" means.
        max_points: at most this many trial markers, thinned evenly; the best-so-far line
            stays exact (a step line through the improvements only).

    Returns:
        A figure with two traces, ``trials`` (markers) and ``best so far`` (step line).
    """
    done = _completed(trials)
    if not done:
        return s.empty_figure(NO_TRIALS)
    shown = [done[i] for i in s.even_indices(len(done), max_points)]
    picks = s.improvements([_value(t) for t in done], direction == "maximize")
    best_x, best_y = [done[i].number for i in picks], [done[i].value for i in picks]
    best_text = [f"best: {h}" for h in _hovers([done[i] for i in picks], metric)]
    if picks[-1] != len(done) - 1:  # carry the best on to the last trial
        best_x, best_y = best_x + [done[-1].number], best_y + [best_y[-1]]
        best_text.append(best_text[-1])
    fig = go.Figure(layout=s.base_layout())
    fig.add_scatter(
        name="trials",
        x=[t.number for t in shown],
        y=[t.value for t in shown],
        mode="markers",
        marker={"color": s.state_color("completed"), "size": 6, "opacity": 0.7},
        text=_hovers(shown, metric),
        hovertemplate=HOVER,
    )
    fig.add_scatter(
        name="best so far",
        x=best_x,
        y=best_y,
        mode="lines",
        line={"color": s.BEST_COLOR, "width": 2, "shape": "hv"},
        text=best_text,
        hovertemplate=HOVER,
    )
    fig.update_xaxes(title_text="trial")
    fig.update_yaxes(title_text=s.esc(metric))
    if len(shown) < len(done):
        s.note(fig, f"showing {len(shown)} of {len(done)} trials, evenly spread")
    return s.to_dict(fig)


def _curve_trace(
    number: int, points: list[tuple[int, float]], trial: TrialPublic | None, metric: str
) -> go.Scatter:
    state = trial.state if trial else "unknown"
    hover = s.hover_text(number, trial.params if trial else {}, f"state = {state}")
    pruned = state == "pruned"
    return go.Scatter(
        name=state,
        legendgroup=state,
        x=[step for step, _ in points],
        y=[value for _, value in points],
        mode="lines+markers" if pruned else "lines",
        line={"color": s.state_color(state), "width": 1.5},
        # only the last point of a pruned trial gets a marker: where it was stopped
        marker={"symbol": "x", "size": [0] * (len(points) - 1) + [10]} if pruned else None,
        opacity=0.8,
        **s.hover_with(hover, metric),
    )


def learning_curves(
    curves: dict[int, list[tuple[int, float]]],
    trials: dict[int, TrialPublic],
    *,
    metric: str,
    max_epochs: int,
    rungs: dict[int, list[int]] | None = None,
) -> Figure:
    """One line per trial of ``metric`` by step, coloured by the trial's state.

    A pruned trial's line ends with an ``x`` at its last report; the epochs where early
    stopping decides, when given, are dotted vertical lines (with Hyperband, each says which
    brackets decide there). One legend entry per state.

    Args:
        curves: per trial number, ``(step, value)`` pairs (``hpo.service.objective_curves``).
        trials: the same trials by number, for their state and parameters.
        metric: the metric's name, the y-axis title.
        max_epochs: the study's last epoch; the x-axis reaches it.
        rungs: per bracket, the epochs at which it decides (``dashboards.views.rungs``), or
            None.
    """
    drawn = {n: pts for n, pts in sorted(curves.items()) if pts}
    if not drawn:
        return s.empty_figure("no reports yet")
    fig = go.Figure(layout=s.base_layout())
    seen: set[str] = set()
    for number, points in drawn.items():
        trace = _curve_trace(number, points, trials.get(number), metric)
        trace.showlegend = trace.name not in seen
        seen.add(str(trace.name))
        fig.add_trace(trace)
    deciding: dict[int, list[int]] = {}
    for bracket, steps in (rungs or {}).items():
        for step in steps:
            deciding.setdefault(step, []).append(bracket)
    for step, brackets in sorted(deciding.items()):
        label = (
            f"bracket{'s' if len(brackets) > 1 else ''} {','.join(map(str, brackets))}"
            if len(rungs or {}) > 1
            else ""
        )
        fig.add_vline(
            x=step,
            line={"dash": "dot", "color": "#7f7f7f", "width": 1},
            annotation_text=label,
            annotation_font_size=10,
        )
    first = min(pts[0][0] for pts in drawn.values())
    last = max(max_epochs, *(pts[-1][0] for pts in drawn.values()))
    pad = 0.02 * max(last - first, 1)
    fig.update_xaxes(title_text="epoch", range=[first - pad, last + pad])
    fig.update_yaxes(title_text=s.esc(metric))
    return s.to_dict(fig)


def parallel_coordinates(
    trials: list[TrialPublic],
    space: dict[str, ParamSpec],
    *,
    metric: str,
    direction: str,
    max_lines: int = 1000,
) -> Figure:
    """Completed trials as lines across one axis per parameter, then the objective.

    Categorical parameters sit on integer ticks labelled with their choices, log-scale ones
    on a log10 axis labelled with the values. The objective is the last axis and the line
    colour, with the bright end of the scale at the best value in either direction.

    Args:
        trials: the study's trials; only completed ones are drawn.
        space: the study's search space (``StudySpec.space``).
        metric: the objective's name.
        direction: ``maximize`` or ``minimize``.
        max_lines: above this many trials, the best ``max_lines // 2`` and an even sample of
            the others are drawn, and an annotation says so.
    """
    done = _completed(trials, *space)
    if not done:
        return s.empty_figure(NO_TRIALS)
    shown, thinned = _capped(done, direction, max_lines)
    maximize = direction == "maximize"
    # Plotly reads markup in a dimension's label, not in its ticks (d3 writes them as text)
    dims = [
        {
            "label": s.esc(f"{name} (log)" if s.is_log(param) else name),
            "values": s.encode(param, (t.params[name] for t in shown)),
            **s.numeric_axis(param),
        }
        for name, param in space.items()
    ]
    values = [t.value for t in shown]
    dims.append({"label": s.esc(metric), "values": values})
    line = {"color": values, "colorscale": s.COLORSCALE, "reversescale": not maximize}
    line.update(showscale=True, colorbar={"title": {"text": s.esc(metric)}})
    fig = go.Figure(go.Parcoords(dimensions=dims, line=line), layout=s.base_layout())
    fig.update_layout(margin={"l": 60, "r": 60, "t": 50, "b": 30})
    if thinned:
        s.note(fig, thinned)
    return s.to_dict(fig)


def param_importance(importances: dict[str, float]) -> Figure:
    """Horizontal bars of each parameter's share of the importance, most important on top.

    Args:
        importances: per parameter, its importance (``hpo.service.param_importances``);
            drawn as a percentage of their total.
    """
    total = sum(max(v, 0.0) for v in importances.values())
    if total <= 0:
        return s.empty_figure("not enough completed trials to rank the parameters")
    ranked = sorted(importances.items(), key=lambda kv: kv[1])  # plotly draws bars bottom-up
    percents = [100 * max(v, 0.0) / total for _, v in ranked]
    fig = go.Figure(layout=s.base_layout(showlegend=False))
    fig.add_bar(
        y=[s.esc(name) for name, _ in ranked],
        x=percents,
        orientation="h",
        marker={"color": s.state_color("completed")},
        text=[f"{p:.1f}%" for p in percents],
        textposition="auto",
        hovertemplate="%{y}: %{x:.1f}%<extra></extra>",
    )
    fig.update_xaxes(title_text="importance", ticksuffix="%", rangemode="tozero")
    fig.update_yaxes(automargin=True)
    return s.to_dict(fig)


def slice_plot(
    trials: list[TrialPublic],
    space: dict[str, ParamSpec],
    *,
    metric: str,
    direction: str = "maximize",
    max_points: int = 2000,
) -> Figure:
    """The objective against each parameter, one panel per parameter, three to a row.

    Points are coloured by trial number (later trials darker); log-scale parameters get a
    log axis, categorical ones a category axis in the order of their choices.

    Args:
        trials: the study's trials; only completed ones are drawn.
        space: the study's search space.
        metric: the objective's name, the y-axis title.
        direction: ``maximize`` or ``minimize``; which trials are kept when thinning.
        max_points: above this many trials, the best half and an even sample of the rest
            are drawn, and an annotation says so.
    """
    done, thinned = _capped(_completed(trials), direction, max_points)
    if not done or not space:
        return s.empty_figure(NO_TRIALS)
    cols = min(len(space), 3)
    rows = math.ceil(len(space) / cols)
    spacing = min(0.15, 0.9 / max(rows - 1, 1))
    fig = make_subplots(
        rows, cols, shared_yaxes=True, horizontal_spacing=0.04, vertical_spacing=spacing
    )
    fig.update_layout(s.base_layout(showlegend=False))
    numbers = [t.number for t in done]
    for i, (name, param) in enumerate(space.items()):
        row, col = i // cols + 1, i % cols + 1
        raw = [t.params.get(name) for t in done]
        marker = {"color": numbers, "colorscale": "Blues", "size": 7, "showscale": i == 0}
        marker.update(colorbar={"title": {"text": "trial"}}, line={"width": 0.5, "color": "#444"})
        fig.add_scatter(
            x=[s.esc(v) for v in raw] if isinstance(param, CategoricalParam) else raw,
            y=[t.value for t in done],
            mode="markers",
            marker=marker,
            # one line per panel's own parameter: the full set, repeated per panel, tripled
            # the size of a 10,000-trial study's slice view
            text=[
                f"<b>trial {t.number}</b><br>{s.esc(f'{metric} = {s.fmt(t.value)}')}<br>"
                f"{s.esc(f'{name} = {s.fmt(t.params.get(name))}')}"
                for t in done
            ],
            hovertemplate=HOVER,
            row=row,
            col=col,
        )
        axis: dict[str, Any] = {"title_text": s.esc(name)}
        if isinstance(param, CategoricalParam):
            order = [s.esc(c) for c in param.choices]
            axis.update(type="category", categoryorder="array", categoryarray=order)
        elif param.log:
            axis["type"] = "log"
        fig.update_xaxes(axis, row=row, col=col)
    fig.update_yaxes(title_text=s.esc(metric), col=1)
    if thinned:
        s.note(fig, thinned)
    return s.to_dict(fig)


def _contour_axis(param: ParamSpec, name: str) -> dict[str, Any]:
    axis: dict[str, Any] = {"title_text": s.esc(f"{name} (log)" if s.is_log(param) else name)}
    ticks = s.numeric_axis(param)
    if "tickvals" in ticks:
        ticktext = [s.esc(t) for t in ticks["ticktext"]]
        axis.update(tickmode="array", tickvals=ticks["tickvals"], ticktext=ticktext)
    return axis


def _check_axes(space: dict[str, ParamSpec], x: str, y: str) -> None:
    for axis_name, pname in (("x", x), ("y", y)):
        if pname not in space:
            shown = repr(pname) if len(pname) <= 64 else repr(pname[:61]) + "..."
            raise ValueError(
                f"{axis_name}={shown} is not a parameter of this study; "
                f"choose one of {', '.join(sorted(space))}"
            )
    if x == y and len(space) > 1:
        raise ValueError(f"x and y are both {x!r}; choose two different parameters")


def contour(
    trials: list[TrialPublic],
    space: dict[str, ParamSpec],
    *,
    metric: str,
    x: str,
    y: str,
    direction: str = "maximize",
    max_points: int = 2000,
) -> Figure:
    """The objective over two parameters: an interpolated contour with the trials on top.

    Log-scale parameters are interpolated and drawn in log10 (the ticks show the values),
    categorical ones on integer ticks labelled with their choices. With fewer than four
    distinct points (or all on one line) only the trials are drawn, coloured by value.

    Args:
        trials: the study's trials; only completed ones are drawn.
        space: the study's search space.
        metric: the objective's name, the colour bar's title.
        x: the parameter on the x-axis.
        y: the parameter on the y-axis.
        direction: ``maximize`` or ``minimize``; which trials are kept when thinning.
        max_points: above this many trials, the best half and an even sample of the rest
            are interpolated and drawn, and an annotation says so.

    Raises:
        ValueError: ``x`` or ``y`` is not a parameter of ``space``, or both are the same
            (for a study of one parameter, a blank figure says why there is no contour).
    """
    _check_axes(space, x, y)
    if len(space) < 2:
        return s.empty_figure("a contour needs two parameters, and this study has one")
    done, thinned = _capped(_completed(trials, x, y), direction, max_points)
    xs = s.encode(space[x], (t.params[x] for t in done))
    ys = s.encode(space[y], (t.params[y] for t in done))
    keep = [i for i in range(len(done)) if xs[i] is not None and ys[i] is not None]
    if not keep:
        return s.empty_figure(NO_TRIALS)
    px, py = [float(xs[i] or 0.0) for i in keep], [float(ys[i] or 0.0) for i in keep]
    pz = [_value(done[i]) for i in keep]
    grid = s.interpolate(px, py, pz)
    colorbar = {"title": {"text": s.esc(metric)}}
    fig = go.Figure(layout=s.base_layout(showlegend=False))
    marker: dict[str, Any] = {"size": 8, "line": {"width": 1, "color": "white"}, "color": "#222"}
    if grid is None:
        marker.update(color=pz, colorscale=s.COLORSCALE, showscale=True, colorbar=colorbar)
    else:
        fig.add_contour(
            x=grid[0],
            y=grid[1],
            z=grid[2],
            colorscale=s.COLORSCALE,
            colorbar=colorbar,
            connectgaps=False,
            hoverinfo="skip",
            line={"width": 0.5},
        )
    points = [done[i] for i in keep]
    fig.add_scatter(
        x=px, y=py, mode="markers", marker=marker, text=_hovers(points, metric), hovertemplate=HOVER
    )
    fig.update_xaxes(_contour_axis(space[x], x))
    fig.update_yaxes(_contour_axis(space[y], y))
    if thinned:
        s.note(fig, thinned)
    return s.to_dict(fig)
