"""Trial protocol under load: reports/s, asks and their latencies, next to ``GET /healthz``.

The controller runs as its own process (``uvicorn api.app:create_app --factory``, the REST API
only: no Ray, no dispatcher) on a fresh PostgreSQL database, and an asyncio load generator in
this process speaks the real trial protocol to it over loopback HTTP:

- ``healthz``: N loops calling ``GET /healthz`` back to back, the stack's ceiling at that
  concurrency (one route, one ``SELECT 1``).
- ``reports-asha`` / ``reports-none``: N workers, each asking a trial, reporting step 1, 2, ...
  as fast as it can (a metric that depends on the parameters, so ASHA really prunes) until
  ``should_stop`` or ``max_epochs``, completing it, then asking the next; ASHA on
  (``reduction_factor: 3, grace_period: 1``), then early stopping off.
- ``asks-random`` / ``asks-tpe``: ``--asks`` asks fired at once at a fresh random study, and at
  a fresh TPE study that first gets ``--history`` completed trials through the protocol.

Latency is each request's wall time seen by the caller, for every request started in the
measured window (after ``--warmup`` and, in a reports phase, once every worker holds a trial;
those still running at its end are waited for, so slow ones count); errors (resets, timeouts,
HTTP 4xx/5xx) count there too. Throughput is the requests answered with success inside the
window over its length. CPU columns are % of one core over the window: this load generator,
the controller process, PostgreSQL (throwaway server only) and everything else on the machine
(other people's work: a high figure means noisy numbers).

    python benchmarks/protocol_load.py [--quick] [--phases healthz,reports-asha,...]
        [--concurrency 20,200] [--postgres-url URL] [--json PATH]

Without ``--postgres-url`` (or ``HPO_BENCH_POSTGRES_URL``) a throwaway PostgreSQL is started
(tests/_postgres.py, binaries on PATH); either way the run gets a database of its own, dropped
at the end. The HTTP client is aiohttp (``pip install -e ".[bench]"``): httpx's async
connection pool spends milliseconds of CPU per request at 200 connections and would measure
itself; ``--client httpx`` runs with it anyway, for comparison. Not a test: it prints figures
and target checks and never fails on a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

PHASES = ("healthz", "reports-asha", "reports-none", "asks-random", "asks-tpe")
OBJECTIVE = "val_loss"
SEARCH_SPACE: dict[str, Any] = {
    "x": {"type": "float", "low": 0.0, "high": 1.0},
    "learning_rate": {"type": "float", "low": 1.0e-5, "high": 1.0e-1, "log": True},
    "num_layers": {"type": "int", "low": 1, "high": 8},
    "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
}
#: uvicorn closes idle keep-alive connections after 5 s; reuse ours for less than that
KEEPALIVE_S = 4.0
API = "/api/v1/studies"


def log(message: str) -> None:
    print(f"[protocol_load] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the HTTP client


class Failed(Exception):
    """A request that got no usable answer; ``str(exc)`` names the kind (``ReadError``...)."""


class Http:
    """One connection pool to the controller: ``await http.call(...) -> (status, json)``."""

    name = "?"

    async def call(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, Any]:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class AiohttpHttp(Http):
    def __init__(
        self, base: str, connections: int, timeout: float, api_key: str | None = None
    ) -> None:
        import aiohttp

        self._key = {"X-API-Key": api_key} if api_key else {}
        self._aiohttp = aiohttp
        self.name = f"aiohttp {aiohttp.__version__}"
        self._base = base
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections, keepalive_timeout=KEEPALIVE_S),
            timeout=aiohttp.ClientTimeout(total=timeout),
        )

    async def call(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, Any]:
        headers = {**self._key, **({"Authorization": f"Bearer {token}"} if token else {})}
        try:
            async with self._session.request(
                method, self._base + path, json=body, headers=headers
            ) as response:
                raw = await response.read()
                status = response.status
        except (self._aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise Failed(_describe(exc)) from exc
        return status, _json(raw)

    async def close(self) -> None:
        await self._session.close()


class HttpxHttp(Http):
    def __init__(
        self, base: str, connections: int, timeout: float, api_key: str | None = None
    ) -> None:
        import httpx

        self._key = {"X-API-Key": api_key} if api_key else {}
        self._httpx = httpx
        self.name = f"httpx {httpx.__version__} (one AsyncClient)"
        self._client = httpx.AsyncClient(
            base_url=base,
            timeout=timeout,
            limits=httpx.Limits(
                max_connections=connections,
                max_keepalive_connections=connections,
                keepalive_expiry=KEEPALIVE_S,
            ),
        )

    async def call(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, Any]:
        headers = {**self._key, **({"Authorization": f"Bearer {token}"} if token else {})}
        try:
            response = await self._client.request(method, path, json=body, headers=headers)
        except self._httpx.HTTPError as exc:
            raise Failed(_describe(exc)) from exc
        return response.status_code, _json(response.content)

    async def close(self) -> None:
        await self._client.aclose()


def _describe(exc: BaseException) -> str:
    name = type(exc).__name__
    errno = getattr(exc, "errno", None)
    if errno:
        name += f"({os.strerror(errno)})"
    return name


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw[:200].decode("utf-8", "replace")


def make_http(
    kind: str, base: str, connections: int, timeout: float, api_key: str | None = None
) -> Http:
    """A client of the controller at ``base``; of several (``base`` a comma-separated list,
    ``--controllers N``), one that sends each request to the next controller in turn."""
    bases = base.split(",")
    if len(bases) > 1:
        per = max(connections // len(bases), 1)
        return SpreadHttp([make_http(kind, b, per, timeout, api_key) for b in bases])
    if kind == "httpx":
        return HttpxHttp(base, connections, timeout, api_key)
    return AiohttpHttp(base, connections, timeout, api_key)


class SpreadHttp:
    """Requests spread over several controllers on one database, in turn: a trial's report
    may reach another controller than its ask, as behind a load balancer."""

    def __init__(self, parts: list[Any]) -> None:
        self._parts = parts
        self._next = itertools.cycle(parts)
        self.name = f"{parts[0].name} x {len(parts)} controllers"

    async def call(self, *args: Any, **kwargs: Any) -> Any:
        return await next(self._next).call(*args, **kwargs)

    async def close(self) -> None:
        for part in self._parts:
            await part.close()


# --------------------------------------------------------------------------- CPU accounting

_TICK = os.sysconf("SC_CLK_TCK")


def _proc_stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # fields from the state on (field 3)


def tree_cpu(pid: int | None) -> float | None:
    """CPU seconds of ``pid`` (with its reaped children) and its live direct children."""
    if pid is None:
        return None
    own = _proc_stat(pid)
    if own is None:
        return None
    total = sum(int(v) for v in own[11:15])  # utime stime cutime cstime
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _proc_stat(int(entry.name))
            if fields and int(fields[1]) == pid:
                total += sum(int(v) for v in fields[11:15])
    return total / _TICK


def machine_busy() -> float:
    """CPU seconds all cores spent busy since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / _TICK


