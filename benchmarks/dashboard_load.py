"""Dashboard load: how fast a 10,000-trial study opens in our dashboard vs optuna-dashboard.

Both serve the same study from the same database. One page load is fetched the way a browser
does it: the HTML, then the scripts and stylesheets it names, then the JSON its scripts ask
for, each stage over ``BROWSER_CONNECTIONS`` parallel connections. A cold load is the first
after the server starts (fresh caches, new connections); a warm load follows at once, with a
browser's cache for static files: reused while their ``Cache-Control: max-age`` lasts, else
revalidated with ``If-None-Match``/``If-Modified-Since``. Byte counts are bytes on the wire.

    python benchmarks/dashboard_load.py [--trials 10000] [--db URL] [--name big-study]

Without ``--db`` the study is built in a temporary SQLite file (benchmarks/make_big_study.py:
our tables in bulk, then Optuna's through hpo's mirror); with ``--db`` an existing study of
that name is reused (its mirror finished first, if a build was cut short), or built there.
Optuna's id of the study, for optuna-dashboard's URLs, comes from Optuna's storage API. Ours
runs under uvicorn in a thread; optuna-dashboard (``pip install optuna-dashboard``) under the
threaded wsgiref server its CLI uses when gunicorn is absent. Requests our dashboard does not
serve yet print "missing". Not a test: it prints figures and never fails on a timing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import socketserver
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import httpx  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from benchmarks.make_big_study import build, mirror  # noqa: E402
from hpo import StudyNotFound, service  # noqa: E402
from hpo.storage import Database  # noqa: E402

#: our study page ({name}: the study's name) and the JSON its script fetches; adjust freely
#: seconds a freshly started server gets before the cold load: "cold" means the study's data
#: is not cached yet, not that the server is still importing its modules (both sides get it)
SETTLE_S = 5.0
OUR_PAGE = "/studies/{name}"
OUR_REQUESTS: tuple[str, ...] = (
    "/api/v1/studies/{name}",
    "/api/v1/studies/{name}/trials?limit=50&offset=0&sort=number",
    "/api/v1/studies/{name}/figures/history",
    "/api/v1/studies/{name}/figures/curves",
    "/api/v1/studies/{name}/figures/parallel",
    "/api/v1/studies/{name}/figures/importance",
    "/api/v1/studies/{name}/figures/slice",
    "/api/v1/studies/{name}/figures/contour?x=learning_rate&y=num_layers",
)
#: optuna-dashboard 0.21's study page ({id}: Optuna's study id), read from its bundle.js: the
#: "top" tab asks for the API meta, the whole study with every trial (``after=0``: all trials
#: from number 0 on), and the parameter importances; its charts are drawn in the browser.
PEER_PAGE = "/dashboard/studies/{id}"
PEER_REQUESTS: tuple[str, ...] = (
    "/api/meta",
    "/api/studies/{id}?after=0",
    "/api/studies/{id}/param_importances",
)
BROWSER_CONNECTIONS = 6
_PEER_TRIALS_TTL_S = 10  # optuna_dashboard._storage.get_trials, for studies of 500+ trials
_TIMEOUT_S = 600.0


@dataclass
class Fetch:
    url: str
    kind: str  # page | static | data
    status: int
    seconds: float
    wire_bytes: int
    body: bytes = field(repr=False, default=b"")

    @property
    def missing(self) -> bool:
        return self.status == 404


@dataclass
class Load:
    fetches: list[Fetch]
    seconds: float

    def wire_bytes(self, kind: str | None = None) -> int:
        return sum(f.wire_bytes for f in self.fetches if not f.missing and kind in (None, f.kind))

    def missing(self) -> list[Fetch]:
        return [f for f in self.fetches if f.missing]


@dataclass
class Side:
    name: str
    cold: Load
    warm: Load
    notes: list[str] = field(default_factory=list)


class _Assets(HTMLParser):
    """Same-origin scripts and stylesheets a page names, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        url = found.get("src") if tag == "script" else None
        if tag == "link" and "stylesheet" in (found.get("rel") or ""):
            url = found.get("href")
        if url and url.startswith("/") and not url.startswith("//") and url not in self.urls:
            self.urls.append(url)


