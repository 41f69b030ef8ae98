"""The service layer: one transaction per operation, keyword-only arguments.

Routes and the CLI call these; they read and write our tables (the truth), ask the pure code
in :mod:`hpo.algorithms` and :mod:`hpo.budget` for decisions, and raise :class:`hpo.HPOError`
subclasses for anything a user got wrong. :func:`sync_optuna` brings Optuna's tables (a mirror
derived from ours) up to date.
"""

from ._ask import ask
from ._dashboard_reads import compute_spent, objective_curves, param_importances
from ._dispatch import claim_studies, release_studies
from ._fork import fork_study
from ._keys import (
    authenticate,
    create_key,
    create_session,
    digest,
    end_session,
    ensure_key,
    list_keys,
    operator_keys_exist,
    revoke_builtin,
    revoke_key,
    session_principal,
    study_owner,
)
from ._lifecycle import reap
from ._mirror import optuna_state, sync_optuna
from ._protocol import complete, fail, heartbeat, report
from ._reads import get_trial, list_trials
from ._studies import (
    best_trial,
    cancel_study,
    create_study,
    delete_study,
    get_study,
    list_studies,
)

__all__ = [
    "digest",
    "study_owner",
    "session_principal",
    "revoke_key",
    "revoke_builtin",
    "operator_keys_exist",
    "list_keys",
    "ensure_key",
    "end_session",
    "create_session",
    "create_key",
    "authenticate",
    "ask",
    "best_trial",
    "cancel_study",
    "claim_studies",
    "release_studies",
    "complete",
    "compute_spent",
    "create_study",
    "delete_study",
    "fail",
    "fork_study",
    "get_study",
    "get_trial",
    "heartbeat",
    "list_studies",
    "list_trials",
    "objective_curves",
    "optuna_state",
    "param_importances",
    "reap",
    "report",
    "sync_optuna",
]
