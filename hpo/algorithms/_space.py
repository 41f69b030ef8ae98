"""Search-space translation to Optuna distributions."""

from __future__ import annotations

import math
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from ..spec import MAX_GRID_POINTS, CategoricalParam, FloatParam, IntParam

Space = dict[str, FloatParam | IntParam | CategoricalParam]


def distributions(space: Space, *, grid: bool = False) -> dict[str, BaseDistribution]:
    """Optuna distributions for ``space``; with ``grid`` every parameter becomes its value list."""
    if grid:
        return {
            name: CategoricalDistribution(values) for name, values in grid_points(space).items()
        }
    out: dict[str, BaseDistribution] = {}
    for name, param in space.items():
        if isinstance(param, FloatParam):
            out[name] = FloatDistribution(param.low, param.high, log=param.log, step=param.step)
        elif isinstance(param, IntParam):
            out[name] = IntDistribution(param.low, param.high, log=param.log, step=param.step)
        else:
            out[name] = CategoricalDistribution(param.choices)
    return out


def contains(dist: BaseDistribution, raw: Any) -> bool:
    """Whether the value ``raw`` (as a trial holds it) lies in ``dist``: one of the choices (by
    type too: a choice of 1 does not hold True, though they compare equal in Python), or a
    number inside the range and on its step. Written on the distributions' public fields, as
    Optuna's own check is private."""
    if isinstance(dist, CategoricalDistribution):
        return any(c == raw and type(c) is type(raw) for c in dist.choices)
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
        return False
    if isinstance(dist, IntDistribution):
        if raw != int(raw):
            return False
        return dist.low <= raw <= dist.high and (int(raw) - dist.low) % dist.step == 0
    if isinstance(dist, FloatDistribution):
        if not dist.low <= raw <= dist.high:
            return False
        if dist.step is None:
            return True
        k = (raw - dist.low) / dist.step
        return abs(k - round(k)) < 1.0e-8
    return False


def grid_points(space: Space) -> dict[str, list[Any]]:
    """The value list of every parameter; raises ValueError for a continuous one, or for a grid
    over ``MAX_GRID_POINTS`` (the spec refuses those, so only a hand-built space gets here)."""
    size = grid_size(space)
    if size > MAX_GRID_POINTS:
        raise ValueError(f"a grid of {size:,} points is over the limit of {MAX_GRID_POINTS:,}")
    points: dict[str, list[Any]] = {}
    for name, param in space.items():
        values = param.grid_values()
        if values is None:
            raise ValueError(f"grid search needs a finite set of values for {name!r}")
        points[name] = list(values)
    return points


def grid_size(space: Space) -> int:
    """The number of points of the grid over ``space``, computed without listing them."""
    counts = []
    for name, param in space.items():
        count = param.grid_count()
        if count is None:
            raise ValueError(f"grid search needs a finite set of values for {name!r}")
        counts.append(count)
    return math.prod(counts)


def clean_params(space: Space, params: dict[str, Any]) -> dict[str, Any]:
    """Params as a person expects them: a stepped float is 0.3, not 0.30000000000000004."""
    out = dict(params)
    for name, value in params.items():
        param = space.get(name)
        if isinstance(param, FloatParam) and param.step is not None and isinstance(value, float):
            out[name] = round(value, 12)
    return out
