"""The dashboard's shared look, and the small helpers every figure builder uses.

Every figure leaves here through :func:`to_dict`, so all of them share one template, margin
and font, and every array is a plain JSON list (plotly 6+ would send numpy arrays base64
encoded, which only recent plotly.js reads and which tests cannot compare).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import plotly.graph_objects as go

from hpo.spec import CategoricalParam, FloatParam, IntParam

ParamSpec = FloatParam | IntParam | CategoricalParam

#: One colour per trial state, the same in every view.
STATE_COLORS: dict[str, str] = {
    "completed": "#1f77b4",
    "pruned": "#ff7f0e",
    "failed": "#d62728",
    "running": "#2ca02c",
    "cancelled": "#7f7f7f",
    "pending": "#bcbd22",
}
UNKNOWN_COLOR = "#9467bd"
BEST_COLOR = "#d62728"
#: Colours for things that are not trial states (studies, trials side by side).
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
)
COLORSCALE = "Viridis"
TEMPLATE = "plotly_white"
MARGIN = {"l": 60, "r": 20, "t": 30, "b": 50}


def state_color(state: str) -> str:
    return STATE_COLORS.get(state, UNKNOWN_COLOR)


def series_color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def base_layout(**overrides: Any) -> dict[str, Any]:
    """The layout every figure starts from: no title (the page has headings), tight margins."""
    layout: dict[str, Any] = {
        "template": TEMPLATE,
        "autosize": True,
        "margin": dict(MARGIN),
        "hovermode": "closest",
        "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
    }
    layout.update(overrides)
    return layout


def to_dict(fig: go.Figure) -> dict[str, Any]:
    """The figure as a JSON-ready dict for ``Plotly.newPlot(el, fig.data, fig.layout)``."""
    result: dict[str, Any] = json.loads(fig.to_json())
    return result


def empty_figure(message: str) -> dict[str, Any]:
    """A blank figure that says why it is blank, instead of an error."""
    fig = go.Figure(layout=base_layout())
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.add_annotation(
        text=message,
        xref="paper",
        yref="paper",
        x=0.5,
        y=0.5,
        showarrow=False,
        font={"size": 14, "color": "#7f7f7f"},
    )
    return to_dict(fig)


def note(fig: go.Figure, text: str) -> None:
    """A small remark in the top right corner (e.g. that points were thinned)."""
    fig.add_annotation(
        text=text,
        xref="paper",
        yref="paper",
        x=1,
        y=1,
        xanchor="right",
        yanchor="bottom",
        showarrow=False,
        font={"size": 11, "color": "#7f7f7f"},
    )


def esc(text: Any) -> str:
    """User text as Plotly must show it: as written, never as markup.

    Plotly reads a subset of HTML in every label, title, tick, legend entry and hover (``<a
    href>`` becomes a live link, ``<br>`` a new line) and decodes ``&amp;``, ``&lt;`` and
    ``&gt;`` (and numeric entities); escaping those three characters makes it draw the text
    literally. Every name, choice and metric goes into a figure through here.
    """
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def hover_with(hover: str, metric: str) -> dict[str, Any]:
    """``hovertemplate`` and ``meta`` of a line trace: ``hover`` (markup already escaped),
    then step and value. The user's text travels in ``meta``, not in the template itself,
    where a name holding ``%{y}`` would be read as a placeholder."""
    return {
        "meta": [hover, esc(metric)],
        "hovertemplate": "%{meta[0]}<br>step = %{x}<br>%{meta[1]} = %{y:.4g}<extra></extra>",
    }


def fmt(value: Any) -> str:
    """A value as a person reads it in a hover: floats to 4 significant digits."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def hover_text(number: int, params: dict[str, Any], *extra: str) -> str:
    """``trial 12``, the extra lines, then one ``name = value`` line per parameter, as
    Plotly markup: the extra lines and the parameters are plain text, escaped here."""
    lines = [f"<b>trial {number}</b>", *(esc(line) for line in extra)]
    lines.extend(esc(f"{name} = {fmt(value)}") for name, value in params.items())
    return "<br>".join(lines)


