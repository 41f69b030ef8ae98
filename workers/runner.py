"""What runs inside one Ray task: one attempt at one trial, spoken over the trial protocol.

The runner needs the controller's URL and the trial's token, never the database. It says
where it runs (host, pid, ``CUDA_VISIBLE_DEVICES``) in a first heartbeat, keeps a heartbeat
going while the workload trains, and ends the attempt with ``complete`` or ``fail``; a
controller that restarts meanwhile is waited for, so a trial survives it.

Before the workload starts, its file options are checked again against the data roots the
dispatcher passed on (:func:`hpo.data_roots.confine_options`), and a failure reason is
scrubbed of this process's environment values and URL passwords (:func:`hpo.redact.scrub`)
before it is sent.
"""

from __future__ import annotations

import inspect
import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import hpo
from hpo.client import Client, HPOClientError, Trial
from hpo.data_roots import OutsideDataRoots, confine_options
from hpo.redact import scrub
from hpo.schemas import TrialAssignment

from .workloads import InvalidHyperparameters, NonFiniteLoss, resolve

log = logging.getLogger("hpo.worker")
T = TypeVar("T")


class TrialStopped(Exception):
    """The controller ended this attempt (early stop, cancel, or a newer attempt took over)."""


@dataclass
class TrialJob:
    """Everything a worker needs to run one attempt; built by the dispatcher."""

    controller_url: str
    assignment: TrialAssignment
    workload: str
    options: dict[str, Any] = field(default_factory=dict)
    max_epochs: int = 10
    seed: int = 0
    heartbeat_interval: float = 30.0
    #: how long to keep retrying a controller that does not answer (it may be restarting)
    patience: float = 300.0
    registered: Mapping[str, str] = field(default_factory=dict)
    #: the API key the worker presents besides the trial's token (a worker key)
    api_key: str | None = None
    #: the controller's data roots (``HPO_DATA_DIRS``): the one list the operator configured,
    #: also on worker nodes that do not share the controller's environment
    data_dirs: tuple[str, ...] = ()
    #: the Ray node the attempt runs on (set by the Ray task), recorded with the worker
    node: str = ""


class ProtocolReporter:
    """The reporter handed to a workload: reports with retries, obeys stop at once."""

    def __init__(self, trial: Trial, patience: float) -> None:
        self._trial = trial
        self._patience = patience
        self._lock = threading.Lock()
        self.stopped = False
        self.last_metrics: dict[str, float] = {}

    def call(self, action: Callable[[], T]) -> T:
        """Run one protocol call, waiting out a controller that is down or restarting."""
        deadline = time.monotonic() + self._patience
        delay = 0.5
        while True:
            try:
                with self._lock:
                    return action()
            except HPOClientError as exc:
                if exc.status_code in (403, 409):
                    self.stopped = True
                    raise TrialStopped(exc.message) from exc
                if exc.status_code not in (0, 502, 503, 504) or time.monotonic() > deadline:
                    raise
                log.warning("controller unreachable (%s); retrying in %.1f s", exc.message, delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def report(self, step: int, metrics: dict[str, float]) -> bool:
        if self.stopped:
            raise TrialStopped("the controller already stopped this trial")
        self.last_metrics = dict(metrics)
        self.stopped = self.call(lambda: self._trial.report(step, metrics))
        return self.stopped


def _failure_kind(exc: BaseException) -> str:
    if isinstance(exc, NonFiniteLoss):
        return "nonfinite"
    # torch.cuda.OutOfMemoryError, or the synthetic workload's stand-in without torch
    if type(exc).__name__ == "OutOfMemoryError":
        return "oom"
    return "exception"


def failure_reason(exc: BaseException) -> str:
    """What the controller is told: the error and, unless it is the study's own mistake, its
    traceback (file, line, function); never a byte of a file or a value of the environment."""
    _drop_undecodable_bytes(exc)
    reason = f"{type(exc).__name__}: {exc}"
    if not isinstance(exc, (InvalidHyperparameters, OutsideDataRoots)):
        reason += "\n" + "".join(traceback.format_exception(exc))
    return scrub(reason)


def _drop_undecodable_bytes(exc: BaseException) -> None:
    """A UnicodeDecodeError's message quotes the byte it could not decode, a byte of whatever
    file a library was reading; without its ``object`` it gives the position only."""
    pending: list[BaseException | None] = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, UnicodeDecodeError):
            current.object = b""
        pending += [current.__cause__, current.__context__]


def _heartbeats(
    reporter: ProtocolReporter, trial: Trial, every: float, done: threading.Event
) -> None:
    while not done.wait(every):
        try:
            if reporter.call(trial.heartbeat):
                reporter.stopped = True
        except TrialStopped:
            return
        except Exception:  # a missed heartbeat is not fatal; the next one may get through
            log.warning("heartbeat failed", exc_info=True)


def _call(train: Callable[..., Any], params: dict[str, Any], reporter: Any, **extra: Any) -> Any:
    """Call a workload with the keywords it accepts: a registered workload may take just
    ``(params, reporter)``."""
    signature = inspect.signature(train)
    takes_all = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    accepted = {k: v for k, v in extra.items() if takes_all or k in signature.parameters}
    return train(params, reporter, **accepted)


def run(job: TrialJob) -> str:
    """Run one attempt to its end; returns ``completed``, ``stopped`` or ``failed``."""
    client = Client(
        job.controller_url,
        timeout=60,
        user_agent=f"hpo-worker/{hpo.__version__}",
        api_key=job.api_key or "",
    )
    trial = client.attach(job.assignment)
    reporter = ProtocolReporter(trial, job.patience)
    where = f"{socket.gethostname()}:{os.getpid()}"
    if job.node:  # several Ray nodes may share a host: say which one
        where += f" node {job.node[:12]}"
    done = threading.Event()
    try:
        reporter.call(
            lambda: trial.heartbeat(worker=where, gpus=os.environ.get("CUDA_VISIBLE_DEVICES", ""))
        )
        beat = threading.Thread(
            target=_heartbeats, args=(reporter, trial, job.heartbeat_interval, done), daemon=True
        )
        beat.start()
        options = confine_options(job.workload, job.options, job.data_dirs)
        train = resolve(job.workload, job.registered)
        final = _call(
            train,
            dict(job.assignment.params),
            reporter,
            options=options,
            max_epochs=job.max_epochs,
            seed=job.seed,
        )
        if reporter.stopped:
            return "stopped"
        reporter.call(lambda: trial.complete(final or reporter.last_metrics))
        return "completed"
    except TrialStopped:
        return "stopped"
    except Exception as exc:  # the trial's own failure: record it, the study goes on
        reason = failure_reason(exc)
        kind = _failure_kind(exc)
        try:
            reporter.call(lambda: trial.fail(reason[-20000:], kind=kind))
        except TrialStopped:
            return "stopped"
        return "failed"
    finally:
        done.set()
        client.close()
