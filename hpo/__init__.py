"""hpo: hyperparameter optimization for transformer training on GPUs.

The core (spec, algorithms, storage, service, client, CLI) imports neither FastAPI, Ray, torch,
transformers nor plotly; those live in ``api``, ``workers`` and ``dashboards``.
"""

from ._errors import (
    BudgetExhausted,
    DuplicateKey,
    DuplicateStudy,
    Forbidden,
    HPOError,
    InvalidSpec,
    KeyNotFound,
    NoCompletedTrial,
    NoFeasibleConfiguration,
    OutOfOrderReport,
    StudyNotFound,
    StudyNotRunning,
    StudyUnreadable,
    TrialFinished,
    TrialNotFound,
    Unauthorized,
)
from .spec import StudySpec, load_spec, parse_spec

__version__ = "0.1.0"

__all__ = [
    "BudgetExhausted",
    "DuplicateKey",
    "DuplicateStudy",
    "Forbidden",
    "HPOError",
    "InvalidSpec",
    "KeyNotFound",
    "NoCompletedTrial",
    "NoFeasibleConfiguration",
    "OutOfOrderReport",
    "StudyNotFound",
    "StudyNotRunning",
    "StudyUnreadable",
    "StudySpec",
    "TrialFinished",
    "TrialNotFound",
    "Unauthorized",
    "__version__",
    "load_spec",
    "parse_spec",
]
