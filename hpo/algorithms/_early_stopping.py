"""Early stopping as pure rules: successive halving (ASHA), Hyperband and the median rule.

These are Optuna's ``SuccessiveHalvingPruner``, ``HyperbandPruner`` and ``MedianPruner``
restated over the few values a decision needs, so that the service can feed them from an
indexed query (the values recorded at one rung) instead of handing a pruner every trial's
history. ``tests/test_early_stopping.py`` replays the same reports through Optuna's own
pruners and checks that every decision agrees.

The dashboard draws its rung lines from :func:`rung_steps`, the function the rule uses.
"""

from __future__ import annotations

import binascii
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..spec import AlgorithmSpec, BudgetSpec
from ..vocabulary import EarlyStopping

__all__ = [
    "MEDIAN_STARTUP_TRIALS",
    "HalvingPlan",
    "RungOutcome",
    "Standing",
    "bracket_of",
    "halving_plan",
    "median_stops",
    "promoted",
    "pruning_applies",
    "rung_step",
    "rung_steps",
    "standing_among",
    "successive_halving",
    "waits_at_first_rung",
]

#: the median rule judges nothing until this many trials completed (Optuna's default)
MEDIAN_STARTUP_TRIALS = 5


@dataclass(frozen=True)
class HalvingPlan:
    """Where successive halving decides, for one study.

    Bracket ``b`` (Hyperband has several, plain ASHA one) decides at
    ``min_resource * reduction_factor ** (b + k)`` epochs for k = 0, 1, ...
    """

    min_resource: int
    reduction_factor: int
    max_epochs: int
    n_brackets: int = 1
    #: values the first rung of a bracket must hold, the attempt's own included, before it
    #: judges (1: at once, Optuna's rule; see :func:`successive_halving`)
    first_rung_quorum: int = 1

    def allocation(self) -> list[int]:
        """Hyperband's share of trials per bracket (Optuna's trial allocation budget)."""
        eta, n = self.reduction_factor, self.n_brackets
        return [math.ceil(n * eta ** (n - 1 - b) / (n - b)) for b in range(n)]


def halving_plan(algorithm: AlgorithmSpec, budget: BudgetSpec) -> HalvingPlan | None:
    """The plan of a study whose early stopping is ``asha`` or ``hyperband``; else None."""
    rule = algorithm.pruner
    quorum = algorithm.first_rung_quorum
    if rule == EarlyStopping.ASHA:
        return HalvingPlan(
            algorithm.grace_period,
            algorithm.reduction_factor,
            budget.max_epochs,
            first_rung_quorum=quorum,
        )
    if rule == EarlyStopping.HYPERBAND:
        # Optuna's HyperbandPruner with max_resource = max_epochs
        n = math.floor(
            math.log(budget.max_epochs / algorithm.grace_period, algorithm.reduction_factor)
        )
        return HalvingPlan(
            algorithm.grace_period,
            algorithm.reduction_factor,
            budget.max_epochs,
            n + 1,
            first_rung_quorum=quorum,
        )
    return None


def bracket_of(plan: HalvingPlan, study_name: str, number: int) -> int:
    """The Hyperband bracket of trial ``number`` (always 0 for plain ASHA).

    Optuna's rule: a CRC-32 of ``"<study name>_<trial number>"`` spread over the brackets in
    proportion to their allocation. A retried trial keeps its number, so it keeps its bracket.
    """
    if plan.n_brackets == 1:
        return 0
    budgets = plan.allocation()
    n = binascii.crc32(f"{study_name}_{number}".encode()) % sum(budgets)
    for bracket, share in enumerate(budgets):
        n -= share
        if n < 0:
            return bracket
    raise AssertionError("unreachable: the shares add up to the modulus")


def rung_step(plan: HalvingPlan, bracket: int, rung: int) -> int:
    """The epoch at which ``rung`` of ``bracket`` decides."""
    return int(plan.min_resource * plan.reduction_factor ** (bracket + rung))


def rung_steps(plan: HalvingPlan, bracket: int = 0) -> list[int]:
    """Every epoch at which ``bracket`` decides (before the last epoch, which never stops)."""
    steps: list[int] = []
    rung = 0
    while pruning_applies(step=rung_step(plan, bracket, rung), max_epochs=plan.max_epochs):
        steps.append(rung_step(plan, bracket, rung))
        rung += 1
    return steps


def pruning_applies(*, step: int, max_epochs: int) -> bool:
    """Whether a report at ``step`` may stop the trial: never at or after the last epoch."""
    return step < max_epochs


