"""The service layer: one transaction per operation, keyword-only arguments.

Routes and the CLI call these; they read and write the database, ask the pure code in
:mod:`hpo.algorithms` and :mod:`hpo.budget` for decisions, and raise :class:`hpo.HPOError`
subclasses for anything a user got wrong.
"""

from ._dashboard_reads import compute_spent, objective_curves, param_importances
from ._lifecycle import reap
from ._studies import (
    best_trial,
    cancel_study,
    create_study,
    delete_study,
    get_study,
    list_studies,
)
from ._trial_reads import get_trial, list_trials
from ._trials import ask, complete, fail, heartbeat, report

__all__ = [
    "ask",
    "best_trial",
    "cancel_study",
    "complete",
    "compute_spent",
    "create_study",
    "delete_study",
    "fail",
    "get_study",
    "get_trial",
    "heartbeat",
    "list_studies",
    "list_trials",
    "objective_curves",
    "param_importances",
    "reap",
    "report",
]
