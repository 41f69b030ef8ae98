"""The controller's own periodic work: reaping lost trials and studies out of time."""

from __future__ import annotations

import logging
import threading

from hpo import service
from hpo.storage import Database

log = logging.getLogger("hpo.reaper")


class Reaper:
    """Calls :func:`hpo.service.reap` every ``interval`` seconds on a daemon thread."""

    def __init__(
        self, db: Database, *, heartbeat_timeout: float, start_timeout: float, interval: float
    ) -> None:
        self._db = db
        self._timeout = heartbeat_timeout
        self._start_timeout = start_timeout
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="hpo-reaper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                ended = service.reap(
                    self._db, heartbeat_timeout=self._timeout, start_timeout=self._start_timeout
                )
                if ended:
                    log.info("reaper ended %d lost run(s) or timed-out studies", ended)
            except Exception:  # keep reaping; one bad pass must not stop the controller
                log.exception("reaper pass failed")


def warm_up() -> None:
    """Import what the first dashboard view would otherwise wait for (Optuna's importance
    module pulls in scikit-learn: about 4 s here), on a daemon thread after start-up."""

    def _load() -> None:
        try:
            import optuna.importance  # noqa: F401

            import dashboards.figures  # noqa: F401
        except Exception:  # only a warm-up: the view imports it again and reports any error
            log.debug("warm-up import failed", exc_info=True)

    threading.Thread(target=_load, name="hpo-warm-up", daemon=True).start()
