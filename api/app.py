"""The app factory: ``create_app(settings)`` builds a FastAPI app against one database."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import hpo
from hpo.service import ensure_key
from hpo.settings import Settings
from hpo.storage import Database

from . import errors
from .access_log import AccessLogMiddleware
from .auth import AllowedHostsMiddleware, Gate
from .background import Mirror, Reaper, warm_up
from .compression import ReadsGZipMiddleware
from .headers import SecurityHeadersMiddleware
from .limits import BodyLimitMiddleware
from .routes import dispatch, figures, keys, meta, pages, studies, trials

log = logging.getLogger("hpo.controller")


def create_app(settings: Settings | None = None, *, db: Database | None = None) -> FastAPI:
    """Build the controller app.

    Args:
        settings: defaults to :class:`hpo.settings.Settings` read from ``HPO_*`` env vars.
        db: an already open database; by default one is opened at ``settings.database_url``
            and migrated to the current schema.
    """
    settings = settings or Settings()
    database = db or Database(settings.database_url)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        reaper = Reaper(
            database,
            heartbeat_timeout=settings.heartbeat_timeout,
            start_timeout=settings.start_timeout,
            interval=settings.reap_interval,
        )
        mirror = (
            Mirror(
                database,
                interval=settings.mirror_interval,
                hold_running=settings.mirror_hold_running,
            )
            if settings.mirror
            else None
        )
        admin_key = settings.bootstrap_admin_key()
        if admin_key is not None and ensure_key(
            database, name="admin", role="admin", secret=admin_key
        ):
            log.info("created the admin API key named 'admin' from HPO_ADMIN_KEY")
        reaper.start()
        if mirror is not None:
            mirror.start()
        warm_up()
        try:
            yield
        finally:
            reaper.stop()
            if mirror is not None:
                mirror.stop()

    app = FastAPI(
        lifespan=lifespan,
        title="hpo",
        version=hpo.__version__,
        description="Hyperparameter optimization service: studies, trials and the trial "
        "protocol (ask, report, complete, fail).",
    )
    app.state.settings = settings
    app.state.db = database
    app.state.gate = Gate(database, settings)
    errors.install(app)
    # figures and plotly.js compress 3-5x; the dashboard should open quickly on a slow link too
    app.add_middleware(ReadsGZipMiddleware, minimum_size=2048)
    if settings.allowed_hosts:
        app.add_middleware(AllowedHostsMiddleware, hosts=settings.allowed_hosts)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(AccessLogMiddleware)  # outermost of ours: its duration includes gzip
    app.include_router(studies.router)
    app.include_router(trials.router)
    app.include_router(meta.router)
    app.include_router(figures.router)
    app.include_router(keys.router)
    app.include_router(dispatch.router)
    app.include_router(pages.router)
    return app