def even_indices(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)``, first and last included."""
    if k >= n:
        return list(range(n))
    if k <= 1:
        return [0][:k]
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def improvements(values: Sequence[float], maximize: bool) -> list[int]:
    """Indices where the running best changes (the first value always counts)."""
    found: list[int] = []
    best = -math.inf if maximize else math.inf
    for i, value in enumerate(values):
        if (value > best) if maximize else (value < best):
            best = value
            found.append(i)
    return found


def is_log(param: ParamSpec) -> bool:
    return isinstance(param, (FloatParam, IntParam)) and param.log


def choice_index(param: CategoricalParam, value: Any) -> int | None:
    """The position of ``value`` among the choices (``1`` and ``True`` kept apart)."""
    for i, choice in enumerate(param.choices):
        if type(choice) is type(value) and choice == value:
            return i
    for i, choice in enumerate(param.choices):  # JSON may turn 2.0 into 2
        if choice == value:
            return i
    return None


def log_ticks(low: float, high: float) -> tuple[list[float], list[str]]:
    """Tick positions (log10) and labels for a log-scale range: whole decades, or the ends."""
    lo, hi = math.log10(low), math.log10(high)
    decades = [float(d) for d in range(math.ceil(lo - 1e-9), math.floor(hi + 1e-9) + 1)]
    ticks = decades if len(decades) >= 2 else [lo, hi]
    return ticks, [f"{10**t:.3g}" for t in ticks]


def encode(param: ParamSpec, values: Iterable[Any]) -> list[float | None]:
    """Values on the axis a numeric view draws them on: choice index, log10, or as is."""
    out: list[float | None] = []
    for value in values:
        if value is None:
            out.append(None)
        elif isinstance(param, CategoricalParam):
            out.append(choice_index(param, value))
        elif param.log:
            out.append(math.log10(value) if value > 0 else None)
        else:
            out.append(float(value))
    return out


def numeric_axis(param: ParamSpec) -> dict[str, Any]:
    """``range``, ``tickvals`` and ``ticktext`` for :func:`encode`'d values of ``param``."""
    if isinstance(param, CategoricalParam):
        n = len(param.choices)
        return {
            "range": [0, n - 1] if n > 1 else [-0.5, 0.5],
            "tickvals": list(range(n)),
            # as written: escape them where Plotly reads markup (not in parcoords' ticks)
            "ticktext": [str(c) for c in param.choices],
        }
    if param.log:
        tickvals, ticktext = log_ticks(param.low, param.high)
        return {
            "range": [math.log10(param.low), math.log10(param.high)],
            "tickvals": tickvals,
            "ticktext": ticktext,
        }
    return {"range": [param.low, param.high]}


def keep_best_and_sample(
    items: Sequence[Any], key: Callable[[Any], float], maximize: bool, limit: int
) -> list[Any]:
    """The best ``limit // 2`` items and an even sample of the rest, ``limit`` in all,
    in their original order."""
    order = sorted(range(len(items)), key=lambda i: key(items[i]), reverse=maximize)
    best = order[: limit // 2]
    rest = sorted(order[limit // 2 :])
    sample = [rest[i] for i in even_indices(len(rest), limit - len(best))]
    return [items[i] for i in sorted(best + sample)]


def interpolate(
    xs: list[float], ys: list[float], zs: list[float], size: int = 60
) -> tuple[list[float], list[float], list[list[float | None]]] | None:
    """``zs`` linearly interpolated on a ``size`` x ``size`` grid (NaN outside the points'
    hull, which plotly leaves blank), or None when there are too few distinct points."""
    import numpy as np
    from scipy.interpolate import griddata
    from scipy.spatial import QhullError

    if len(set(zip(xs, ys, strict=True))) < 4 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return None
    gx, gy = np.linspace(min(xs), max(xs), size), np.linspace(min(ys), max(ys), size)
    try:
        grid = griddata((np.array(xs), np.array(ys)), np.array(zs), tuple(np.meshgrid(gx, gy)))
    except QhullError:  # every point on one line: nothing to interpolate over
        return None
    return gx.tolist(), gy.tolist(), grid.tolist()