class Browser:
    """Parallel GETs over ``BROWSER_CONNECTIONS`` connections, with a cache for static files.

    A static file is reused without asking while its ``Cache-Control: max-age`` lasts, and
    revalidated with its ETag/Last-Modified otherwise (browsers' heuristic freshness for files
    with only a Last-Modified is left out: it would favour whichever side sends no max-age).
    """

    def __init__(self, base: str) -> None:
        self.client = httpx.Client(
            base_url=base,
            timeout=_TIMEOUT_S,
            limits=httpx.Limits(max_connections=BROWSER_CONNECTIONS),
        )
        self.pool = ThreadPoolExecutor(BROWSER_CONNECTIONS)
        self.validators: dict[str, dict[str, str]] = {}
        self.fresh_until: dict[str, float] = {}

    def get(self, url: str, kind: str) -> Fetch:
        if kind == "static" and self.fresh_until.get(url, 0.0) > time.monotonic():
            return Fetch(url, kind, status=0, seconds=0.0, wire_bytes=0)  # from the cache
        headers = self.validators.get(url, {}) if kind == "static" else {}
        started = time.perf_counter()
        response = self.client.get(url, headers=headers)
        seconds = time.perf_counter() - started
        if kind == "static" and response.status_code == 200:
            self.validators[url] = _validators(response)
            self.fresh_until[url] = time.monotonic() + _max_age(response)
        body = response.content if kind != "static" else b""
        return Fetch(url, kind, response.status_code, seconds, response.num_bytes_downloaded, body)

    def get_all(self, urls: Sequence[str], kind: str) -> list[Fetch]:
        return list(self.pool.map(lambda url: self.get(url, kind), urls))

    def load(self, page: str, requests: Sequence[str]) -> Load:
        started = time.perf_counter()
        html = self.get(page, "page")
        parser = _Assets()
        if html.status == 200:
            parser.feed(html.body.decode("utf-8", "replace"))
        statics = self.get_all(parser.urls, "static")
        data = self.get_all(requests, "data")
        return Load([html, *statics, *data], time.perf_counter() - started)

    def close(self) -> None:
        self.pool.shutdown()
        self.client.close()


def _validators(response: httpx.Response) -> dict[str, str]:
    names = {"etag": "If-None-Match", "last-modified": "If-Modified-Since"}
    return {
        header: response.headers[name] for name, header in names.items() if name in response.headers
    }


def _max_age(response: httpx.Response) -> float:
    """Seconds the response may be reused without asking (0: revalidate every time)."""
    directives = [d.strip().lower() for d in response.headers.get("cache-control", "").split(",")]
    if "no-cache" in directives or "no-store" in directives:
        return 0.0
    for d in directives:
        if d.startswith("max-age="):
            with contextlib.suppress(ValueError):
                return float(d.removeprefix("max-age="))
    return 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve_ours(database_url: str) -> Iterator[str]:
    """``api.create_app`` under uvicorn in a thread, as tests/_live.py runs it (no dispatcher)."""
    import uvicorn

    from api import create_app
    from hpo.settings import Settings

    port = free_port()
    settings = Settings(database_url=database_url, port=port, dispatch=False, reap_interval=3600)
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"our app on port {port} did not start")
        time.sleep(0.05)
    time.sleep(SETTLE_S)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        app.state.db.dispose()


class _ThreadedWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:  # keep the benchmark's output readable
        pass


@contextlib.contextmanager
def serve_peer(database_url: str) -> Iterator[str]:
    """optuna-dashboard's WSGI app on the threaded wsgiref server its CLI falls back to."""
    import optuna_dashboard

    port = free_port()
    app = optuna_dashboard.wsgi(database_url)
    server = make_server(
        "127.0.0.1", port, app, server_class=_ThreadedWSGIServer, handler_class=_QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        time.sleep(SETTLE_S)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)


Notes = Callable[["Browser", Load], list[str]]


def measure(
    name: str,
    serve: Callable[[str], Any],
    url: str,
    page: str,
    requests: Sequence[str],
    notes: Notes | None = None,
) -> Side:
    with serve(url) as base:
        browser = Browser(base)
        try:
            cold = browser.load(page, requests)
            warm = browser.load(page, requests)
            extra = notes(browser, cold) if notes else []
        finally:
            browser.close()
    return Side(name, cold, warm, extra)


def _field_shares(trials: list[dict[str, Any]]) -> str:
    """The trial fields that weigh most in the JSON, as shares of the trials' bytes."""
    sizes: dict[str, int] = {}
    for t in trials:
        for key, value in t.items():
            sizes[key] = sizes.get(key, 0) + len(json.dumps(value)) + len(key) + 4
    total = max(sum(sizes.values()), 1)
    top = sorted(sizes.items(), key=lambda kv: kv[1], reverse=True)[:4]
    return ", ".join(f"{key} {size / total:.0%}" for key, size in top)


def peer_notes(browser: Browser, cold: Load) -> list[str]:
    """What optuna-dashboard's study JSON holds, and what one later poll of it costs."""
    study = next((f for f in cold.fetches if "?after=" in f.url and f.status == 200), None)
    if study is None:
        return []
    body = json.loads(study.body)
    trials = body.get("trials", [])
    steps = sum(len(t.get("intermediate_values", [])) for t in trials)
    # its server caches a study's trials for 10 s (500+ trials), then rereads them all
    time.sleep(_PEER_TRIALS_TTL_S + 0.5)
    poll = browser.get(study.url.replace("?after=0", f"?after={len(trials)}"), "data")
    return [
        f"{study.url}: every trial in full ({len(trials):,} trials, {steps:,} intermediate "
        f"values), {len(study.body) / 1e6:.1f} MB of JSON; by field: {_field_shares(trials)}",
        f"its page then polls ?after=<trials it has> every 10 s; one poll after the server's "
        f"10 s trial cache expired: {poll.seconds:.2f} s for {poll.wire_bytes:,} B",
    ]


