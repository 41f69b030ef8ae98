"""``algorithm: {name: auto}``: pick an algorithm from the space, the budget and ``max_epochs``.

The rule, in order:

1. **Grid** when every parameter has a finite set of values and the whole grid (its points
   that satisfy the ``constraints``) fits the budget: at most ``budget.max_trials`` points, or
   at most ``max_total_epochs // max_epochs`` full-length trials (with neither set, a grid of
   at most :data:`SMALL_GRID` points). Trying every point is then the best use of the budget,
   and nothing is left to chance.
2. **TPE, no early stopping** when there is no epoch axis to stop on: ``max_epochs`` below
   :data:`MIN_EPOCHS_TO_STOP` (a study that reports once, or a handful of times).
3. Otherwise **BOHB** (``bayesian`` with ``model: bohb``, see :mod:`._bohb`) with successive
   halving (``asha``): ``reduction_factor`` 3, rungs at ``r, 3r, 9r, ...`` below
   ``max_epochs``, the first rung ``r`` at ``max_epochs / 27`` (at least 1), so about three
   rungs, the first judging once it holds 3 values (``first_rung_quorum``); two draws in
   three from TPE fit on the values at the longest budget that has
   :data:`AUTO_MODEL_VALUES` of them (completed trials, else the highest rung past the
   first), one in three quasi-random (a scrambled Halton sequence, as are the draws before
   any model, see :mod:`._quasi_random`). Measured lessons shape it
   (``benchmarks/search_efficiency.py``, LCBench, six tasks by five seeds, and a simulation
   of these pure functions over 60 seeds):

   - a model that steers which configurations to try while early stopping judges them on
     their first epochs (TPE over pruned trials, ranked by how far they got) learns to
     propose configurations that *start* fast; those then set every rung, and the search
     collapses on tasks where early epochs mislead. BOHB never models the first rung, and
     its random third keeps the rungs honest;
   - the first epoch ranks configurations worst of all, so no rung judges before
     ``max_epochs / 27`` epochs: a hedge against misleading early epochs at almost no cost;
   - a model fit early (3 values at a budget) did better than one that waits for
     ``len(space) + 2`` values (about what BOHB asks for),
     and better than random configurations with the same successive halving;
   - quasi-random draws instead of uniform ones for the configurations no model proposes
     spread the first trials over the space: +0.004 best accuracy after 520 epochs (paired
     over 180 simulated seeds, +- 0.0015), the same after 260 and 1,040;
   - Optuna's first rung lets the first trial there through (it has no rival yet) and holds
     the next to beating that one alone; judging only once the rung holds
     ``reduction_factor`` values compares the first trials with one another: +0.0065,
     +0.0034 and +0.0027 after 260, 520 and 1,040 epochs (+- 0.001, 180 seeds).

   A model set beside ``auto`` (``model: gp``) replaces BOHB's; an ``early_stopping`` rule
   set beside it replaces ``asha``.

Fields set beside ``name: auto`` (``seed``, ``n_startup_trials``, ``early_stopping``,
``reduction_factor``, ``grace_period``, ``first_rung_quorum``, ``model``) are kept, a
default value too (``grace_period: 1`` is a first rung at epoch 1, ``model: tpe`` is TPE).
The choice is a pure function of the spec: the same spec gives the same choice on every
controller, and the study page shows it with its reason.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter

from ..constraints import MAX_CHECK_WORK, MAX_CONSTRAINED_GRID
from ..spec import MAX_GRID_POINTS, MAX_GRID_SEED, AlgorithmSpec, Param, StudySpec
from ..vocabulary import AlgorithmName, EarlyStopping, SamplerModel
from ._constrained import feasible_grid_size, parsed_constraints
from ._early_stopping import halving_plan, rung_steps
from ._space import Space

__all__ = ["MIN_EPOCHS_TO_STOP", "SMALL_GRID", "AutoChoice", "choose", "in_force"]

#: with no trial or epoch budget, a discrete space of at most this many points is searched as
#: a grid (it then ends by itself once every point was tried)
SMALL_GRID = 100
#: below this many epochs per trial, early stopping has too few reports to judge on
MIN_EPOCHS_TO_STOP = 9
#: successive halving keeps the best third at each rung
AUTO_REDUCTION_FACTOR = 3
#: the first rung is max_epochs / 27, leaving about three rungs (27 = 3**3)
AUTO_RUNGS = 3
#: BOHB's model is fit on a budget once it holds this many values (measured: fewer values,
#: an earlier model, did better than len(space) + 2, about what BOHB waits for)
AUTO_MODEL_VALUES = 3


@dataclass(frozen=True)
class AutoChoice:
    """What ``auto`` runs, and why, in words a person reads on the study page."""

    algorithm: AlgorithmSpec
    #: one line: "bayesian (BOHB: ...) + asha (reduction factor 3, first rung at epoch 2)"
    summary: str
    reason: str


def in_force(spec: StudySpec) -> AlgorithmSpec:
    """The algorithm a study runs: its own, or what ``auto`` chose for it."""
    if spec.algorithm.name != AlgorithmName.AUTO:
        return spec.algorithm
    return choose(spec).algorithm


def choose(spec: StudySpec) -> AutoChoice:
    """The algorithm ``auto`` runs for ``spec`` (see the module's docstring for the rule)."""
    kept = _kept(spec.algorithm)
    grid = _grid_size(spec)
    fits = _full_trials(spec)
    if grid is not None and _may_grid(spec, grid, fits):
        room = (
            f"the budget of {fits:,} full-length trials"
            if fits is not None
            else f"the {SMALL_GRID} points auto grids without a trial or epoch budget"
        )
        algorithm = AlgorithmSpec.model_validate({**kept, "name": AlgorithmName.GRID})
        return AutoChoice(
            algorithm,
            "grid",
            f"every parameter has a finite set of values, and the whole grid of {grid:,} "
            f"points fits {room}: trying every point is the best use of it",
        )
    max_epochs = spec.budget.max_epochs
    if max_epochs < MIN_EPOCHS_TO_STOP and "early_stopping" not in kept:
        algorithm = AlgorithmSpec.model_validate(
            {**kept, "name": AlgorithmName.BAYESIAN, "early_stopping": EarlyStopping.NONE}
        )
        return AutoChoice(
            algorithm,
            "bayesian (TPE), no early stopping",
            f"budget.max_epochs is {max_epochs}: below {MIN_EPOCHS_TO_STOP} epochs there is "
            "no epoch axis worth stopping early on, so every trial runs to the end and TPE "
            "models the results",
        )
    eta = int(
        spec.algorithm.reduction_factor if "reduction_factor" in kept else AUTO_REDUCTION_FACTOR
    )
    grace = (
        spec.algorithm.grace_period
        if "grace_period" in kept
        else max(1, round(max_epochs / eta**AUTO_RUNGS))
    )
    model = kept.get("model", SamplerModel.BOHB)
    defaults: dict[str, object] = {"model": SamplerModel.BOHB, "early_stopping": EarlyStopping.ASHA}
    if model == SamplerModel.BOHB:
        defaults["n_startup_trials"] = AUTO_MODEL_VALUES
    algorithm = AlgorithmSpec.model_validate(
        {
            **defaults,
            **kept,
            "reduction_factor": eta,
            "grace_period": min(grace, max_epochs - 1),
            "first_rung_quorum": kept.get("first_rung_quorum", eta),
            "name": AlgorithmName.BAYESIAN,
        }
    )
    return AutoChoice(
        algorithm,
        _summary(algorithm),
        f"{_why_not_grid(grid, fits)}; {_why_model(algorithm)}{_why_halving(algorithm, spec)}",
    )


def _summary(algorithm: AlgorithmSpec) -> str:
    if algorithm.model == SamplerModel.BOHB:
        model = (
            "BOHB: TPE fit on the longest budget with "
            f"{max(1, algorithm.n_startup_trials)} values, a third of the draws quasi-random"
        )
    else:
        model = "GP" if algorithm.model == SamplerModel.GP else "TPE"
    rule = algorithm.pruner
    if rule in (EarlyStopping.ASHA, EarlyStopping.HYPERBAND):
        quorum = algorithm.first_rung_quorum
        waits = f" once it holds {quorum} values" if quorum > 1 else ""
        return (
            f"bayesian ({model}) + {rule} (reduction factor {algorithm.reduction_factor}, "
            f"first rung at epoch {algorithm.grace_period}{waits})"
        )
    return f"bayesian ({model}), early stopping: {rule}"


def _why_model(algorithm: AlgorithmSpec) -> str:
    if algorithm.model != SamplerModel.BOHB:
        return f"the spec asks for model {algorithm.model} beside auto"
    return (
        "two draws in three come from TPE fit on the values at the longest budget that has "
        f"{max(1, algorithm.n_startup_trials)} of them (completed trials, else the highest "
        "rung past the first), never on first-rung values, which favour configurations that "
        "merely start fast; one in three at random, as in BOHB, from a quasi-random (Halton) "
        "sequence that spreads them, and the first trials, over the space"
    )


def _why_halving(algorithm: AlgorithmSpec, spec: StudySpec) -> str:
    plan = halving_plan(algorithm, spec.budget)
    if plan is not None and algorithm.pruner == EarlyStopping.ASHA:
        rungs = ", ".join(map(str, rung_steps(plan)))
        quorum = algorithm.first_rung_quorum
        waits = (
            f"; the first rung judges a trial only once it holds {quorum} values, so the "
            "first trials there are compared with one another, not let through for want of "
            "rivals"
            if quorum > 1
            else ""
        )
        return (
            f"; successive halving gives the epochs to the best 1/{algorithm.reduction_factor} "
            f"at each rung (epochs {rungs}), judging none before epoch "
            f"{algorithm.grace_period}, since the first epochs rank configurations worst"
            f"{waits} (measured: benchmarks/search_efficiency.py)"
        )
    return f", with {algorithm.pruner} early stopping"


def _kept(given: AlgorithmSpec) -> dict[str, object]:
    """The fields the spec sets beside ``name: auto``, a default value too (``grace_period:
    1``); a null is as good as unset. An ``auto`` spec dumps only the fields it was given
    (:class:`~hpo.spec.AlgorithmSpec`), so a stored or fetched spec keeps what was set."""
    return {
        field: getattr(given, field)
        for field in AlgorithmSpec.model_fields
        if field != "name" and field in given.model_fields_set and getattr(given, field) is not None
    }


def _may_grid(spec: StudySpec, grid: int, fits: int | None) -> bool:
    """Whether the whole grid fits the budget, and is one a grid study may run (at most
    MAX_GRID_POINTS points, a seed numpy shuffles with)."""
    seed = spec.algorithm.seed
    if grid > MAX_GRID_POINTS or (seed is not None and not 0 <= seed <= MAX_GRID_SEED):
        return False
    return grid <= fits if fits is not None else grid <= SMALL_GRID


def _why_not_grid(grid: int | None, fits: int | None) -> str:
    if grid is None:
        return "the space has continuous parameters (or is too large to grid with constraints)"
    if fits is not None:
        return (
            f"the grid of {grid:,} points is larger than the budget of {fits:,} full-length trials"
        )
    return f"the grid of {grid:,} points is large and no trial or epoch budget bounds it"


def _grid_size(spec: StudySpec) -> int | None:
    """The points of the grid that satisfy the constraints; None when the space has a
    continuous parameter, or is too large to grid with its constraints."""
    counts = [param.grid_count() for param in spec.space.values()]
    if any(count is None for count in counts):
        return None
    total = math.prod(count for count in counts if count is not None)
    if not spec.constraints:
        return total
    if total > MAX_CONSTRAINED_GRID:
        return None
    space_json = json.dumps({n: p.model_dump(mode="json") for n, p in spec.space.items()})
    return _feasible_points(space_json, tuple(spec.constraints))


@functools.lru_cache(maxsize=256)
def _feasible_points(space_json: str, constraints: tuple[str, ...]) -> int | None:
    """A pure function's memo: ``in_force`` runs on every report, and counting the feasible
    points of a grid walks up to :data:`MAX_CONSTRAINED_GRID` of them."""
    space: Space = _SPACE.validate_json(space_json)
    parsed = parsed_constraints(space, constraints)
    names = {name for constraint in parsed for name in constraint.names}
    combos = math.prod(space[name].grid_count() or 0 for name in names)
    if combos * sum(c.cost for c in parsed) > MAX_CHECK_WORK:
        return None  # the spec would refuse to check such a grid: auto does not pick it
    return feasible_grid_size(space, constraints)


_SPACE: TypeAdapter[dict[str, Any]] = TypeAdapter(dict[str, Param])


def _full_trials(spec: StudySpec) -> int | None:
    """How many full-length trials the budget holds, when a trial or epoch budget is set."""
    budget = spec.budget
    limits = [budget.max_trials] if budget.max_trials is not None else []
    max_total_epochs = getattr(budget, "max_total_epochs", None)
    if max_total_epochs is not None:
        limits.append(max_total_epochs // budget.max_epochs)
    return min(limits) if limits else None
