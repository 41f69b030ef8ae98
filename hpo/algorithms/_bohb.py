"""BOHB's model (Falkner et al., 2018) over the trials of a successive-halving study.

``bayesian`` with ``model: bohb`` draws a configuration the way BOHB does, restated over our
trials: one draw in three at random (:data:`RANDOM_SHARE`, BOHB's ``random_fraction``; drawn
from a scrambled Halton sequence, :mod:`._quasi_random`, as are the draws before a model), the
others from TPE fit on the values at the *longest budget that has enough of them*: the final
values of completed trials when there are ``n_startup_trials`` of them, else the values every
trial recorded at the highest successive-halving rung that has that many, else a random draw.

Two things set it apart from TPE over pruned trials (``bayesian`` + ``early_stopping`` with
``model: tpe``), which ranks every trial by how far it got and then by its last value, so that
the trials of the first rung decide what "good" means until trials finish:

- the values of one budget are compared only with values of the same budget, and a trial that
  went further is counted at every rung it passed, with the value it had there;
- no value of the first rung is modelled: the first epochs rank configurations worst, and a
  model fit on them learns to propose configurations that merely start fast (measured:
  ``benchmarks/search_efficiency.py``).

Pure: the service hands each trial's rung values in :class:`PastTrial.rungs`.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..vocabulary import TrialState

if TYPE_CHECKING:
    from ._samplers import PastTrial

__all__ = ["RANDOM_SHARE", "draws_at_random", "observations"]

#: BOHB's share of configurations drawn at random, whatever the model says
RANDOM_SHARE = 1 / 3


def draws_at_random(seed: int | None, number: int) -> bool:
    """Whether trial ``number`` is one of the random third: a pure function of the study's
    seed and the trial number (unseeded: by chance)."""
    if seed is None:
        return random.random() < RANDOM_SHARE
    digest = hashlib.sha256(f"bohb:{seed}:{number}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < RANDOM_SHARE


def observations(
    history: Sequence[PastTrial], *, first_rung: int, min_values: int
) -> list[tuple[dict[str, Any], float]]:
    """The (parameters, value) pairs at the longest budget with at least ``min_values`` of
    them: the completed trials' final values, else the values recorded at a rung past the
    ``first_rung`` epoch, the latest rung first. Empty when no budget has enough."""
    need = max(1, min_values)
    completed = [
        (past.params, past.value)
        for past in history
        if past.state == TrialState.COMPLETED and past.value is not None
    ]
    if len(completed) >= need:
        return completed
    at: dict[int, list[tuple[dict[str, Any], float]]] = {}
    for past in history:
        for epoch, value in past.rungs:
            if epoch > first_rung:
                at.setdefault(epoch, []).append((past.params, value))
    for epoch in sorted(at, reverse=True):
        if len(at[epoch]) >= need:
            return at[epoch]
    return []