def print_load(side: str, label: str, load: Load) -> None:
    print(f"{side}, {label}: {load.seconds:.2f} s, {load.wire_bytes():,} bytes")
    for f in load.fetches:
        status = "missing" if f.missing else "cached" if f.status == 0 else str(f.status)
        print(
            f"  {status:>7} {f.seconds * 1000:9.0f} ms {f.wire_bytes:>13,} B  {f.kind:<6} {f.url}"
        )


def print_table(sides: list[Side]) -> None:
    head = f"{'side':<18}{'cold (s)':>10}{'warm (s)':>10}{'bytes cold':>14}{'of which JSON':>15}"
    print("\n" + head + f"{'bytes warm':>13}  missing")
    print("-" * (len(head) + 22))
    for s in sides:
        missing = len(s.cold.missing())
        print(
            f"{s.name:<18}{s.cold.seconds:>10.2f}{s.warm.seconds:>10.2f}"
            f"{s.cold.wire_bytes():>14,}{s.cold.wire_bytes('data'):>15,}"
            f"{s.warm.wire_bytes():>13,}  {missing} of {len(s.cold.fetches)}"
        )


def _ratio(peer: float, ours: float) -> str:
    if ours <= 0 or peer <= 0:
        return "n/a"
    return f"{peer / ours:.1f}x faster" if peer >= ours else f"{ours / peer:.1f}x slower"


def verdict(ours: Side | None, peer: Side | None) -> str:
    if ours is None or peer is None:
        return "verdict: only one side ran; nothing to compare"
    line = (
        f"verdict: ours opens {_ratio(peer.cold.seconds, ours.cold.seconds)} cold and "
        f"{_ratio(peer.warm.seconds, ours.warm.seconds)} warm than optuna-dashboard, shipping "
        f"{ours.cold.wire_bytes():,} vs {peer.cold.wire_bytes():,} bytes cold "
        "(design target: well under 1 s)"
    )
    missing = len(ours.cold.missing())
    if missing:
        line += f"; {missing} of our requests are still missing, so ours is not complete yet"
    return line


def prepare(db_url: str | None, name: str, trials: int, tmp: str) -> tuple[str, int]:
    """The database URL holding study ``name`` (built if absent, its Optuna mirror finished if
    a build was cut short) and Optuna's id of it."""
    url = db_url or f"sqlite:///{tmp}/dashboard-load.db"
    db = Database(url)
    try:
        try:
            found = service.get_study(db, ref=name)
        except StudyNotFound:
            big = build(url, trials=trials, name=name)
            phases = ", ".join(f"{k} {v:.1f} s" for k, v in big.seconds.items())
            print(f"built study {name!r} ({trials:,} trials): {phases}")
        else:
            where = make_url(url).render_as_string(hide_password=True)
            print(f"reusing study {name!r} ({found.n_trials:,} trials) at {where}")
            mirror(db, found.id)
        optuna_id = db.optuna_storage.get_study_id_from_name(name)
    finally:
        db.dispose()
    return url, int(optuna_id)


def run_side(
    label: str,
    serve: Callable[[str], Any],
    url: str,
    page: str,
    requests: Sequence[str],
    notes: Notes | None = None,
) -> Side | None:
    try:
        side = measure(label, serve, url, page, requests, notes)
    except ImportError as exc:
        print(f"{label}: skipped ({exc}; pip install optuna-dashboard)")
        return None
    print_load(label, "cold", side.cold)
    print_load(label, "warm", side.warm)
    for note in side.notes:
        print("  " + note)
    return side


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--db", help="SQLAlchemy URL; default: a temporary SQLite file")
    parser.add_argument("--name", default="big-study")
    parser.add_argument("--only", choices=["hpo", "optuna-dashboard"], help="run one side only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url, optuna_id = prepare(args.db, args.name, args.trials, tmp)
        ours = peer = None
        if args.only != "optuna-dashboard":
            page = OUR_PAGE.format(name=args.name)
            requests = [r.format(name=args.name) for r in OUR_REQUESTS]
            ours = run_side("hpo dashboard", serve_ours, url, page, requests)
        if args.only != "hpo":
            page = PEER_PAGE.format(id=optuna_id)
            requests = [r.format(id=optuna_id) for r in PEER_REQUESTS]
            peer = run_side("optuna-dashboard", serve_peer, url, page, requests, peer_notes)
        print_table([s for s in (ours, peer) if s is not None])
        print(verdict(ours, peer))


if __name__ == "__main__":
    main()
