"""Pure decision code: samplers, early-stopping rules and the search-space translation.

Nothing here reads or writes storage; the service layer does the I/O.
"""

from ._constrained import feasible_grid_size
from ._early_stopping import (
    MEDIAN_STARTUP_TRIALS,
    HalvingPlan,
    RungOutcome,
    Standing,
    bracket_of,
    halving_plan,
    median_stops,
    promoted,
    pruning_applies,
    rung_step,
    rung_steps,
    standing_among,
    successive_halving,
)
from ._pruners import build_pruner
from ._samplers import (
    PastTrial,
    build_sampler,
    grid_point,
    missing_requirements,
    needs_history,
    sample_params,
    trial_seed,
)
from ._space import Space, clean_params, distributions, grid_points, grid_size

__all__ = [
    "MEDIAN_STARTUP_TRIALS",
    "HalvingPlan",
    "PastTrial",
    "RungOutcome",
    "Standing",
    "Space",
    "bracket_of",
    "build_pruner",
    "build_sampler",
    "clean_params",
    "distributions",
    "feasible_grid_size",
    "grid_point",
    "grid_points",
    "grid_size",
    "halving_plan",
    "median_stops",
    "missing_requirements",
    "needs_history",
    "promoted",
    "pruning_applies",
    "rung_step",
    "rung_steps",
    "sample_params",
    "standing_among",
    "successive_halving",
    "trial_seed",
]
