"""Settings: one pydantic-settings class, env vars prefixed ``HPO_``, read once by whoever
builds the app (never at import time)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "DEFAULT_DATABASE_URL"]

DEFAULT_DATABASE_URL = "sqlite:///hpo.db"


class Settings(BaseSettings):
    """Controller settings.

    Attributes:
        database_url: SQLAlchemy URL of the database; with none set, the SQLite file ``hpo.db``
            in the working directory (the embedded default).
        host: address ``hpo serve`` binds to.
        port: port ``hpo serve`` listens on.
        workloads: operator-registered workloads, ``name -> python.import:path``
            (``HPO_WORKLOADS='{"mine": "pkg.mod:train"}'``).
    """

    model_config = SettingsConfigDict(env_prefix="HPO_", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workloads: dict[str, str] = Field(default_factory=dict)