@dataclass(frozen=True)
class Standing:
    """Where a value stands among the values other attempts recorded at the same rung."""

    #: how many values the other attempts recorded there
    others: int
    #: how many of those are strictly better than this value
    better: int


def standing_among(value: float, others: Sequence[float], *, maximize: bool) -> Standing:
    better = sum(1 for v in others if (v > value if maximize else v < value))
    return Standing(len(others), better)


def promoted(standing: Standing, eta: int) -> bool:
    """Whether the value is in the top ``1/eta`` of the rung, itself included: Optuna's rule
    (with fewer than ``eta`` values, only the best goes on). Sorting the values and comparing
    with the k-th best is the same as counting how many are strictly better, which a database
    does without sending a single value back."""
    allowed = max((standing.others + 1) // eta - 1, 0)
    return standing.better <= allowed


@dataclass(frozen=True)
class RungOutcome:
    """What one report decides under successive halving."""

    stop: bool
    #: (rung, value) pairs this report records: one per rung it reached
    recorded: tuple[tuple[int, float], ...]
    #: the first rung the attempt has not passed
    next_rung: int


def successive_halving(
    *,
    plan: HalvingPlan,
    bracket: int,
    next_rung: int,
    step: int,
    value: float,
    standing: Callable[[int, float], Standing],
    waiting: float | None = None,
) -> RungOutcome:
    """Judge a report at ``step`` of an attempt that has passed every rung below
    ``next_rung``: at each rung the step reaches, the value is recorded and must be promoted
    given ``standing(rung, value)`` (where it stands among the values other attempts
    recorded at that rung of the bracket), or the trial stops.

    With ``plan.first_rung_quorum`` above 1, the first rung judges only once it holds that
    many values, the attempt's own included: an attempt that reaches it sooner records its
    value there and goes on (``next_rung`` stays 0), and each later report judges that value
    again (``waiting``), until the rung holds enough or the attempt reaches the next rung,
    where it is judged on what the first rung holds then. So the first trials to get there
    are compared with one another, not let through for want of rivals."""
    recorded: list[tuple[int, float]] = []
    rung = next_rung
    if waiting is not None:
        if rung != 0:
            raise ValueError("only the first rung waits for its quorum")
        decided = _first_rung(plan, bracket, step, standing(0, waiting))
        if decided is None:
            return RungOutcome(False, (), 0)
        if not decided:
            return RungOutcome(True, (), 1)
        rung = 1
    while step >= rung_step(plan, bracket, rung):
        recorded.append((rung, value))
        here = standing(rung, value)
        decided = (
            _first_rung(plan, bracket, step, here)
            if rung == 0
            else promoted(here, plan.reduction_factor)
        )
        if decided is None:
            return RungOutcome(False, tuple(recorded), 0)
        if not decided:
            return RungOutcome(True, tuple(recorded), rung + 1)
        rung += 1
    return RungOutcome(False, tuple(recorded), rung)


def waits_at_first_rung(
    plan: HalvingPlan, bracket: int, *, next_rung: int, last_step: int | None
) -> bool:
    """Whether an attempt's first-rung value still waits for the rung's quorum: it has passed
    the first rung's step (its last report did) but not the rung. The caller then hands
    :func:`successive_halving` that value as ``waiting``."""
    return (
        plan.first_rung_quorum > 1
        and next_rung == 0
        and last_step is not None
        and last_step >= rung_step(plan, bracket, 0)
    )


def _first_rung(plan: HalvingPlan, bracket: int, step: int, here: Standing) -> bool | None:
    """Whether the first rung promotes, or None while it waits for its quorum (never past
    the next rung's step)."""
    short = here.others + 1 < plan.first_rung_quorum
    if short and step < rung_step(plan, bracket, 1):
        return None
    return promoted(here, plan.reduction_factor)


def median_stops(
    *,
    step: int,
    best_so_far: float,
    completed_trials: int,
    completed_at_step: Sequence[float],
    warmup_steps: int,
    maximize: bool,
) -> bool:
    """Optuna's ``MedianPruner(n_startup_trials=5, n_warmup_steps=warmup_steps)``: stop when
    the attempt's best value so far is worse than the median of the completed trials' values
    at this step."""
    if completed_trials < MEDIAN_STARTUP_TRIALS or step < warmup_steps or not completed_at_step:
        return False
    median = _percentile(sorted(completed_at_step), 50.0)
    return best_so_far < median if maximize else best_so_far > median


def _percentile(ordered: Sequence[float], q: float) -> float:
    """numpy's default (linear) percentile of sorted values."""
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