@dataclass
class Meter:
    """Snapshots CPU of the generator, the controller, PostgreSQL and the whole machine."""

    controller_pid: int | None = None
    postgres_pid: int | None = None
    #: more controllers (``--controllers N``): their CPU counts under "controller" too
    other_controller_pids: tuple[int, ...] = ()

    def _controllers(self) -> float | None:
        parts = [tree_cpu(pid) for pid in (self.controller_pid, *self.other_controller_pids)]
        return None if any(p is None for p in parts) else sum(p or 0.0 for p in parts)

    def snapshot(self) -> dict[str, float | None]:
        return {
            "wall": time.perf_counter(),
            "client": time.process_time(),
            "controller": self._controllers(),
            "postgres": tree_cpu(self.postgres_pid),
            "machine": machine_busy(),
        }

    @staticmethod
    def shares(start: dict[str, float | None], end: dict[str, float | None]) -> dict[str, Any]:
        """% of one core each part used between two snapshots; ``others`` is the rest."""
        wall = max((end["wall"] or 0) - (start["wall"] or 0), 1e-9)
        out: dict[str, Any] = {}
        for key in ("client", "controller", "postgres", "machine"):
            a, b = start[key], end[key]
            out[key] = None if a is None or b is None else 100 * (b - a) / wall
        ours = sum(out[k] or 0 for k in ("client", "controller", "postgres"))
        out["others"] = max(out["machine"] - ours, 0.0)
        return out


# --------------------------------------------------------------------------- recording


