"""The controller's own periodic work: reaping lost trials, and the Optuna mirror."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime

from hpo import service
from hpo.storage import Database, utcnow

from .errors import UNAVAILABLE

log = logging.getLogger("hpo.reaper")
mirror_log = logging.getLogger("hpo.mirror")


class _Loop:
    """A daemon thread calling ``self.tick()`` until stopped."""

    name = "hpo-loop"

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _wake(self) -> None:
        pass

    def _wait(self) -> None:
        self._stop.wait(self._interval)

    def _run(self) -> None:
        while True:
            self._wait()
            if self._stop.is_set():
                return
            self.tick()

    def tick(self) -> None:
        raise NotImplementedError


class Reaper(_Loop):
    """Calls :func:`hpo.service.reap` every ``interval`` seconds.

    While the database is unreachable no worker can be heard from either, so once it is back
    the reaper counts silence from that moment, not from the workers' last heartbeat before
    the outage.
    """

    name = "hpo-reaper"

    def __init__(
        self, db: Database, *, heartbeat_timeout: float, start_timeout: float, interval: float
    ) -> None:
        super().__init__(interval)
        self._db = db
        self._timeout = heartbeat_timeout
        self._start_timeout = start_timeout
        self._down_since: float | None = None
        self.silent_since: datetime | None = None

    def tick(self) -> None:
        # the first pass after an outage already counts silence from now
        since = utcnow() if self._down_since is not None else self.silent_since
        try:
            ended = service.reap(
                self._db,
                heartbeat_timeout=self._timeout,
                start_timeout=self._start_timeout,
                silent_since=since,
            )
        except UNAVAILABLE as exc:
            if self._down_since is None:
                self._down_since = time.monotonic()
                log.warning("database unreachable; lost trials wait until it is back (%s)", exc)
            return
        except Exception:  # keep reaping; one bad pass must not stop the controller
            log.exception("reaper pass failed")
            return
        if self._down_since is not None:
            down = time.monotonic() - self._down_since
            self._down_since = None
            self.silent_since = since
            log.warning("database reachable again after %.0f s; reaping resumes", down)
        if ended:
            log.info("reaper ended %d lost run(s) or finished studies", ended)


class Mirror(_Loop):
    """Keeps Optuna's tables in step with ours (:func:`hpo.service.sync_optuna`): soon after
    every committed change, and every ``interval`` seconds in case another controller or a
    crashed pass left work behind.

    Writing a trial through Optuna's storage costs the controller several milliseconds, more
    than the calls that made the trial. So the mirror takes turns of at most ``TURN`` trials
    and rests after each turn, so as to be busy at most ``share`` of the time: under heavy
    load Optuna's view lags behind (hpo itself never reads it) and catches up afterwards.
    """

    name = "hpo-mirror"
    #: a pass also looks for Optuna studies of deleted studies this often
    SWEEP_S = 300.0
    #: changes that arrive within this long are mirrored in one pass
    BATCH_S = 0.5
    #: trials one turn writes at most
    TURN = 50

    def __init__(
        self, db: Database, *, interval: float, hold_running: float = 0.0, share: float = 0.2
    ) -> None:
        super().__init__(interval)
        self._db = db
        self._hold = hold_running
        self._share = share
        self._rest = 0.0
        self._last_sweep = time.monotonic()
        self._failing = False
        self._last_written = 0

    def _wake(self) -> None:
        self._db.changed.set()

    def _wait(self) -> None:
        if self._stop.wait(self._rest):
            return
        if self._rest > 0 and self._last_written >= self.TURN:
            return  # more is waiting: the next turn, without waiting for a change
        if self._db.changed.wait(self._interval):
            self._stop.wait(self.BATCH_S)
        self._db.changed.clear()

    def tick(self) -> None:
        sweep = time.monotonic() - self._last_sweep > self.SWEEP_S
        started = time.monotonic()
        try:
            written = service.sync_optuna(
                self._db, sweep=sweep, hold_running=self._hold, limit=self.TURN
            )
        except UNAVAILABLE as exc:
            if not self._failing:
                mirror_log.warning("Optuna mirror paused: database unreachable (%s)", exc)
            self._failing = True
            return
        except Exception:
            mirror_log.exception("Optuna mirror pass failed; the next pass retries")
            self._failing = True
            return
        busy = time.monotonic() - started
        self._rest = busy * (1 - self._share) / self._share
        self._last_written = written
        if sweep:
            self._last_sweep = time.monotonic()
        if self._failing:
            mirror_log.info("Optuna mirror resumed")
        self._failing = False
        if written:
            mirror_log.debug("Optuna mirror wrote %d studies and trials", written)


def warm_up() -> None:
    """Import what the first dashboard view would otherwise wait for (Optuna's importance
    module pulls in scikit-learn: about 4 s here), on a daemon thread after start-up."""

    def _load() -> None:
        try:
            from dashboards.views import preload

            preload()
        except Exception:  # only a warm-up: the view imports it again and reports any error
            log.debug("warm-up import failed", exc_info=True)

    threading.Thread(target=_load, name="hpo-warm-up", daemon=True).start()
