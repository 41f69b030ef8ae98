"""Pure decision code: samplers, pruners and the search-space translation.

Nothing here reads or writes storage; the service layer does the I/O.
"""

from ._pruners import build_pruner, pruning_applies
from ._samplers import build_sampler, missing_requirements, trial_seed
from ._space import Space, clean_params, distributions, grid_points, grid_size

__all__ = [
    "Space",
    "build_pruner",
    "build_sampler",
    "clean_params",
    "distributions",
    "grid_points",
    "grid_size",
    "missing_requirements",
    "pruning_applies",
    "trial_seed",
]
