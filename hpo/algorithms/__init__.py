"""Pure decision code: samplers, early-stopping rules and the search-space translation.

Nothing here reads or writes storage; the service layer does the I/O.
"""

from ._auto import AutoChoice, choose, in_force
from ._constrained import feasible_grid_size, parsed_constraints
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
    waits_at_first_rung,
)
from ._inherit import INHERITED_STATES, fork_problems, fork_seed, inheritable
from ._pruners import build_pruner
from ._samplers import (
    PastTrial,
    build_sampler,
    grid_point,
    missing_requirements,
    needs_history,
    needs_rungs,
    sample_params,
    trial_seed,
)
from ._space import Space, clean_params, distributions, grid_points, grid_size

__all__ = [
    "AutoChoice",
    "MEDIAN_STARTUP_TRIALS",
    "HalvingPlan",
    "INHERITED_STATES",
    "PastTrial",
    "RungOutcome",
    "Standing",
    "Space",
    "bracket_of",
    "build_pruner",
    "build_sampler",
    "choose",
    "clean_params",
    "distributions",
    "feasible_grid_size",
    "fork_problems",
    "fork_seed",
    "grid_point",
    "grid_points",
    "grid_size",
    "halving_plan",
    "in_force",
    "inheritable",
    "median_stops",
    "missing_requirements",
    "needs_history",
    "needs_rungs",
    "promoted",
    "parsed_constraints",
    "pruning_applies",
    "rung_step",
    "rung_steps",
    "sample_params",
    "standing_among",
    "successive_halving",
    "waits_at_first_rung",
    "trial_seed",
]
