"""The dispatcher: keeps every running study's trials in flight on Ray.

For each running study whose workload is built in or registered, it keeps up to
``budget.parallelism`` trials running, each one Ray task with the study's ``num_gpus`` and
``num_cpus``; Ray's placement picks the GPU and sets ``CUDA_VISIBLE_DEVICES``. It speaks to the
controller only over REST (:class:`hpo.client.Client`), like any worker: the controller decides
what to run (ask), when a run is lost (heartbeats) and whether to retry it.

A task whose process dies (killed, node lost) is reported as ``crash``/``node_lost`` and the
controller retries the trial; a study that is cancelled or deleted has its tasks cancelled.

With several controllers on one database, each dispatcher fills only the studies it holds
(a lease it renews every pass, ``POST /api/v1/leases``; the controller shares the running
studies out among the dispatchers), and tells the controller why a held study's trials wait
(no alive node large enough for one trial), which the study's page shows.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import socket
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import ray
import ray.exceptions

import hpo
from hpo.client import Client, HPOClientError
from hpo.redact import scrub
from hpo.schemas import StudyPublic, TrialAssignment
from hpo.workloads import BUILTIN as CATALOG

from . import runner

log = logging.getLogger("hpo.dispatcher")


@ray.remote(max_retries=0)
def run_trial_task(job: runner.TrialJob) -> str:
    """One attempt at one trial, as a Ray task (the controller does the retrying)."""
    job.node = ray.get_runtime_context().get_node_id()
    return runner.run(job)


def why_waiting(gpus: float, cpus: float, nodes: Sequence[Mapping[str, Any]]) -> str | None:
    """None when some alive Ray node has the GPUs and CPUs one trial asks for (``ray.nodes()``
    entries); else why the study's trials wait. Ray places a task on one node, so a cluster
    whose GPUs add up but are spread over smaller nodes cannot run it either."""
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive", n.get("alive", False))]
    for res in alive:
        if res.get("GPU", 0.0) + 1e-9 >= gpus and res.get("CPU", 0.0) + 1e-9 >= cpus:
            return None
    wanted = f"{gpus:g} GPU{'s' if gpus != 1 else ''} and {cpus:g} CPU{'s' if cpus != 1 else ''}"
    if not any(res.get("GPU", 0.0) > 0 for res in alive) and gpus > 0:
        have = f"none of its {len(alive)} alive node{'s' if len(alive) != 1 else ''} has a GPU"
    else:
        most_gpus = max((res.get("GPU", 0.0) for res in alive), default=0.0)
        most_cpus = max((res.get("CPU", 0.0) for res in alive), default=0.0)
        have = (
            f"its {len(alive)} alive node{'s' if len(alive) != 1 else ''} have at most "
            f"{most_gpus:g} GPUs and {most_cpus:g} CPUs each"
        )
    return f"waiting for a Ray node with {wanted} for one trial: {have}"


@dataclass
class InFlight:
    study: str
    assignment: TrialAssignment
    gpus: float
    cpus: float


def trial_seed(study_seed: int | None, number: int) -> int:
    return ((study_seed or 0) * 1_000_003 + number) % (2**31)


def asks_left(study: StudyPublic, now: datetime) -> int | None:
    """How many asks of ``study`` can succeed now, by what the listing says (``None``: no
    limit): the retries waiting for a worker plus the trials the budget has not handed out
    (none while its compute budget has no room for a new trial), none once the study's
    wall-clock budget is spent (the controller closes it then).

    Asking beyond that only earns a 409, a wasted transaction, and a line in the log.
    """
    limit = study.spec.budget.max_wall_seconds
    created = study.created_at
    if created.tzinfo is None:  # the controller speaks UTC
        created = created.replace(tzinfo=timezone.utc)
    if limit is not None and (now - created).total_seconds() >= limit:
        return 0
    waiting = study.trial_counts.get("pending", 0)
    if study.budget_used is not None and not study.budget_used.room_for_a_trial:
        return waiting  # the compute budget holds no new trial beside those in flight
    if study.size is None:
        return None
    return max(study.size - study.n_trials, 0) + waiting


class Dispatcher:
    """Runs studies' trials on Ray until stopped.

    Args:
        controller_url: where this controller's REST API answers (workers use it too).
        registered: operator-registered workloads, name -> ``module:function``.
        data_dirs: the controller's data roots, passed to every worker, which checks the
            study's file options against them again before reading.
        ray_address: a Ray cluster to join; ``None`` starts a local Ray (or uses the one this
            process already initialized).
        poll_interval: seconds between two passes.
        heartbeat_timeout: the controller's; workers heartbeat three times within it.
        name: this dispatcher's name, under which it holds studies (leases).
        lease_seconds: how long a hold on a study lasts unless renewed (every pass).
        api_key: the worker key the dispatcher and its trials present (the controller makes
            one of its own for its built-in dispatcher); by default ``HPO_API_KEY``.
    """

    def __init__(
        self,
        controller_url: str,
        *,
        registered: Mapping[str, str] | None = None,
        data_dirs: Sequence[str] = (),
        ray_address: str | None = None,
        poll_interval: float = 0.5,
        heartbeat_timeout: float = 90.0,
        http: Any = None,
        api_key: str | None = None,
        name: str | None = None,
        lease_seconds: float = 15.0,
    ) -> None:
        self.controller_url = controller_url.rstrip("/")
        self.registered = dict(registered or {})
        self.data_dirs = tuple(data_dirs)
        self.ray_address = ray_address
        self.poll_interval = poll_interval
        self.heartbeat_interval = max(heartbeat_timeout / 3, 0.2)
        self.client = Client(
            self.controller_url,
            http=http,
            user_agent=f"hpo-dispatcher/{hpo.__version__}",
            api_key=api_key,
        )
        self.api_key = self.client.api_key
        host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:32] or "host"
        self.name = name or f"dispatcher@{host}-{os.getpid()}-{secrets.token_hex(3)}"
        self.lease_seconds = lease_seconds
        #: the studies this dispatcher holds (their leases), from its last pass
        self.held: set[str] = set()
        self.inflight: dict[ray.ObjectRef, InFlight] = {}
        #: study name -> why its trials wait for the Ray cluster (none: they do not)
        self.waiting: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # lifecycle
    def start(self) -> None:
        if not ray.is_initialized():
            ray.init(address=self.ray_address, include_dashboard=False, log_to_driver=False)
        self._thread = threading.Thread(target=self._loop, name="hpo-dispatcher", daemon=True)
        self._thread.start()

    def stop(self, *, cancel: bool = False) -> None:
        """Stop dispatching; with ``cancel`` also kill the trials in flight (else they go on
        and keep reporting to the controller)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if cancel:
            for ref in self._unfinished(list(self.inflight)):
                ray.cancel(ref, force=True)
        try:  # the other controllers take its studies now, not when the leases run out
            self.client.release_studies(self.name)
        except HPOClientError as exc:
            log.warning("could not give back the studies it held: %s", exc.message)
        self.client.close()

    def _loop(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                self.tick()
                if failing:
                    log.info("dispatcher resumed: the controller answers again")
                failing = False
            except HPOClientError as exc:
                if not failing:  # once per outage, not twice a second
                    log.warning("dispatcher paused, retrying quietly: %s", exc.message)
                failing = True
            except Exception:
                log.exception("dispatcher pass failed")
            self._wait()

    def _wait(self) -> None:
        """Until a trial ends (then refill at once) or ``poll_interval`` passes."""
        if self.inflight:
            ray.wait(list(self.inflight), num_returns=1, timeout=self.poll_interval)
        else:
            self._stop.wait(self.poll_interval)

    # one pass
    def tick(self) -> None:
        self._collect()
        running = {s.name: s for s in self.client.list_studies(status="running")}
        self._cancel_orphans(running)
        ours = sorted((s for s in running.values() if self._runs_here(s)), key=lambda s: s.id)
        self.waiting = self._why_waiting(ours, ray.nodes())  # told with the lease's renewal
        grant = self.client.claim_studies(
            self.name,
            [s.name for s in ours],
            waiting=dict(self.waiting),
            ttl_seconds=self.lease_seconds,
        )
        gained = set(grant.studies) - self.held
        lost = (self.held - set(grant.studies)) & set(running)  # to another dispatcher
        if gained or lost:
            log.info(
                "dispatching %d of the running studies (dispatchers sharing them: %d)%s%s",
                len(grant.studies),
                grant.dispatchers,
                f"; took {', '.join(sorted(gained))}" if gained else "",
                f"; gave up {', '.join(sorted(lost))}" if lost else "",
            )
        self.held = set(grant.studies)
        for study in ours:
            if study.name in self.held and study.name not in self.waiting:
                self._fill(study)

    def _runs_here(self, study: StudyPublic) -> bool:
        name = study.spec.workload.name
        return name in CATALOG or name in self.registered

    def _fill(self, study: StudyPublic) -> None:
        res = study.spec.resources
        slots = study.spec.budget.parallelism - study.trial_counts.get("running", 0)
        left = asks_left(study, datetime.now(timezone.utc))
        for _ in range(slots if left is None else min(slots, left)):
            if not self._fits(res.gpus_per_trial, res.cpus_per_trial):
                return
            try:
                assignment = self.client.ask(study.name, worker="dispatcher")
            except HPOClientError as exc:
                if exc.status_code == 409:  # the study ended, or another asker took the rest
                    return
                raise
            self._launch(study, assignment.assignment)

    def _why_waiting(
        self, studies: Sequence[StudyPublic], nodes: Sequence[Mapping[str, Any]]
    ) -> dict[str, str]:
        """Why each study's trials wait (no alive node could run one trial), by study name;
        a reason is logged when it is new."""
        waiting: dict[str, str] = {}
        for study in studies:
            res = study.spec.resources
            reason = why_waiting(res.gpus_per_trial, res.cpus_per_trial, nodes)
            if reason is None:
                continue
            if self.waiting.get(study.name) != reason:
                log.warning("study %s: %s", study.name, reason)
            waiting[study.name] = reason
        return waiting

    def _fits(self, gpus: float, cpus: float) -> bool:
        total = ray.cluster_resources()
        used_gpus = sum(f.gpus for f in self.inflight.values())
        used_cpus = sum(f.cpus for f in self.inflight.values())
        return (used_gpus + gpus <= total.get("GPU", 0.0) + 1e-9) and (
            used_cpus + cpus <= total.get("CPU", 0.0) + 1e-9
        )

    def _launch(self, study: StudyPublic, assignment: TrialAssignment) -> None:
        spec = study.spec
        job = runner.TrialJob(
            controller_url=self.controller_url,
            assignment=assignment,
            workload=spec.workload.name,
            options=spec.workload.options,
            max_epochs=spec.budget.max_epochs,
            seed=trial_seed(spec.algorithm.seed, assignment.number),
            heartbeat_interval=self.heartbeat_interval,
            registered=self.registered,
            api_key=self.api_key,
            data_dirs=self.data_dirs,
        )
        ref = run_trial_task.options(
            num_gpus=spec.resources.gpus_per_trial,
            num_cpus=spec.resources.cpus_per_trial,
            name=f"hpo:{study.name}:{assignment.number}:{assignment.attempt}",
        ).remote(job)
        self.inflight[ref] = InFlight(
            study.name, assignment, spec.resources.gpus_per_trial, spec.resources.cpus_per_trial
        )
        log.info(
            "trial %s/%d attempt %d dispatched", study.name, assignment.number, assignment.attempt
        )

    def _collect(self) -> None:
        if not self.inflight:
            return
        done, _ = ray.wait(list(self.inflight), num_returns=len(self.inflight), timeout=0)
        for ref in done:
            flight = self.inflight.pop(ref)
            try:
                ray.get(ref)
            except ray.exceptions.TaskCancelledError:
                pass
            except ray.exceptions.RayError as exc:
                self._report_lost(flight, exc)

    def _report_lost(self, flight: InFlight, exc: Exception) -> None:
        kind = "node_lost" if isinstance(exc, ray.exceptions.NodeDiedError) else "crash"
        # a Ray error carries the worker's traceback; cut after scrubbing, so no secret is cut
        # into a piece the scrubber cannot recognise
        reason = f"the worker process died: {type(exc).__name__}: {scrub(str(exc))[:2000]}"
        try:
            self.client.attach(flight.assignment).fail(reason, kind=kind)
            log.warning(
                "trial %s/%d lost (%s); the controller retries it",
                flight.study,
                flight.assignment.number,
                kind,
            )
        except HPOClientError as err:  # already ended: completed, cancelled or retried
            if err.status_code not in (403, 409, 404):
                raise

    def _cancel_orphans(self, running: Mapping[str, StudyPublic]) -> None:
        """Kill the tasks of studies that were cancelled or deleted.

        A task of a study that *completed* is left to end by itself: its trial is over and
        it is returning (or will at its next call, which the controller answers with stop).
        Killing a task at the moment it returns trips an assertion inside Ray that takes the
        whole driver process down with it, this controller included; so do tasks that have
        already finished.
        """
        orphans = [ref for ref, flight in self.inflight.items() if flight.study not in running]
        statuses: dict[str, str] = {}
        for ref in self._unfinished(orphans):
            flight = self.inflight[ref]
            if flight.study not in statuses:
                statuses[flight.study] = self._status(flight.study)
            if statuses[flight.study] == "completed":
                continue
            ray.cancel(ref, force=True)
            self.inflight.pop(ref)
            log.info("trial %s/%d cancelled with its study", flight.study, flight.assignment.number)

    def _status(self, study: str) -> str:
        try:
            return str(self.client.get_study(study).status)
        except HPOClientError as exc:
            if exc.status_code == 404:
                return "deleted"
            raise

    @staticmethod
    def _unfinished(refs: list[ray.ObjectRef]) -> list[ray.ObjectRef]:
        if not refs:
            return []
        _, pending = ray.wait(refs, num_returns=len(refs), timeout=0)
        return list(pending)
