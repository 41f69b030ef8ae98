"""Storage: our ``hpo_`` tables beside Optuna's, in PostgreSQL or a SQLite file."""

from ._database import Database
from ._models import Base, MetricRow, RunRow, StudyRow, UTCDateTime, utcnow

__all__ = ["Base", "Database", "MetricRow", "RunRow", "StudyRow", "UTCDateTime", "utcnow"]
