"""Settings: one pydantic-settings class, env vars prefixed ``HPO_``, read once by whoever
builds the app (never at import time)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "DEFAULT_DATABASE_URL", "MAX_BODY_BYTES"]

DEFAULT_DATABASE_URL = "sqlite:///hpo.db"
#: 1 MiB: a real study spec is a few kilobytes, a trial report a few hundred bytes
MAX_BODY_BYTES = 1024 * 1024


class Settings(BaseSettings):
    """Controller settings.

    Attributes:
        database_url: SQLAlchemy URL of the database; with none set, the SQLite file ``hpo.db``
            in the working directory (the embedded default).
        host: address ``hpo serve`` binds to.
        port: port ``hpo serve`` listens on.
        workloads: operator-registered workloads, ``name -> python.import:path``
            (``HPO_WORKLOADS='{"mine": "pkg.mod:train"}'``).
        heartbeat_timeout: seconds a running trial may stay silent (no report, no heartbeat)
            before it is presumed lost and retried.
        start_timeout: seconds a handed-out trial may wait for its worker to start (queued on
            Ray, a cold worker process) before it is presumed lost.
        reap_interval: seconds between two checks for lost trials and studies out of time.
        ray_address: Ray cluster the dispatcher joins; unset starts a local Ray.
        dispatch: run trials of studies with a built-in or registered workload on Ray.
        public_url: the URL workers reach this controller at (default: from host and port).
        mirror: keep Optuna's tables in step with ours, so that ``optuna.load_study`` works
            on this database (turn it off only if nothing reads Optuna's tables).
        mirror_interval: seconds between two mirror passes when nothing wakes it sooner.
        mirror_hold_running: seconds a trial runs before the mirror shows it running in
            Optuna's tables (one that ends sooner is written once, whole, when it ends).
        max_body_bytes: the largest request body the controller reads; a larger one is
            answered 413 before any of it is parsed (a study spec is a few kilobytes).
    """

    model_config = SettingsConfigDict(env_prefix="HPO_", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workloads: dict[str, str] = Field(default_factory=dict)
    heartbeat_timeout: float = Field(default=90.0, gt=0)
    start_timeout: float = Field(default=600.0, gt=0)
    reap_interval: float = Field(default=5.0, gt=0)
    ray_address: str | None = None
    dispatch: bool = True
    public_url: str | None = None
    mirror: bool = True
    mirror_interval: float = Field(default=5.0, gt=0)
    mirror_hold_running: float = Field(default=10.0, ge=0)
    max_body_bytes: int = Field(default=MAX_BODY_BYTES, ge=1024)
