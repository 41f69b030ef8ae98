"""Settings: one pydantic-settings class, env vars prefixed ``HPO_``, read once by whoever
builds the app (never at import time)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

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
        lease_seconds: how long the dispatcher's hold on a study lasts unless renewed (it
            renews on every pass): with several controllers on one database, the studies of
            one that stops without a word pass to the others after this long.
        mirror: keep Optuna's tables in step with ours, so that ``optuna.load_study`` works
            on this database (turn it off only if nothing reads Optuna's tables).
        mirror_interval: seconds between two mirror passes when nothing wakes it sooner.
        mirror_hold_running: seconds a trial runs before the mirror shows it running in
            Optuna's tables (one that ends sooner is written once, whole, when it ends).
        insecure_no_auth: serve without access control on any address (everyone is admin);
            never on a network others can reach.
        allowed_hosts: the ``Host`` names requests may be addressed to (``hpo.example.com``,
            ``*.example.com``); empty accepts any. With access control off, only loopback
            names are accepted anyway (a guard against DNS rebinding).
        admin_key: an admin API key to create at start if it does not exist (the first key
            of a container deployment); at least 32 random characters.
        admin_key_file: a file holding ``admin_key`` (a Docker or Kubernetes secret).
        session_hours: how long a dashboard sign-in lasts.
        data_dirs: the directories a workload option that names a file or directory (such as
            ``data_path``, ``text_path``, ``pretrained``) must lie in, once ``..`` and symlinks
            are resolved; absolute paths, as a JSON list (``HPO_DATA_DIRS='["/srv/data"]'``) or
            separated like ``PATH`` (``HPO_DATA_DIRS=/srv/data:/mnt/corpora``). None (the
            default) means no option may name a file; the built-in data (scikit-learn's
            digits, the stdlib sources ``charlm-gpt`` reads by default) needs no root.
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
    lease_seconds: float = Field(default=15.0, ge=1.0, le=3600.0)
    mirror: bool = True
    mirror_interval: float = Field(default=5.0, gt=0)
    mirror_hold_running: float = Field(default=10.0, ge=0)
    insecure_no_auth: bool = False
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    admin_key: SecretStr | None = None
    admin_key_file: Path | None = None
    session_hours: float = Field(default=12.0, gt=0, le=24 * 30)

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        """``HPO_ALLOWED_HOSTS=a.example.com,b.example.com`` (or a JSON list)."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [h.strip().lower() for h in text.split(",") if h.strip()]
        return value

    def bootstrap_admin_key(self) -> str | None:
        """The operator's first admin key (``HPO_ADMIN_KEY`` or ``HPO_ADMIN_KEY_FILE``)."""
        if self.admin_key is not None:
            return self.admin_key.get_secret_value().strip() or None
        if self.admin_key_file is not None:
            return self.admin_key_file.read_text(encoding="utf-8").strip() or None
        return None

    data_dirs: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("data_dirs", mode="before")
    @classmethod
    def _split_dirs(cls, value: Any) -> Any:
        """A JSON list, or directories separated by ``os.pathsep``, as operators type them."""
        if not isinstance(value, str):
            return value
        if value.lstrip().startswith("["):
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"HPO_DATA_DIRS starts with '[' but is not a JSON list ({exc.msg}); give "
                    f"a JSON list of strings, or directories separated by {os.pathsep!r}"
                ) from None
        return value.split(os.pathsep)

    @field_validator("data_dirs")
    @classmethod
    def _absolute_dirs(cls, dirs: list[str]) -> list[str]:
        dirs = [d for d in dirs if d.strip()]  # "/a::/b" or a trailing separator
        relative = [d for d in dirs if not os.path.isabs(d)]
        if relative:
            raise ValueError(
                f"HPO_DATA_DIRS holds {', '.join(map(repr, relative))}, but every data root "
                "must be an absolute path (a worker on another machine or in another working "
                "directory would read a relative one elsewhere)"
            )
        return [os.path.normpath(d) for d in dirs]

    max_body_bytes: int = Field(default=MAX_BODY_BYTES, ge=1024)
