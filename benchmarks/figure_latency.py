"""Every figure endpoint on a 10,000-trial study, one request at a time, cold and warm.

    python benchmarks/figure_latency.py [--trials 10000] [--studies 2] [--repeat 5]
        [--db URL | --postgres] [--name big-study]

The issue's target: every figure endpoint answers a 10,000-trial study within 1 s warm. The
studies are built as benchmarks/dashboard_load.py builds them (benchmarks/make_big_study.py:
ASHA over ``transformer-small``, 9 epochs, four metrics per epoch), ``--studies`` of them
(``big-study``, ``big-study-2``, ...: compare-studies draws them all), in a temporary SQLite
file, in a throwaway PostgreSQL with ``--postgres`` (tests/_postgres.py, binaries on PATH),
or at ``--db`` (reused if already there). Our app serves them under uvicorn in a thread, as in
dashboard_load.py, and settles for 5 s after start-up.

Each endpoint is asked once ("cold": its first answer since the server started, nothing of the
study cached yet) and then ``--repeat`` times more ("warm"); the table gives the cold time,
the warm median and worst, the bytes on the wire (gzip, as a browser asks) and whether the
worst warm answer is within 1 s. The study page's six views are kept serialized by the app
until the study changes, so warm they are a cache lookup; the comparisons and a trial's
figures are computed on every request. Not a test: it prints figures and never fails.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import httpx  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from benchmarks.dashboard_load import serve_ours  # noqa: E402
from benchmarks.make_big_study import build  # noqa: E402
from hpo import StudyNotFound, service  # noqa: E402
from hpo.storage import Database  # noqa: E402

TARGET_S = 1.0
#: (label, path); {name} the study, {twenty} twenty of its trials, {best} its best trial,
#: {all} every study built, comma-separated
ENDPOINTS: tuple[tuple[str, str], ...] = (
    ("history", "/api/v1/studies/{name}/figures/history"),
    ("curves", "/api/v1/studies/{name}/figures/curves"),
    ("curves, limit=1000", "/api/v1/studies/{name}/figures/curves?limit=1000"),
    ("parallel", "/api/v1/studies/{name}/figures/parallel"),
    ("importance", "/api/v1/studies/{name}/figures/importance"),
    ("slice", "/api/v1/studies/{name}/figures/slice"),
    ("contour (default axes)", "/api/v1/studies/{name}/figures/contour"),
    (
        "contour x/y",
        "/api/v1/studies/{name}/figures/contour?x=learning_rate&y=batch_size",
    ),
    ("compare, 20 trials", "/api/v1/studies/{name}/figures/compare?trials={twenty}"),
    ("trial figures (best)", "/api/v1/studies/{name}/trials/{best}/figures"),
    ("compare-studies, 1 study", "/api/v1/figures/compare-studies?studies={name}"),
    ("compare-studies, all", "/api/v1/figures/compare-studies?studies={all}"),
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def prepare(url: str, names: list[str], trials: int) -> None:
    """Build each study that is not in the database yet."""
    db = Database(url)
    try:
        for i, name in enumerate(names):
            try:
                found = service.get_study(db, ref=name)
            except StudyNotFound:
                log(f"building {name!r} ({trials:,} trials) ...")
                big = build(url, trials=trials, name=name, seed=i)
                phases = ", ".join(f"{k} {v:.1f} s" for k, v in big.seconds.items())
                log(f"built {name!r}: {phases}")
            else:
                log(f"reusing {name!r} ({found.n_trials:,} trials)")
    finally:
        db.dispose()


def _fill(client: httpx.Client, names: list[str]) -> dict[str, str]:
    name = names[0]
    best = client.get(f"/api/v1/studies/{name}/best").json()["number"]
    top = client.get(
        f"/api/v1/studies/{name}/trials",
        params={"state": "completed", "sort": "value", "order": "desc", "limit": 20},
    ).json()["data"]
    twenty = ",".join(str(t["number"]) for t in top)
    return {"name": name, "best": str(best), "twenty": twenty, "all": ",".join(names)}


def _timed(client: httpx.Client, path: str) -> tuple[float, int, int]:
    """Seconds, status and bytes on the wire of one GET."""
    started = time.perf_counter()
    with client.stream("GET", path) as response:
        wire = sum(len(chunk) for chunk in response.iter_raw())
    return time.perf_counter() - started, response.status_code, wire


def measure(base: str, names: list[str], repeat: int) -> list[tuple[str, float, list[float], int]]:
    rows = []
    with httpx.Client(base_url=base, timeout=600) as client:
        values = _fill(client, names)
        for label, template in ENDPOINTS:
            if label == "compare-studies, all" and len(names) < 2:
                continue
            path = template.format(**values)
            cold, status, wire = _timed(client, path)
            if status != 200:
                raise SystemExit(f"{label}: {path} answered {status}")
            warm = [_timed(client, path)[0] for _ in range(repeat)]
            rows.append((label, cold, warm, wire))
            log(f"{label}: cold {cold * 1000:.0f} ms, warm worst {max(warm) * 1000:.0f} ms")
    return rows


def report(where: str, trials: int, names: list[str], rows: list) -> None:  # type: ignore[type-arg]
    print(f"\n{where}: {len(names)} studies of {trials:,} trials; one request at a time")
    head = f"{'endpoint':<28}{'cold ms':>9}{'warm median':>13}{'warm worst':>12}{'bytes':>12}"
    print(head + f"  within {TARGET_S:g} s warm")
    print("-" * (len(head) + 18))
    for label, cold, warm, wire in rows:
        ok = "yes" if max(warm) <= TARGET_S else "NO"
        print(
            f"{label:<28}{cold * 1000:>9.0f}{statistics.median(warm) * 1000:>13.0f}"
            f"{max(warm) * 1000:>12.0f}{wire:>12,}  {ok}"
        )
    misses = [label for label, _, warm, _ in rows if max(warm) > TARGET_S]
    print(
        "every figure endpoint within 1 s warm"
        if not misses
        else f"over 1 s warm: {', '.join(misses)}"
    )


@contextlib.contextmanager
def database(args: argparse.Namespace) -> Iterator[str]:
    if args.db:
        yield args.db
        return
    if args.postgres:
        from benchmarks.protocol_load import fresh_database, postgres_server

        with postgres_server(None) as (server, _), fresh_database(server) as url:
            yield url
        return
    with tempfile.TemporaryDirectory() as tmp:
        yield f"sqlite:///{tmp}/figure-latency.db"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--studies", type=int, default=2, help="studies built (compare-studies)")
    parser.add_argument("--repeat", type=int, default=5, help="warm requests per endpoint")
    parser.add_argument("--name", default="big-study")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--db", help="SQLAlchemy URL; default: a temporary SQLite file")
    where.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL")
    args = parser.parse_args()
    names = [args.name] + [f"{args.name}-{i}" for i in range(2, args.studies + 1)]
    with database(args) as url:
        prepare(url, names, args.trials)
        with serve_ours(url) as base:
            rows = measure(base, names, args.repeat)
        shown = make_url(url)
        report(shown.get_backend_name(), args.trials, names, rows)


if __name__ == "__main__":
    main()
