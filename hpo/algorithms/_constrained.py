"""Only feasible configurations: the grid without the points that break a constraint, and
redraws for the samplers.

A grid with constraints numbers its feasible points alone: trial n gets the n-th feasible
point in GridSampler's shuffled order, so the study's size is the count of feasible points.
Random, ASHA and the model-based samplers draw again, each time with a seed derived from the
study's seed, the trial number and the attempt (so a seeded study stays reproducible), up to
:data:`MAX_REDRAWS` times; after that, uniform draws over the space (cheap: only the constrained
parameters are drawn until one fits) up to :data:`FALLBACK_DRAWS`; and then a clear error,
never an infeasible configuration.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution

from .._errors import NoFeasibleConfiguration
from ..constraints import (
    MAX_CHECK_WORK,
    MAX_CONSTRAINED_GRID,
    Constraint,
    checks_within,
    grid_table,
    kinds_of,
    parse_constraints,
    sample_space,
    satisfies,
)
from ._space import Space, clean_params, grid_points, grid_size

__all__ = [
    "FALLBACK_DRAWS",
    "MAX_REDRAWS",
    "constrained_grid_point",
    "feasible_draw",
    "feasible_grid_size",
    "parsed_constraints",
    "redraw_seed",
]

#: draws of the study's own sampler (each with its own derived seed) before falling back
MAX_REDRAWS = 16
#: uniform draws of the constrained parameters after that, before the ask gives up (fewer
#: for costly constraints: four times :data:`~hpo.constraints.MAX_CHECK_WORK` at most)
FALLBACK_DRAWS = 65_536


def parsed_constraints(space: Space, constraints: Sequence[str]) -> list[Constraint]:
    """The spec's constraint texts, parsed over ``space`` (the spec already refused bad ones)."""
    return parse_constraints(list(constraints), kinds_of(space)) if constraints else []


def redraw_seed(seed: int | None, number: int, attempt: int) -> int | None:
    """The seed of redraw ``attempt`` (1, 2, ...) of trial ``number`` in a study seeded with
    ``seed``; an unseeded study redraws unseeded."""
    if seed is None:
        return None
    digest = hashlib.sha256(f"{seed}:{number}:redraw:{attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def feasible_grid_size(space: Space, constraints: Sequence[str]) -> int:
    """The number of grid points that satisfy every constraint (all of them without any)."""
    parsed = parsed_constraints(space, constraints)
    if not parsed:
        return grid_size(space)
    points = grid_points(space)
    names, table = grid_table(parsed, points)
    return sum(table) * math.prod(len(v) for n, v in points.items() if n not in names)


def constrained_grid_point(
    space: Space, constraints: Sequence[Constraint], *, seed: int | None, number: int
) -> dict[str, Any]:
    """Trial ``number``'s point: the ``number``-th feasible one in GridSampler's order."""
    points = grid_points(space)
    names = sorted(points)
    sizes = [len(points[name]) for name in names]
    total = math.prod(sizes)
    if total > MAX_CONSTRAINED_GRID:
        raise ValueError(
            f"a grid with constraints has at most {MAX_CONSTRAINED_GRID:,} points, not {total:,}"
        )
    order = np.arange(total)
    np.random.RandomState(seed or 0).shuffle(order)
    constrained, table = grid_table(constraints, points)
    # the index of each point's combination of constrained values in the table (last fastest)
    combo = np.zeros(total, dtype=np.int64)
    stride = 1
    remaining = order.copy()
    strides = {}
    for name in reversed(constrained):
        strides[name] = stride
        stride *= len(points[name])
    for name, size in zip(reversed(names), reversed(sizes), strict=True):
        remaining, positions = np.divmod(remaining, size)
        if name in strides:
            combo += positions * strides[name]
    feasible = order[np.asarray(table, dtype=bool)[combo]]
    if not 0 <= number < len(feasible):
        raise ValueError(f"trial {number} is outside the {len(feasible)} feasible grid points")
    index = int(feasible[number])
    params: dict[str, Any] = {}
    for name, size in zip(reversed(names), reversed(sizes), strict=True):
        index, position = divmod(index, size)
        params[name] = points[name][position]
    return {name: params[name] for name in space}


def feasible_draw(
    study: optuna.Study,
    dists: dict[str, BaseDistribution],
    space: Space,
    constraints: Sequence[Constraint],
    *,
    sampler_for: Callable[[int], optuna.samplers.BaseSampler],
    fallback_seed: int | None,
) -> dict[str, Any]:
    """The first draw of ``study`` that satisfies every constraint.

    ``sampler_for(attempt)`` gives the sampler of each redraw. A draw that breaks a constraint
    is told to ``study`` (in memory only) as a trial that completed with the worst value of the
    history, so that a model-based sampler learns the region is bad and proposes elsewhere
    (refitting on a redraw would otherwise find the same optimum again); with no value yet, as
    failed, which the samplers leave out.
    """
    worst = _worst(study)
    for attempt in range(MAX_REDRAWS):
        if attempt:
            study.sampler = sampler_for(attempt)
        trial = study.ask(dists)
        params = clean_params(space, trial.params)
        if satisfies(constraints, params):
            return params
        if worst is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, worst)
    rng = random.Random(fallback_seed)
    draws = checks_within(constraints, FALLBACK_DRAWS, 4 * MAX_CHECK_WORK)
    names = {n for c in constraints for n in c.names}
    constrained = {n: p for n, p in space.items() if n in names}
    for _ in range(draws):
        point = sample_space(constrained, rng)
        if satisfies(constraints, point):
            others = {n: p for n, p in space.items() if n not in names}
            point.update(sample_space(others, rng))
            return clean_params(space, {name: point[name] for name in space})
    raise NoFeasibleConfiguration(
        f"{MAX_REDRAWS + draws:,} draws found no configuration that satisfies the "
        f"study's constraints ({'; '.join(c.text for c in constraints)}); the feasible part of "
        "the space is too small to find by sampling: loosen the constraints, or narrow the "
        "ranges to the feasible region, in a new study"
    )


def _worst(study: optuna.Study) -> float | None:
    values = [
        t.value
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if t.value is not None
    ]
    if not values:
        return None
    return min(values) if study.direction == optuna.study.StudyDirection.MAXIMIZE else max(values)
