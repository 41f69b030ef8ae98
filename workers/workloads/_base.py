"""The contract between a workload and the worker that runs it.

A workload is a function ``train(params, reporter, *, options, max_epochs, seed)``:

* ``params``: the trial's hyperparameters (names from the study's search space);
* ``reporter.report(step, metrics) -> bool``: call once per epoch (step = epoch, from 1) with
  the objective metric and any others; ``True`` means stop now (early stopping or a cancelled
  study): return at once;
* ``options``: the study's ``workload.options`` (data paths, sizes);
* ``max_epochs``: the study's ``budget.max_epochs``;
* ``seed``: seed every random source with it.

It returns the final metrics (those of its last epoch), or ``None`` when it stopped early.
It raises :class:`InvalidHyperparameters` for a configuration that cannot be built (checked
before training starts) and :class:`NonFiniteLoss` when the loss diverges.
"""

from __future__ import annotations

from typing import Any, Protocol


class Reporter(Protocol):
    def report(self, step: int, metrics: dict[str, float]) -> bool: ...


class InvalidHyperparameters(ValueError):
    """The configuration cannot be built, e.g. heads that do not divide the hidden size."""


class NonFiniteLoss(ArithmeticError):
    """The training loss became NaN or infinite."""


class Workload(Protocol):
    def __call__(
        self,
        params: dict[str, Any],
        reporter: Reporter,
        *,
        options: dict[str, Any],
        max_epochs: int,
        seed: int,
    ) -> dict[str, float] | None: ...
