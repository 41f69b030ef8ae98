"""Pure decision code: samplers, pruners and the search-space translation.

Nothing here reads or writes storage; the service layer does the I/O.
"""

from ._pruners import build_pruner, pruning_applies
from ._samplers import build_sampler, trial_seed
from ._space import distributions, grid_points, grid_size

__all__ = [
    "build_pruner",
    "build_sampler",
    "distributions",
    "grid_points",
    "grid_size",
    "pruning_applies",
    "trial_seed",
]
