"""Sampler adapters: one Optuna sampler per algorithm name.

The service is stateless between requests, so a sampler is built for every ``ask`` and its
seed is derived from the study's seed and the trial number. A seeded study therefore draws the
same sequence whichever controller process serves it, and after a restart.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import optuna
from optuna.distributions import BaseDistribution

from ..spec import AlgorithmSpec
from ..vocabulary import AlgorithmName, FailureKind, SamplerModel, TrialState
from . import _bohb
from ._constrained import (
    constrained_grid_point,
    feasible_draw,
    parsed_constraints,
    redraw_seed,
)
from ._quasi_random import quasi_random_params, scramble_key
from ._space import Space, clean_params, contains, distributions, grid_points


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
        if algorithm.model == SamplerModel.BOHB:
            # the model half of BOHB: fit on the values of one budget (no trial in flight
            # is told: they have no value at that budget yet); the random third and the
            # draws before any budget has enough values are quasi-random (_bohb_study),
            # their redraws for the constraints use RandomSampler
            return optuna.samplers.TPESampler(
                seed=seed, multivariate=True, group=True, n_startup_trials=0
            )
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


@dataclass(frozen=True)
class PastTrial:
    """What a model-based sampler needs of one earlier trial (read from our tables)."""

    number: int
    #: see hpo.vocabulary.TrialState
    state: str
    params: dict[str, Any]
    #: the completed value, or a pruned trial's value at its last step
    value: float | None = None
    last_step: int | None = None
    #: see hpo.vocabulary.FailureKind: a failed trial is history only if it ran out of memory
    failure_kind: str | None = None
    #: (epoch, value) at each successive-halving rung the latest attempt reached; read only
    #: for a sampler that models them (see :func:`needs_rungs`)
    rungs: tuple[tuple[int, float], ...] = ()


def needs_history(algorithm: AlgorithmSpec) -> bool:
    """Whether drawing a trial under ``algorithm`` looks at earlier trials (TPE and GP do;
    grid and random draw from the trial number and the seed alone)."""
    return algorithm.name == AlgorithmName.BAYESIAN


def needs_rungs(algorithm: AlgorithmSpec) -> bool:
    """Whether the sampler models the values trials recorded at each rung (``bohb``)."""
    return algorithm.name == AlgorithmName.BAYESIAN and algorithm.model == SamplerModel.BOHB


#: grids up to this size follow GridSampler's own order (a shuffle of every point's index:
#: 512 KiB at most); a larger one a keyed permutation computed for one index alone, so that an
#: ask's memory and time do not grow with the grid
SHUFFLED_GRID_MAX = 65_536


def grid_point(space: Space, *, seed: int | None, number: int) -> dict[str, Any]:
    """Trial ``number``'s point of the grid, every point once over the grid's trials.

    GridSampler lists the cartesian product of the value lists (parameters sorted by name),
    shuffles it once with ``numpy.random.RandomState(seed or 0)`` and gives trial n the n-th
    point. Up to :data:`SHUFFLED_GRID_MAX` points, the same shuffle of the point indices gives
    the same order without building any point; past it, :func:`keyed_permutation` orders the
    indices, so that memory per ask is independent of the grid's size.
    """
    points = grid_points(space)
    names = sorted(points)
    sizes = [len(points[name]) for name in names]
    total = math.prod(sizes)
    if not 0 <= number < total:
        raise ValueError(f"trial {number} is outside the grid of {total} points")
    if total <= SHUFFLED_GRID_MAX:
        order = np.arange(total)
        np.random.RandomState(seed or 0).shuffle(order)
        index = int(order[number])
    else:
        index = keyed_permutation(number, total, seed or 0)
    params: dict[str, Any] = {}
    for name, size in zip(reversed(names), reversed(sizes), strict=True):
        index, position = divmod(index, size)
        params[name] = points[name][position]
    return {name: params[name] for name in space}


def keyed_permutation(index: int, total: int, seed: int, rounds: int = 4) -> int:
    """Where ``index`` goes in a seeded permutation of ``range(total)``, computed alone.

    A balanced Feistel network over the smallest ``4**k >= total`` is a permutation of that
    domain; walking the cycle until the value falls below ``total`` (at most four steps on
    average) makes it one of ``range(total)``. Round keys come from BLAKE2b of the seed, the
    same in every process.
    """
    if not 0 <= index < total:
        raise ValueError(f"index {index} is outside range({total})")
    bits = max(2, (total - 1).bit_length())
    half = (bits + 1) // 2
    mask = (1 << half) - 1
    keys = [
        hashlib.blake2b(f"hpo-grid:{seed}:{r}".encode(), digest_size=8).digest()
        for r in range(rounds)
    ]
    value = index
    while True:
        left, right = value >> half, value & mask
        for key in keys:
            mixed = hashlib.blake2b(right.to_bytes(8, "little"), key=key, digest_size=8)
            left, right = right, left ^ (int.from_bytes(mixed.digest(), "little") & mask)
        value = (left << half) | right
        if value < total:
            return value


def sample_params(
    algorithm: AlgorithmSpec,
    space: Space,
    *,
    number: int,
    direction: Literal["maximize", "minimize"],
    history: list[PastTrial] | None = None,
    constraints: Sequence[str] = (),
    study_name: str | None = None,
) -> dict[str, Any]:
    """The parameters of trial ``number``: a pure function of the algorithm, the seed, the
    trial number and (for a model-based sampler) the earlier trials.

    The sampler works on an in-memory Optuna study holding ``history``; nothing is read from
    or written to a database here. With ``constraints``, only a feasible configuration is
    returned (see :mod:`._constrained`). ``study_name`` keys the quasi-random draws of
    ``model: bohb`` in a study without a seed (see :mod:`._quasi_random`), so that they stay
    spread over the study's trials.
    """
    parsed = parsed_constraints(space, constraints)
    if algorithm.name == AlgorithmName.GRID:
        if parsed:
            return constrained_grid_point(space, parsed, seed=algorithm.seed, number=number)
        return grid_point(space, seed=algorithm.seed, number=number)
    dists = distributions(space)
    if needs_rungs(algorithm):
        study, sampler = _bohb_study(
            algorithm,
            space,
            dists,
            number,
            direction,
            history or [],
            key=scramble_key(algorithm.seed, study_name),
        )
    else:

        def sampler(seed: int | None) -> optuna.samplers.BaseSampler:
            redrawn = (
                algorithm if seed == algorithm.seed else algorithm.model_copy(update={"seed": seed})
            )
            return build_sampler(redrawn, space, trial_number=number)

        study = optuna.create_study(direction=direction, sampler=sampler(algorithm.seed))
        if history:
            worst = _worse_than_all(history, direction)
            study.add_trials(
                _frozen(past, dists, worst) for past in history if _usable(past, dists)
            )
    if parsed:
        return feasible_draw(
            study,
            dists,
            space,
            parsed,
            sampler_for=lambda attempt: sampler(redraw_seed(algorithm.seed, number, attempt)),
            fallback_seed=redraw_seed(algorithm.seed, number, 0),
        )
    return clean_params(space, study.ask(dists).params)


def _bohb_study(
    algorithm: AlgorithmSpec,
    space: Space,
    dists: dict[str, BaseDistribution],
    number: int,
    direction: Literal["maximize", "minimize"],
    history: list[PastTrial],
    *,
    key: str,
) -> tuple[optuna.Study, Callable[[int | None], optuna.samplers.BaseSampler]]:
    """``model: bohb`` (see :mod:`._bohb`): the study to draw from and its sampler for a seed.
    A quasi-random draw (point ``number`` of the Halton sequence scrambled by ``key``) for
    one trial in three and until a budget has ``n_startup_trials`` values; else TPE fit on
    the values of the longest such budget, with the trials that ran out of memory as worse
    than all of them. A redraw for the constraints (another seed) is uniformly random."""
    usable = [past for past in history if _usable(past, dists)]
    observed: list[tuple[dict[str, Any], float]] = []
    if not _bohb.draws_at_random(algorithm.seed, number):
        observed = _bohb.observations(
            [past for past in usable if not _out_of_memory(past)],
            first_rung=algorithm.grace_period,
            min_values=algorithm.n_startup_trials,
        )

    def sampler(seed: int | None) -> optuna.samplers.BaseSampler:
        if not observed:
            return optuna.samplers.RandomSampler(seed=trial_seed(seed, number))
        return build_sampler(
            algorithm.model_copy(update={"seed": seed}), space, trial_number=number
        )

    study = optuna.create_study(direction=direction, sampler=sampler(algorithm.seed))
    if not observed:  # the first ask takes the quasi-random point; a redraw, the sampler's
        study.enqueue_trial(quasi_random_params(space, number=number, key=key))
    else:
        worst = _worse_than((v for _, v in observed), direction=direction)
        ran_out = [p.params for p in usable if _out_of_memory(p)]
        study.add_trials(
            optuna.trial.create_trial(
                state=optuna.trial.TrialState.COMPLETE,
                value=value,
                params=params,
                distributions=dists,
            )
            for params, value in [*observed, *((p, worst) for p in ran_out)]
        )
    return study, sampler


def _out_of_memory(past: PastTrial) -> bool:
    return past.state == TrialState.FAILED and past.failure_kind == FailureKind.OOM


def _worse_than_all(history: list[PastTrial], direction: str) -> float:
    """The value an out-of-memory trial gets: worse than every trial that ran.

    So the model learns that its region does not fit: TPE ranks it among the bad trials
    (Optuna's TPE splits by rank, so this is what its ``constraints_func`` would do with an
    infeasible trial, through the public API alone), and a GP sees low values there.
    """
    return _worse_than((p.value for p in history if p.value is not None), direction=direction)


def _worse_than(given: Iterable[float], *, direction: str) -> float:
    values = [v for v in given if math.isfinite(v)]
    if not values:
        return 0.0
    spread = max(values) - min(values)
    margin = max(spread, abs(max(values)), 1.0)
    return min(values) - margin if direction == "maximize" else max(values) + margin


def _usable(past: PastTrial, dists: dict[str, BaseDistribution]) -> bool:
    if set(past.params) != set(dists):
        return False
    if past.state not in _OPTUNA_STATES and not _out_of_memory(past):
        return False
    if past.state == TrialState.COMPLETED and past.value is None:
        return False
    return all(contains(dists[name], value) for name, value in past.params.items())


_OPTUNA_STATES = {
    TrialState.COMPLETED: optuna.trial.TrialState.COMPLETE,
    TrialState.PRUNED: optuna.trial.TrialState.PRUNED,
    TrialState.RUNNING: optuna.trial.TrialState.RUNNING,
    TrialState.PENDING: optuna.trial.TrialState.RUNNING,
}


def _frozen(
    past: PastTrial, dists: dict[str, BaseDistribution], worst: float
) -> optuna.trial.FrozenTrial:
    if _out_of_memory(past):
        return optuna.trial.create_trial(
            state=optuna.trial.TrialState.COMPLETE,
            value=worst,
            params=past.params,
            distributions=dists,
        )
    state = _OPTUNA_STATES[TrialState(past.state)]
    intermediate = {}
    if state == optuna.trial.TrialState.PRUNED and past.value is not None:
        intermediate = {past.last_step or 0: past.value}
    return optuna.trial.create_trial(
        state=state,
        value=past.value if state == optuna.trial.TrialState.COMPLETE else None,
        params=past.params,
        distributions=dists,
        intermediate_values=intermediate,
    )