@dataclass
class Ops:
    """Requests of one kind (ask, report, ...) in one phase."""

    latencies: list[float] = field(default_factory=list)
    ok_in_window: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    warmup_errors: Counter[str] = field(default_factory=Counter)

    def percentile(self, q: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[max(math.ceil(q * len(ordered)) - 1, 0)]


@dataclass
class Phase:
    """One phase: requests by kind, counters, and the window the figures are taken over."""

    name: str
    n: int
    main: str  # the kind of request the phase is about
    #: measured: requests started in [start, end); before it warm-up, after it nothing new
    window: tuple[float, float] = (math.inf, math.inf)
    ops: dict[str, Ops] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    cpu: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0  # the window's length, for rates
    ramp_s: float | None = None  # from the start until every worker held a trial
    holding: set[str] = field(default_factory=set)  # workers that got their first trial
    all_holding: asyncio.Event = field(default_factory=asyncio.Event)

    def open(self) -> bool:
        """Whether workers may start new requests (the window has not ended)."""
        return time.perf_counter() < self.window[1]

    def got_trial(self, worker: str) -> None:
        self.holding.add(worker)
        if len(self.holding) >= self.n:
            self.all_holding.set()

    def record(self, kind: str, started: float, ended: float, error: str | None) -> None:
        ops = self.ops.setdefault(kind, Ops())
        lo, hi = self.window
        if not lo <= started < hi:
            if error:
                ops.warmup_errors[error] += 1
            return
        ops.latencies.append(ended - started)
        if error:
            ops.errors[error] += 1
        elif ended < hi:
            ops.ok_in_window += 1

    async def call(
        self,
        http: Http,
        kind: str,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = None,
    ) -> Any:
        """The answer's JSON, or None when the request failed (recorded by its kind)."""
        started = time.perf_counter()
        error = data = None
        try:
            status, data = await http.call(method, path, body, token)
            if status >= 400:
                error = f"HTTP {status}"
        except Failed as exc:
            error = str(exc)
        self.record(kind, started, time.perf_counter(), error)
        return None if error else data

    def rate(self, kind: str | None = None) -> float | None:
        ops = self.ops.get(kind or self.main)
        return ops.ok_in_window / self.seconds if ops and self.seconds > 0 else None

    def summary(self) -> dict[str, Any]:
        ops = self.ops.get(self.main, Ops())
        p50, p99 = ops.percentile(0.5), ops.percentile(0.99)
        return {
            "phase": self.name,
            "n": self.n,
            "ops_per_s": self.rate(),
            "p50_ms": None if p50 is None else 1000 * p50,
            "p99_ms": None if p99 is None else 1000 * p99,
            "max_ms": None if not ops.latencies else 1000 * max(ops.latencies),
            "requests": len(ops.latencies),
            "errors": sum(o.errors.total() for o in self.ops.values()),
            "errors_by_kind": {k: dict(o.errors) for k, o in self.ops.items() if o.errors},
            "warmup_errors": {
                k: dict(o.warmup_errors) for k, o in self.ops.items() if o.warmup_errors
            },
            "rates": {k: self.rate(k) for k in self.ops},
            "latency_ms_by_kind": {
                k: {"p50": 1000 * (o.percentile(0.5) or 0), "p99": 1000 * (o.percentile(0.99) or 0)}
                for k, o in self.ops.items()
                if o.latencies
            },
            "counts": dict(self.counts),
            "window_s": self.seconds,
            "all_in_flight_after_s": self.ramp_s,
            "cpu_pct_of_one_core": self.cpu,
        }


# --------------------------------------------------------------------------- the workers


def loss(params: dict[str, Any], step: int) -> float:
    """A learning curve whose level depends on the parameters, so ASHA has a ranking."""
    level = (
        (params["x"] - 0.3) ** 2
        + 0.05 * (math.log10(params["learning_rate"]) + 3) ** 2
        + 0.02 * abs(params["num_layers"] - 4)
        + (0.1 if params["optimizer"] == "sgd" else 0.0)
    )
    return level + 1.0 / math.sqrt(step)


def metrics(params: dict[str, Any], step: int) -> dict[str, float]:
    value = loss(params, step)
    return {OBJECTIVE: value, "val_accuracy": 1.0 / (1.0 + value)}


def study_spec(name: str, algorithm: dict[str, Any], budget: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "objective": {"metric": OBJECTIVE, "direction": "minimize"},
        "search_space": SEARCH_SPACE,
        "algorithm": algorithm,
        "budget": budget,
    }


async def create_study(http: Http, spec: dict[str, Any]) -> str:
    status, data = await http.call("POST", API, spec)
    if status != 201:
        raise RuntimeError(f"creating study {spec['name']!r} answered {status}: {data}")
    return str(data["name"])


async def run_trial(phase: Phase, http: Http, study: str, worker: str, max_epochs: int) -> None:
    """Ask one trial, report until told to stop or out of epochs, then complete it."""
    trials = f"{API}/{study}/trials"
    assignment = await phase.call(http, "ask", "POST", trials, {"worker": worker})
    if assignment is None:
        await asyncio.sleep(0.05)  # do not spin on a refusing server
        return
    phase.counts["asked"] += 1
    phase.got_trial(worker)
    number, params, token = assignment["number"], assignment["params"], assignment["token"]
    base = f"{trials}/{number}"
    for step in range(1, max_epochs + 1):
        if not phase.open():
            phase.counts["left running at the end"] += 1
            return
        body = {"step": step, "metrics": metrics(params, step)}
        answer = await phase.call(http, "report", "POST", f"{base}/reports", body, token)
        if answer is None:
            phase.counts["abandoned after an error"] += 1
            return
        if answer["should_stop"]:
            phase.counts["pruned"] += 1
            return
    body = {"metrics": metrics(params, max_epochs)}
    if await phase.call(http, "complete", "POST", f"{base}/complete", body, token) is not None:
        phase.counts["completed"] += 1
    else:
        phase.counts["abandoned after an error"] += 1


async def healthz_loop(phase: Phase, http: Http) -> None:
    while phase.open():
        if await phase.call(http, "healthz", "GET", "/healthz") is None:
            await asyncio.sleep(0.05)


async def trial_loop(phase: Phase, http: Http, study: str, worker: str, max_epochs: int) -> None:
    while phase.open():
        await run_trial(phase, http, study, worker, max_epochs)


# --------------------------------------------------------------------------- the phases


@dataclass
class Run:
    """What every phase needs: the controller, the CPU meter and the chosen durations."""

    base: str
    meter: Meter
    client: str
    duration: float
    warmup: float
    timeout: float
    max_epochs: int
    asks: int
    history: int
    rounds: int
    client_name: str = ""
    #: sent as X-API-Key with every request (``--api-key``: access control on)
    api_key: str | None = None


async def timed_phase(
    run: Run, phase: Phase, loop: Callable[[Http], Coroutine[Any, Any, None]], *, ramp: bool
) -> None:
    """Run ``phase.n`` copies of ``loop``; measure ``run.duration`` s after the warm-up.

    With ``ramp``, the window also waits until every worker holds a trial (N in flight).
    """
    n = phase.n
    http = make_http(run.client, run.base, n + 8, run.timeout, run.api_key)
    run.client_name = http.name
    tasks: list[asyncio.Task[None]] = []
    try:
        start = time.perf_counter()
        tasks = [asyncio.create_task(loop(http)) for _ in range(n)]
        await asyncio.sleep(run.warmup)
        if ramp:
            try:
                await asyncio.wait_for(phase.all_holding.wait(), timeout=run.timeout)
            except asyncio.TimeoutError:
                log(f"  only {len(phase.holding)} of {n} workers hold a trial; measuring anyway")
            phase.ramp_s = time.perf_counter() - start
        first = run.meter.snapshot()
        phase.window = (first["wall"] or 0.0, (first["wall"] or 0.0) + run.duration)
        await asyncio.sleep(run.duration)
        phase.cpu = Meter.shares(first, run.meter.snapshot())
        phase.seconds = run.duration
        log(f"  {phase.name} N={n}: window over, waiting for requests still in flight")
        _, late = await asyncio.wait(tasks, timeout=run.timeout + 5)
        for task in late:
            task.cancel()
            phase.counts["cancelled, still waiting at the end"] += 1
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(outcome, Exception):  # an answer not shaped as the protocol says
                phase.counts[f"workers crashed: {outcome!r}"[:120]] += 1
    finally:
        for task in tasks:  # interrupted: stop the workers before their session goes
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await http.close()


async def phase_healthz(run: Run, n: int) -> Phase:
    phase = Phase("healthz", n, "healthz")
    await timed_phase(run, phase, lambda http: healthz_loop(phase, http), ramp=False)
    return phase


async def phase_reports(run: Run, n: int, early_stopping: str) -> Phase:
    phase = Phase(f"reports-{early_stopping}", n, "report")
    if early_stopping == "asha":
        algorithm = {"name": "asha", "seed": 0, "reduction_factor": 3, "grace_period": 1}
    else:
        algorithm = {"name": "random", "seed": 0, "early_stopping": "none"}
    budget = {"max_epochs": run.max_epochs, "parallelism": n}
    async with _admin(run) as http:
        study = await create_study(http, study_spec(f"{phase.name}-n{n}", algorithm, budget))
    counter = iter(range(n))

    async def loop(http: Http) -> None:
        await trial_loop(phase, http, study, f"bench-{next(counter)}", run.max_epochs)

    await timed_phase(run, phase, loop, ramp=True)
    async with _admin(run) as http:  # end the trials left running, so nothing reaps them later
        status, _ = await http.call("POST", f"{API}/{study}/cancel")
        if status != 200:
            log(f"  cancelling {study} answered {status}")
    return phase


@contextlib.asynccontextmanager
async def _admin(run: Run, connections: int = 4) -> Any:
    http = make_http(run.client, run.base, connections, run.timeout, run.api_key)
    try:
        yield http
    finally:
        await http.close()


async def fill_history(run: Run, study: str, trials: int, workers: int = 4) -> None:
    """``trials`` completed trials through the protocol (ask, complete), so TPE has data."""
    todo = iter(range(trials))
    async with _admin(run, workers) as http:

        async def one_worker() -> None:
            for _ in todo:
                status, data = await http.call("POST", f"{API}/{study}/trials", {})
                if status != 201:
                    raise RuntimeError(f"ask for the history of {study} answered {status}: {data}")
                body = {"metrics": metrics(data["params"], run.max_epochs)}
                path = f"{API}/{study}/trials/{data['number']}/complete"
                status, answer = await http.call("POST", path, body, data["token"])
                if status != 200:
                    raise RuntimeError(f"completing {path} answered {status}: {answer}")

        await asyncio.gather(*(one_worker() for _ in range(workers)))


async def ask_burst(run: Run, phase: Phase, study: str) -> tuple[float, dict[str, Any]]:
    """``run.asks`` asks at once over as many open connections: (seconds, CPU shares)."""
    http = make_http(run.client, run.base, run.asks + 8, run.timeout, run.api_key)
    run.client_name = http.name
    try:
        # open the connections first, so the burst measures asks and not TCP handshakes
        await asyncio.gather(
            *(http.call("GET", "/healthz") for _ in range(run.asks)), return_exceptions=True
        )
        path = f"{API}/{study}/trials"
        phase.window = (time.perf_counter(), math.inf)
        first = run.meter.snapshot()
        answers = await asyncio.gather(
            *(
                phase.call(http, "ask", "POST", path, {"worker": f"bench-{i}"})
                for i in range(run.asks)
            )
        )
        last = run.meter.snapshot()
        phase.counts["asked"] += sum(a is not None for a in answers)
        return (last["wall"] or 0) - (first["wall"] or 0), Meter.shares(first, last)
    finally:
        await http.close()


async def phase_asks(run: Run, model: str) -> Phase:
    phase = Phase(f"asks-{model}", run.asks, "ask")
    if model == "tpe":
        algorithm = {"name": "bayesian", "model": "tpe", "seed": 0, "n_startup_trials": 10}
    else:
        algorithm = {"name": "random", "seed": 0}
    history = run.history if model == "tpe" else 0
    budget = {"max_trials": history + run.asks, "parallelism": run.asks}
    shares: list[tuple[float, dict[str, Any]]] = []
    for r in range(run.rounds):
        async with _admin(run) as http:
            study = await create_study(http, study_spec(f"{phase.name}-{r}", algorithm, budget))
        if history:
            log(f"  {phase.name}: completing {history} trials first (round {r + 1})")
            await fill_history(run, study, history)
        seconds, cpu = await ask_burst(run, phase, study)
        shares.append((seconds, cpu))
        phase.seconds += seconds
        async with _admin(run) as http:
            await http.call("POST", f"{API}/{study}/cancel")
    phase.cpu = {
        key: None
        if any(s[key] is None for _, s in shares)
        else sum(w * s[key] for w, s in shares) / max(phase.seconds, 1e-9)
        for key in shares[0][1]
    }
    return phase


# --------------------------------------------------------------------------- the stack


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def postgres_server(url: str | None) -> Iterator[tuple[str, int | None]]:
    """A server URL, and the postmaster's pid when we started the server ourselves."""
    if url:
        yield url, None
        return
    from tests._postgres import ThrowawayPostgres

    server = ThrowawayPostgres()
    try:
        log("starting a throwaway PostgreSQL")
        server.start()
        pid = int((server.data / "postmaster.pid").read_text().split()[0])
        yield server.url, pid
    finally:
        server.stop()


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new database on the server for this run, dropped afterwards."""
    url = make_url(server_url)
    name = f"hpo_bench_{time.strftime('%Y%m%d_%H%M%S')}_{os.getpid()}"
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        try:
            with engine.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        except Exception as exc:  # the server may be gone already (Ctrl-C)
            log(f"could not drop database {name}: {exc}")
        engine.dispose()


@contextlib.contextmanager
def controller(database_url: str, log_path: Path) -> Iterator[tuple[str, int]]:
    """The controller under uvicorn in its own process: (base URL, pid)."""
    import httpx

    port = free_port()
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "HPO_DATABASE_URL": database_url, "PYTHONPATH": path}
    command = [sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    with open(log_path, "w") as out:
        # its own session: a Ctrl-C reaches us only, and we stop it in order
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the controller exited early:\n{log_path.read_text()[-4000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the controller on port {port} did not answer within 120 s")
            time.sleep(0.2)
        yield base, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _admin_key(database_url: str) -> str:
    """An admin key in the fresh database, before the controller starts: access control on."""
    from hpo import service
    from hpo.storage import Database

    db = Database(database_url)
    try:
        return service.create_key(db, name="bench", role="admin")[1]
    finally:
        db.dispose()


def server_errors(log_path: Path, top: int = 6) -> dict[str, int]:
    """The most frequent error lines in the controller's log (tracebacks' last lines)."""
    found: Counter[str] = Counter()
    for line in log_path.read_text(errors="replace").splitlines():
        if line[:1].isspace() or "Traceback" in line:
            continue
        if "Error" in line or "Exception" in line or line.startswith(("ERROR", "WARNING")):
            found[line[:160]] += 1
    return dict(found.most_common(top))


def describe_code() -> str:
    def git(*args: str) -> str:
        result = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
        return result.stdout.strip()

    commit = git("log", "-1", "--format=%h", "--", "hpo", "api") or "unknown"
    dirty = git("status", "--porcelain", "--", "hpo", "api")
    return f"hpo/ and api/ as of {commit}" + (" + uncommitted changes" if dirty else "")


# --------------------------------------------------------------------------- the report


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def print_table(results: list[dict[str, Any]]) -> None:
    head = (
        f"{'phase':<14}{'N':>5}{'ops/s':>9}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}"
        f"{'errors':>8}   {'CPU % of a core: client':>24}{'ctrl':>6}{'pg':>6}{'others':>8}"
    )
    print("\n" + head)
    print("-" * len(head))
    for r in results:
        cpu = r["cpu_pct_of_one_core"]
        print(
            f"{r['phase']:<14}{r['n']:>5}{_fmt(r['ops_per_s'], 1):>9}{_fmt(r['p50_ms']):>10}"
            f"{_fmt(r['p99_ms']):>10}{_fmt(r['max_ms']):>10}{r['errors']:>8}   "
            f"{_fmt(cpu.get('client')):>24}{_fmt(cpu.get('controller')):>6}"
            f"{_fmt(cpu.get('postgres')):>6}{_fmt(cpu.get('others')):>8}"
        )
    print()
    for r in results:
        print(f"{r['phase']} N={r['n']}: " + details(r))


def details(r: dict[str, Any]) -> str:
    parts = [f"{k} {v}" for k, v in sorted(r["counts"].items())]
    if r["all_in_flight_after_s"] is not None:
        parts.insert(0, f"all {r['n']} trials in flight after {r['all_in_flight_after_s']:.1f} s")
    if not r["phase"].startswith("asks"):
        rates = [
            f"{kind} {_fmt(rate, 1)}/s" + _percentiles(r["latency_ms_by_kind"].get(kind))
            for kind, rate in r["rates"].items()
            if rate is not None
        ]
        parts.append("answered in the window: " + ", ".join(rates))
    for label, key in (("errors", "errors_by_kind"), ("errors in warm-up", "warmup_errors")):
        for kind, errors in r[key].items():
            listed = ", ".join(f"{name} x{count}" for name, count in errors.items())
            parts.append(f"{label} on {kind}: {listed}")
    return "; ".join(parts) or "-"


def _percentiles(latency: dict[str, float] | None) -> str:
    return f" (p50 {latency['p50']:,.0f} ms, p99 {latency['p99']:,.0f} ms)" if latency else ""


def _find(results: list[dict[str, Any]], phase: str, n: int, key: str) -> float | None:
    for r in results:
        if r["phase"] == phase and r["n"] == n:
            return r[key]
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def targets(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets on a 2-core machine, each with its figure and whether it is met."""
    asha, rate = "reports-asha", "ops_per_s"
    p99_200 = _find(results, asha, 200, "p99_ms")
    asks_p99 = _find(results, "asks-random", 200, "p99_ms")
    checks = [
        (
            "reports/s with 200 in flight (ASHA) vs healthz/s at 200",
            _ratio(_find(results, asha, 200, rate), _find(results, "healthz", 200, rate)),
            ">=",
            0.3,
            "x",
        ),
        (
            "reports/s with 200 in flight (ASHA) vs with 20 in flight",
            _ratio(_find(results, asha, 200, rate), _find(results, asha, 20, rate)),
            ">=",
            0.8,
            "x",
        ),
        ("report p99 with 200 in flight (ASHA)", p99_200 and p99_200 / 1000, "<", 1.0, " s"),
        (
            "ask p99, 200 concurrent asks on a random study",
            asks_p99 and asks_p99 / 1000,
            "<",
            2.0,
            " s",
        ),
    ]
    out = []
    for name, figure, op, goal, unit in checks:
        met = None if figure is None else figure >= goal if op == ">=" else figure < goal
        out.append(
            {"target": name, "figure": figure, "op": op, "goal": goal, "unit": unit, "met": met}
        )
    return out


