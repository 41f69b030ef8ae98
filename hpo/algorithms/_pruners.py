"""Optuna's pruners for each early-stopping name.

The service decides with the pure rules of :mod:`hpo.algorithms._early_stopping`; these are
the pruners those rules restate, used by the tests that replay reports through both.
"""

from __future__ import annotations

import optuna

from ..spec import AlgorithmSpec, BudgetSpec


def build_pruner(algorithm: AlgorithmSpec, budget: BudgetSpec) -> optuna.pruners.BasePruner:
    """The pruner for ``algorithm.pruner``.

    ASHA is Optuna's asynchronous successive halving: rungs at ``grace_period * eta**k``
    epochs, a trial going on past a rung only when it is in the top ``1/eta`` there.
    """
    rule = algorithm.pruner
    if rule == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=algorithm.grace_period,
            reduction_factor=algorithm.reduction_factor,
            min_early_stopping_rate=0,
        )
    if rule == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=algorithm.grace_period,
            max_resource=budget.max_epochs,
            reduction_factor=algorithm.reduction_factor,
        )
    if rule == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=5, n_warmup_steps=algorithm.grace_period
        )
    return optuna.pruners.NopPruner()
