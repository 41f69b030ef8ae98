"""What a forked study inherits from its parent: pure rules over specs and trial rows."""

from __future__ import annotations

import hashlib
import math
from typing import Any

from ..spec import StudySpec
from ..vocabulary import AlgorithmName, TrialState
from ._space import Space, contains, distributions

#: the states of a parent's trials that a fork inherits: finished, with an objective value
INHERITED_STATES = (TrialState.COMPLETED, TrialState.PRUNED)


def fork_problems(parent: StudySpec, child: StudySpec) -> list[str]:
    """Why ``child`` cannot be a fork of ``parent`` (empty when it can).

    Inherited values are the parent's objective: they mean the same in the fork only when the
    fork measures the same metric, in the same direction, on the same workload.
    """
    problems = []
    if (child.objective.metric, child.objective.direction) != (
        parent.objective.metric,
        parent.objective.direction,
    ):
        problems.append(
            f"objective: the fork has {child.objective.direction} "
            f"{child.objective.metric!r} but its parent {parent.name!r} has "
            f"{parent.objective.direction} {parent.objective.metric!r}; a fork inherits the "
            "parent's objective values, so keep the parent's objective (or create a new study "
            "with POST /api/v1/studies)"
        )
    if child.workload.name != parent.workload.name:
        problems.append(
            f"workload.name: the fork runs {child.workload.name!r} but its parent "
            f"{parent.name!r} ran {parent.workload.name!r}; the parent's values would mean "
            "something else, so keep the workload (or create a new study)"
        )
    return problems


def inheritable(
    *, state: str, params: dict[str, Any], value: float | None, space: Space, algorithm: str
) -> bool:
    """Whether a parent's trial becomes history of a fork with ``space`` and ``algorithm``.

    It must have finished with a value (completed, or pruned with its last value), name the
    same parameters as the fork's space, and every value must lie in the fork's distribution
    (inside a range and on its step, one of the choices, a point of a grid).
    """
    if state not in INHERITED_STATES or value is None or not math.isfinite(value):
        return False
    if set(params) != set(space):
        return False
    dists = distributions(space, grid=algorithm == AlgorithmName.GRID)
    return all(contains(dists[name], raw) for name, raw in params.items())


def fork_seed(seed: int | None, name: str) -> int | None:
    """The seed a fork named ``name`` draws with, given its spec's ``seed``.

    Samplers seed each draw from the study's seed and the trial's index among its new trials,
    so a fork with its parent's seed would propose its parent's configurations again, in the
    same order (the very trials it inherited). Mixing in the fork's name gives it a stream of
    its own, as reproducible as the seed.
    """
    if seed is None:
        return None
    digest = hashlib.sha256(f"fork:{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


__all__ = ["INHERITED_STATES", "fork_problems", "fork_seed", "inheritable"]