def print_targets(checks: list[dict[str, Any]]) -> None:
    print()
    for c in checks:
        goal = f"{c['op']} {c['goal']:g}{c['unit']}"
        if c["figure"] is None:
            print(f"target {c['target']}: not measured (its phases did not run) vs goal {goal}")
            continue
        verdict = "met" if c["met"] else "NOT met"
        print(f"target {c['target']}: {c['figure']:.2f}{c['unit']} vs goal {goal} -> {verdict}")


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short phases, to check the script")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"of {', '.join(PHASES)}")
    parser.add_argument("--concurrency", default="20,200", help="N for healthz and reports")
    parser.add_argument("--duration", type=float, help="seconds measured per phase (20; quick 4)")
    parser.add_argument("--warmup", type=float, help="seconds before measuring (5; quick 2)")
    parser.add_argument("--asks", type=int, default=200, help="asks fired at once")
    parser.add_argument("--history", type=int, default=50, help="completed trials before TPE")
    parser.add_argument("--rounds", type=int, help="ask bursts per study kind (3; quick 1)")
    parser.add_argument("--max-epochs", type=int, default=27)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    parser.add_argument("--client", choices=["aiohttp", "httpx"], default="aiohttp")
    parser.add_argument(
        "--controllers",
        type=int,
        default=1,
        help="controller processes on the one database; requests go to each in turn",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("HPO_BENCH_POSTGRES_URL"),
        help="an existing server (a superuser or CREATEDB role); default: a throwaway one",
    )
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument(
        "--api-key",
        action="store_true",
        help="access control on: an admin key is made first and sent with every request (the "
        "same path as an unrestricted worker key); default: no key, access control off",
    )
    args = parser.parse_args(argv)
    args.duration = args.duration or (4.0 if args.quick else 20.0)
    args.warmup = args.warmup if args.warmup is not None else (2.0 if args.quick else 5.0)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        parser.error(
            f"unknown phases {', '.join(sorted(unknown))}; choose from {', '.join(PHASES)}"
        )
    args.concurrency = [int(n) for n in args.concurrency.split(",") if n.strip()]
    if args.client == "aiohttp":
        try:
            import aiohttp  # noqa: F401
        except ImportError:
            parser.error('aiohttp is missing: pip install -e ".[bench]" (or --client httpx)')
    return args


