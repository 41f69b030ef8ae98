"""The log lines of ``hpo serve`` and ``hpo demo``: ``<time> <LEVEL> <logger> <message>``.

Only hpo's own loggers (``hpo.*``: dispatcher, reaper, API errors, the access log) and
uvicorn's are shown; what libraries log below WARNING (Alembic, Ray, Optuna) stays out, as
before. At ``info`` a request from an ordinary client logs one ``hpo.access`` line; the polls and
protocol calls of hpo's own dispatcher and workers are ``debug`` (see :mod:`api.access_log`).
"""

from __future__ import annotations

import logging
import sys

__all__ = ["DATE_FORMAT", "FORMAT", "LEVELS", "configure_logging"]

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
LEVELS = ("critical", "error", "warning", "info", "debug")
LOGGERS = ("hpo", "uvicorn")


def _rename_uvicorn_error(record: logging.LogRecord) -> bool:
    # uvicorn logs its startup and shutdown on "uvicorn.error"; an INFO line named so reads
    # like a failure
    if record.name == "uvicorn.error":
        record.name = "uvicorn"
    return True


def configure_logging(level: str = "info", *, handler: logging.Handler | None = None) -> None:
    """Send the ``hpo.*`` and uvicorn loggers to ``handler`` (stderr by default) at ``level``.

    Uvicorn's own level is set by the server (``Controller(log_level=...)``); this only gives
    its lines the same format.
    """
    if level.lower() not in LEVELS:
        raise ValueError(f"the log level is {level!r}, but must be one of {', '.join(LEVELS)}")
    handler = handler or logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
    handler.addFilter(_rename_uvicorn_error)
    for name in LOGGERS:
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.propagate = False
    logging.getLogger("hpo").setLevel(level.upper())
