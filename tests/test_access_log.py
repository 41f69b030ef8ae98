"""The access log: one line per request on ``hpo.access``, quiet for hpo's own components,
and the format ``hpo serve`` prints it in."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from api.access_log import AccessLogMiddleware
from controller.logs import configure_logging

DISPATCHER = {"User-Agent": "hpo-dispatcher/0.1.0"}
WORKER = {"User-Agent": "hpo-worker/0.1.0"}


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def lines(self, level: int = logging.DEBUG) -> list[tuple[str, str]]:
        return [(r.levelname, r.getMessage()) for r in self.records if r.levelno >= level]


@pytest.fixture
def access() -> Iterator[Records]:
    """Every ``hpo.access`` record, DEBUG included."""
    logger = logging.getLogger("hpo.access")
    handler, level = Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide loggers; put them back for the other tests."""
    saved = {
        name: (lg.handlers[:], lg.level, lg.propagate)
        for name in ("hpo", "uvicorn")
        for lg in [logging.getLogger(name)]
    }
    yield
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


def _toy_app() -> AccessLogMiddleware:
    async def ok(_: object) -> PlainTextResponse:
        return PlainTextResponse("ok")

    async def unavailable(_: object) -> PlainTextResponse:
        return PlainTextResponse("down", status_code=503)

    async def boom(_: object) -> PlainTextResponse:
        raise RuntimeError("boom")

    routes = [Route("/ok", ok), Route("/unavailable", unavailable), Route("/boom", boom)]
    return AccessLogMiddleware(Starlette(routes=routes))


def test_ordinary_requests_are_info_and_hpos_own_are_debug(api, access):
    assert api.get("/api/v1/studies?status=running", headers=DISPATCHER).status_code == 200
    assert api.get("/api/v1/studies/nope", headers=WORKER).status_code == 404
    assert api.get("/api/v1/studies?limit=5", headers={"User-Agent": "curl/8.5"}).status_code == 200
    lines = access.lines()
    assert [level for level, _ in lines] == ["DEBUG", "DEBUG", "INFO"]
    assert re.fullmatch(r"GET /api/v1/studies\?status=running 200 \d+\.\d ms", lines[0][1])
    assert re.fullmatch(r"GET /api/v1/studies/nope 404 \d+\.\d ms", lines[1][1])
    assert re.fullmatch(r"GET /api/v1/studies\?limit=5 200 \d+\.\d ms", lines[2][1])
    record = access.records[2]
    assert (record.method, record.status, record.user_agent) == ("GET", 200, "curl/8.5")  # type: ignore[attr-defined]


def test_server_errors_are_warnings_whoever_asked(access):
    with TestClient(_toy_app(), base_url="http://localhost", raise_server_exceptions=False) as http:
        assert http.get("/ok", headers=DISPATCHER).status_code == 200
        assert http.get("/unavailable", headers={"User-Agent": "curl/8.5"}).status_code == 503
        # a 503 to our own components means the database is away, which the controller
        # says once per outage: one line per poll would drown it
        assert http.get("/unavailable", headers=DISPATCHER).status_code == 503
    assert [level for level, _ in access.lines()] == ["DEBUG", "WARNING", "DEBUG"]


def test_an_exception_that_escapes_the_app_is_an_error_line(access):
    with TestClient(_toy_app(), base_url="http://localhost", raise_server_exceptions=False) as http:
        assert http.get("/boom", headers=WORKER).status_code == 500
    [(level, message)] = access.lines()
    assert level == "ERROR" and message.startswith("GET /boom 500 ")


def test_a_path_cannot_forge_a_log_line(access):
    with TestClient(_toy_app(), base_url="http://localhost") as http:
        http.get("/ok%0A2026-01-01 00:00:00 INFO hpo.access GET /admin 200")
    [(_, message)] = access.lines()
    assert "\n" not in message and message.startswith("GET /ok%0A2026")


def test_serve_prints_timestamp_level_and_logger_and_hides_its_own_polls(api, restore_logging):
    out = io.StringIO()
    configure_logging("info", handler=logging.StreamHandler(out))
    api.get("/api/v1/studies?status=running", headers=DISPATCHER)
    api.get("/api/v1/studies/nope", headers=WORKER)
    api.get("/healthz", headers={"User-Agent": "curl/8.5"})
    logging.getLogger("hpo.dispatcher").info("trial s/3 attempt 1 dispatched")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
    assert re.fullmatch(rf"{stamp} INFO hpo\.access GET /healthz 200 \d+\.\d ms", lines[0])
    assert re.fullmatch(rf"{stamp} INFO hpo\.dispatcher trial s/3 attempt 1 dispatched", lines[1])


def test_log_level_debug_shows_every_request(api, restore_logging):
    out = io.StringIO()
    configure_logging("debug", handler=logging.StreamHandler(out))
    api.get("/api/v1/studies?status=running", headers=DISPATCHER)
    assert " DEBUG hpo.access GET /api/v1/studies?status=running 200 " in out.getvalue()


def test_an_unknown_log_level_is_refused(restore_logging):
    with pytest.raises(ValueError, match="must be one of critical, error, warning, info, debug"):
        configure_logging("loud")