async def run_phases(run: Run, args: argparse.Namespace) -> list[dict[str, Any]]:
    plan: list[tuple[str, int, Callable[[], Awaitable[Phase]]]] = []
    for n in args.concurrency:
        if "healthz" in args.phases:
            plan.append(("healthz", n, functools.partial(phase_healthz, run, n)))
        for rule in ("asha", "none"):
            if f"reports-{rule}" in args.phases:
                plan.append((f"reports-{rule}", n, functools.partial(phase_reports, run, n, rule)))
    for model in ("random", "tpe"):
        if f"asks-{model}" in args.phases:
            plan.append((f"asks-{model}", run.asks, functools.partial(phase_asks, run, model)))
    results = []
    for name, n, make in plan:
        log(f"phase {name} N={n} ...")
        summary = (await make()).summary()
        results.append(summary)
        log(
            f"  {name} N={n}: {_fmt(summary['ops_per_s'], 1)} ops/s, p50 "
            f"{_fmt(summary['p50_ms'])} ms, p99 {_fmt(summary['p99_ms'])} ms, "
            f"{summary['errors']} errors"
        )
        await asyncio.sleep(1.0)  # let the controller settle between phases
    return results


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # clean up on kill as on Ctrl-C
    try:
        measure(args)
    except KeyboardInterrupt:
        log("interrupted; the controller and the database are gone")
        sys.exit(130)


