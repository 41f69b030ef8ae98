"""Storage: our ``hpo_`` tables beside Optuna's, in PostgreSQL or a SQLite file."""

from ._database import Database, is_transient
from ._models import (
    Base,
    MetricRow,
    OptunaStudyRow,
    OptunaTombstone,
    RungRow,
    RunRow,
    StudyRow,
    TrialRow,
    UTCDateTime,
    latest_attempt,
    metrics,
    rungs,
    runs,
    studies,
    trials,
    utcnow,
)

__all__ = [
    "Base",
    "Database",
    "MetricRow",
    "OptunaStudyRow",
    "OptunaTombstone",
    "RunRow",
    "RungRow",
    "StudyRow",
    "TrialRow",
    "UTCDateTime",
    "is_transient",
    "latest_attempt",
    "metrics",
    "rungs",
    "runs",
    "studies",
    "trials",
    "utcnow",
]
