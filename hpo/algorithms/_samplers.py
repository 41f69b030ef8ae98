"""Sampler adapters: one Optuna sampler per algorithm name.

The service is stateless between requests, so a sampler is built for every ``ask`` and its
seed is derived from the study's seed and the trial number. A seeded study therefore draws the
same sequence whichever controller process serves it, and after a restart.
"""

from __future__ import annotations

import hashlib
import importlib.util

import optuna

from ..spec import AlgorithmSpec
from ._space import Space, grid_points


def trial_seed(seed: int | None, trial_number: int) -> int | None:
    """A seed for the sampler that draws trial ``trial_number`` of a study seeded with ``seed``."""
    if seed is None:
        return None
    digest = hashlib.sha256(f"{seed}:{trial_number}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def missing_requirements(algorithm: AlgorithmSpec) -> list[str]:
    """What this controller lacks to run ``algorithm`` (checked when a study is created)."""
    if algorithm.name == "bayesian" and algorithm.model == "gp":
        missing = [m for m in ("torch", "scipy") if importlib.util.find_spec(m) is None]
        if missing:
            return [
                f"algorithm.model: 'gp' needs {' and '.join(missing)} on the controller, which "
                "is not installed; install hpo[gp] there, or use model: tpe"
            ]
    return []


def build_sampler(
    algorithm: AlgorithmSpec, space: Space, *, trial_number: int
) -> optuna.samplers.BaseSampler:
    """The Optuna sampler that draws trial ``trial_number`` under ``algorithm``."""
    if algorithm.name == "grid":
        # GridSampler shuffles the grid once with its seed and gives trial n the n-th point,
        # so it needs the study's own seed, the same for every ask.
        return optuna.samplers.GridSampler(grid_points(space), seed=algorithm.seed)
    seed = trial_seed(algorithm.seed, trial_number)
    if algorithm.name == "bayesian":
        if algorithm.model == "gp":
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=algorithm.n_startup_trials)
        return optuna.samplers.TPESampler(
            seed=seed,
            multivariate=True,
            group=True,
            constant_liar=True,
            n_startup_trials=algorithm.n_startup_trials,
        )
    # random and asha (ASHA is random search with successive-halving early stopping)
    return optuna.samplers.RandomSampler(seed=seed)