def measure(args: argparse.Namespace) -> None:
    load_before = os.getloadavg()
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hpo-load-")))
        server_url, postgres_pid = stack.enter_context(postgres_server(args.postgres_url))
        database_url = stack.enter_context(fresh_database(server_url))
        log_path = tmp / "controller.log"
        key = _admin_key(database_url) if args.api_key else None
        log(f"starting {args.controllers} controller(s)")
        started = [
            stack.enter_context(controller(database_url, log_path.with_suffix(f".{i}.log")))
            for i in range(args.controllers)
        ]
        pids = [pid for _, pid in started]
        run = Run(
            base=",".join(base for base, _ in started),
            meter=Meter(pids[0], postgres_pid, tuple(pids[1:])),
            client=args.client,
            duration=args.duration,
            warmup=args.warmup,
            timeout=args.timeout,
            max_epochs=args.max_epochs,
            asks=args.asks,
            history=args.history,
            rounds=args.rounds,
            api_key=key,
        )
        results = asyncio.run(run_phases(run, args))
        errors: dict[str, int] = {}
        for i in range(args.controllers):
            for line, count in server_errors(log_path.with_suffix(f".{i}.log")).items():
                errors[line] = errors.get(line, 0) + count
    report(args, run, results, errors, load_before)


def report(
    args: argparse.Namespace,
    run: Run,
    results: list[dict[str, Any]],
    server_log: dict[str, int],
    load_before: tuple[float, float, float],
) -> None:
    load_after = os.getloadavg()
    checks = targets(results)
    if args.json:  # first: the figures survive a closed stdout (``| head``)
        payload = {
            "code": describe_code(),
            "cpus": os.cpu_count(),
            "client": run.client_name,
            "load_average_before": load_before,
            "load_average_after": load_after,
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "phases": results,
            "targets": checks,
            "controller_errors": server_log,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        log(f"figures written to {args.json}")
    print(
        f"protocol load on PostgreSQL{' with an API key' if run.api_key else ''}, "
        f"{args.controllers} controller(s), "
        f"{describe_code()}, {os.cpu_count()} CPUs, "
        f"client {run.client_name}; {args.duration:g} s per phase after {args.warmup:g} s "
        f"warm-up; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    print_table(results)
    busy = [r for r in results if (r["cpu_pct_of_one_core"].get("client") or 0) > 50]
    if busy:
        names = ", ".join(f"{r['phase']} N={r['n']}" for r in busy)
        print(f"warning: the load generator used over half a core in {names}; it may cap them")
    if server_log:
        print("\ncontroller log, most frequent error lines:")
        for line, count in server_log.items():
            print(f"  {count:>6} x {line}")
    print_targets(checks)


if __name__ == "__main__":
    main()
