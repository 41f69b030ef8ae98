"""Make a big finished study fast: N ASHA trials with per-epoch metrics, then its Optuna mirror.

    python benchmarks/make_big_study.py [--db sqlite:///big.db] [--trials 10000] [--name big-study]

The study is created through ``hpo.service.create_study`` (an ASHA study over the
``transformer-small`` preset, objective ``val_accuracy``, 9 epochs, workload ``external``), so
its spec is exactly what the API makes. Its trials then go into our tables only, in bulk and in
one transaction (SQLAlchemy Core ``executemany``), bypassing the trial protocol but with the rows
the protocol would leave: per trial one ``hpo_trials`` row (not yet mirrored), one run, four
metrics per epoch and the values at the ASHA rungs it reached; the study ends completed. Then
the real mirror, ``hpo.service.sync_optuna``, writes Optuna's tables from ours through Optuna's
public storage API (one ``create_new_trial`` per trial, so this is most of the time: a progress
line on stderr tells how far it got), and every trial is read back with ``optuna.load_study``
and compared field by field with what was generated.

Trials are ranked by a noisy score of their parameters: the best third run all 9 epochs and
complete, the middle third are pruned at epoch 3 and the rest at epoch 1, as ASHA (eta 3)
would. Timestamps follow 8 trials running side by side.

Importable: ``build(url, trials=..., name=...)`` returns a :class:`BigStudy`; ``mirror`` finishes
the Optuna mirror of a study (a build cut short while mirroring, say); ``check`` reads the study
back through ``hpo.service`` and Optuna.
"""

from __future__ import annotations

import argparse
import heapq
import math
import os
import random
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402
from sqlalchemy import Connection, Select, func, insert, null, select, update  # noqa: E402

from hpo import algorithms, parse_spec, service  # noqa: E402
from hpo.spec import CategoricalParam, FloatParam, IntParam, StudySpec  # noqa: E402
from hpo.storage import Database, MetricRow, RungRow, RunRow, StudyRow, TrialRow  # noqa: E402

MAX_EPOCHS = 9
#: ASHA rungs with grace period 1 and reduction factor 3 below 9 epochs
RUNGS = (1, 3)
PARALLELISM = 8
METRICS = ("val_accuracy", "val_loss", "train_loss", "epoch_seconds")
_CHUNK = 20_000  # metric rows per executemany
#: a mirror pass claims a study for 120 s; a pass that died (a build cut short) leaves its
#: claim behind, and the next one waits that long for it
MIRROR_WAIT_S = 150.0


@dataclass(frozen=True)
class FakeTrial:
    """One finished trial as the generator made it; ``curve[i]`` is the report of step i+1."""

    number: int
    params: dict[str, Any]
    curve: list[dict[str, float]]
    started_at: datetime
    finished_at: datetime

    @property
    def epochs(self) -> int:
        return len(self.curve)

    @property
    def completed(self) -> bool:
        return self.epochs == MAX_EPOCHS


@dataclass
class BigStudy:
    url: str
    name: str
    study_id: int
    optuna_study_id: int
    trials: int
    seconds: dict[str, float] = field(default_factory=dict)


def study_spec(name: str, trials: int, seed: int = 0) -> StudySpec:
    return parse_spec(
        {
            "name": name,
            "objective": {"metric": "val_accuracy", "direction": "maximize"},
            "search_space": "transformer-small",
            "algorithm": {"name": "asha", "seed": seed},
            "budget": {"max_trials": trials, "max_epochs": MAX_EPOCHS, "parallelism": PARALLELISM},
            "workload": {"name": "external"},
        }
    )


def _sample(param: FloatParam | IntParam | CategoricalParam, rng: random.Random) -> Any:
    if isinstance(param, CategoricalParam):
        return rng.choice(param.choices)
    if isinstance(param, IntParam):
        return param.low + param.step * rng.randrange((param.high - param.low) // param.step + 1)
    if param.log:
        return math.exp(rng.uniform(math.log(param.low), math.log(param.high)))
    if param.step is not None:
        return rng.choice(param.grid_values() or [param.low])
    return rng.uniform(param.low, param.high)


def _quality(params: dict[str, Any]) -> float:
    """How good a configuration is, in [0, 1]: lr near 1e-3, little dropout, 4 layers."""
    lr = math.exp(-((math.log10(params["learning_rate"]) + 3.0) ** 2) / 1.5)
    dropout = 1.0 - abs(params["dropout"] - 0.1) * 1.2
    layers = 1.0 - abs(params["num_layers"] - 4) / 5
    return max(0.0, min(1.0, 0.55 * lr + 0.25 * dropout + 0.2 * layers))


def _curve(quality: float, epochs: int, params: dict[str, Any], rng: random.Random) -> list[dict]:
    ceiling = 0.5 + 0.45 * quality
    tau = 1.0 + 3.0 * (1.0 - quality)
    seconds = 4.0 + 3.0 * params["num_layers"] * 64 / params["batch_size"]
    curve = []
    for step in range(1, epochs + 1):
        acc = ceiling - (ceiling - 0.1) * math.exp(-step / tau) + rng.gauss(0, 0.01)
        acc = min(max(acc, 0.01), 0.999)
        curve.append(
            {
                "val_accuracy": acc,
                "val_loss": -math.log(acc) + rng.gauss(0, 0.02),
                "train_loss": -math.log(acc) * 0.85 + 0.3 * math.exp(-step),
                "epoch_seconds": seconds * rng.uniform(0.9, 1.1),
            }
        )
    return curve


def _epochs_by_rank(scores: list[float]) -> list[int]:
    """ASHA-like: the best third completes, the next third stops at 3 epochs, the rest at 1."""
    order = sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)
    epochs = [RUNGS[0]] * len(scores)
    third = len(scores) / 3
    for rank, i in enumerate(order):
        epochs[i] = MAX_EPOCHS if rank < third else RUNGS[1] if rank < 2 * third else RUNGS[0]
    return epochs


def fake_trials(spec: StudySpec, n: int, *, seed: int = 0) -> list[FakeTrial]:
    """N finished trials in order of number, run ``PARALLELISM`` at a time."""
    rng = random.Random(seed)
    params = [{k: _sample(p, rng) for k, p in spec.space.items()} for _ in range(n)]
    qualities = [_quality(p) for p in params]
    epochs = _epochs_by_rank([q + rng.gauss(0, 0.05) for q in qualities])
    curves = [_curve(q, e, p, rng) for q, e, p in zip(qualities, epochs, params, strict=True)]
    total = sum(m["epoch_seconds"] for c in curves for m in c) / PARALLELISM
    start = datetime.now(timezone.utc) - timedelta(seconds=total + 60)
    lanes = [start] * PARALLELISM
    trials = []
    for number, (p, curve) in enumerate(zip(params, curves, strict=True)):
        started = heapq.heappop(lanes)
        finished = started + timedelta(seconds=sum(m["epoch_seconds"] for m in curve))
        heapq.heappush(lanes, finished)
        trials.append(FakeTrial(number, p, curve, started, finished))
    return trials


def _trial_row(study_id: int, trial: FakeTrial) -> dict[str, Any]:
    """What ask, report and complete leave in ``hpo_trials`` (the run's id comes later)."""
    return {
        "study_id": study_id,
        "number": trial.number,
        "state": "completed" if trial.completed else "pruned",
        "params": trial.params,
        # a pruned trial keeps the value of its last report, as report() records it
        "value": trial.curve[-1]["val_accuracy"],
        "attempts": 1,
        "started_at": trial.started_at,
        "finished_at": trial.finished_at,
        "mirrored": None,  # for sync_optuna to write
    }


def _run_row(study_id: int, trial: FakeTrial, trial_id: int, rungs: list[int]) -> dict[str, Any]:
    return {
        "study_id": study_id,
        "trial_id": trial_id,
        "trial_number": trial.number,
        "attempt": 1,
        "state": "completed" if trial.completed else "pruned",
        "token_hash": "",  # no token hashes to "": nobody can report to a finished bench run
        "worker": f"bench-worker-{trial.number % PARALLELISM}",
        "gpus": str(trial.number % PARALLELISM),
        "last_step": trial.epochs,
        # the rungs it reached: it passed every one but the one it was pruned at
        "next_rung": sum(1 for step in rungs if step <= trial.epochs),
        # a pruned run's becomes SQL NULL below (None here would be JSON null)
        "final_metrics": dict(trial.curve[-1]) if trial.completed else None,
        "started_at": trial.started_at,
        "worker_started_at": trial.started_at,
        "heartbeat_at": trial.finished_at,
        "finished_at": trial.finished_at,
    }


def _metric_rows(
    study_id: int, trials: list[FakeTrial], run_ids: dict[int, int]
) -> Iterator[dict[str, Any]]:
    for trial in trials:
        for step, metrics in enumerate(trial.curve, start=1):
            for name in METRICS:
                yield {
                    "run_id": run_ids[trial.number],
                    "study_id": study_id,
                    "trial_number": trial.number,
                    "step": step,
                    "name": name,
                    "value": metrics[name],
                }


def _rung_rows(
    spec: StudySpec, study_id: int, trials: list[FakeTrial], run_ids: dict[int, int]
) -> Iterator[dict[str, Any]]:
    """The objective at every rung a trial reached, as the successive-halving rule records it."""
    plan = algorithms.halving_plan(spec.algorithm, spec.budget)
    assert plan is not None, "an ASHA study has a halving plan"
    for trial in trials:
        bracket = algorithms.bracket_of(plan, spec.name, trial.number)
        for rung, step in enumerate(algorithms.rung_steps(plan, bracket)):
            if step <= trial.epochs:
                yield {
                    "run_id": run_ids[trial.number],
                    "rung": rung,
                    "study_id": study_id,
                    "bracket": bracket,
                    "trial_number": trial.number,
                    "value": trial.curve[step - 1]["val_accuracy"],
                }


def _chunks(rows: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _ids(conn: Connection, query: Select[tuple[int, int]]) -> dict[int, int]:
    """``{trial number: id}`` of the rows just inserted."""
    return {int(number): int(row_id) for number, row_id in conn.execute(query)}


def insert_trials(
    conn: Connection, spec: StudySpec, study_id: int, trials: list[FakeTrial]
) -> None:
    """Trials, runs, metrics and rungs with executemany, and the study ended as completed."""
    conn.execute(insert(TrialRow), [_trial_row(study_id, t) for t in trials])
    trial_ids = _ids(
        conn, select(TrialRow.number, TrialRow.id).where(TrialRow.study_id == study_id)
    )
    plan = algorithms.halving_plan(spec.algorithm, spec.budget)
    rungs = algorithms.rung_steps(plan) if plan else []
    conn.execute(
        insert(RunRow), [_run_row(study_id, t, trial_ids[t.number], rungs) for t in trials]
    )
    conn.execute(
        update(RunRow)
        .where(RunRow.study_id == study_id, RunRow.state != "completed")
        .values(final_metrics=null())
    )
    run_ids = _ids(conn, select(RunRow.trial_number, RunRow.id).where(RunRow.study_id == study_id))
    for chunk in _chunks(_metric_rows(study_id, trials, run_ids), _CHUNK):
        conn.execute(insert(MetricRow), chunk)
    for chunk in _chunks(_rung_rows(spec, study_id, trials, run_ids), _CHUNK):
        conn.execute(insert(RungRow), chunk)
    last = max(t.finished_at for t in trials)
    conn.execute(
        update(StudyRow)
        .where(StudyRow.id == study_id)
        .values(
            handed_out=len(trials),
            status="completed",
            # create_study wrote version 1; every ask and the study's completion bump it
            version=StudyRow.version + len(trials) + 1,
            created_at=min(t.started_at for t in trials),
            updated_at=last,
            finished_at=last,
        )
    )


def _mirrored(db: Database, study_id: int) -> tuple[int, int]:
    """How many of the study's trials the Optuna mirror has written, of how many."""
    with db.transaction() as session:
        total, done = session.execute(
            select(func.count(), func.count().filter(TrialRow.mirrored == TrialRow.state)).where(
                TrialRow.study_id == study_id
            )
        ).one()
    return int(done), int(total)


def _progress(done: int, total: int, elapsed: float, *, end: str) -> None:
    rate = done / elapsed if elapsed > 0 else 0.0
    left = f", {(total - done) / rate:.0f} s left" if rate and done < total else ""
    line = f"mirroring to Optuna: {done:,}/{total:,} trials, {elapsed:.0f} s, {rate:.0f}/s{left}"
    print(f"\r{line}   ", end=end, file=sys.stderr, flush=True)


def mirror(db: Database, study_id: int, *, every: float = 1.0) -> float:
    """Run ``hpo.service.sync_optuna`` until the study's mirror is complete, with a progress
    line on stderr (redrawn in place on a terminal, a line every 15 s otherwise); returns
    its seconds.

    Raises:
        SystemExit: when the pass returned with trials of the study still not mirrored.
    """
    errors: list[BaseException] = []

    def run() -> None:
        try:
            service.sync_optuna(db, wait=MIRROR_WAIT_S)
        except BaseException as exc:  # re-raised below, in the caller's thread
            errors.append(exc)

    started = time.perf_counter()
    thread = threading.Thread(target=run, name="optuna-mirror", daemon=True)
    thread.start()
    tty, shown = sys.stderr.isatty(), started
    while thread.is_alive():
        thread.join(every)
        now = time.perf_counter()
        if tty or now - shown >= 15:
            _progress(*_mirrored(db, study_id), now - started, end="" if tty else "\n")
            shown = now
    seconds = time.perf_counter() - started
    if errors:
        raise errors[0]
    done, total = _mirrored(db, study_id)
    _progress(done, total, seconds, end="\n")
    if done != total:
        raise SystemExit(f"the Optuna mirror stopped with {total - done:,} trials not written")
    return seconds


def _expected(trial: FakeTrial, dists: dict[str, Any]) -> dict[str, Any]:
    """What Optuna should read of a trial: the fields of its ``FrozenTrial``."""
    last = trial.curve[-1]
    state = "completed" if trial.completed else "pruned"
    attrs: dict[str, Any] = {"hpo_state": state}  # hpo_attempts only after a retry
    if trial.completed:
        attrs["metrics"] = dict(last)
    return {
        "number": trial.number,
        "state": TrialState.COMPLETE if trial.completed else TrialState.PRUNED,
        # a pruned trial keeps its last reported value, as Optuna's tell(PRUNED) does
        "value": last["val_accuracy"],
        "params": trial.params,
        "distributions": dists,
        "intermediate_values": {s: m["val_accuracy"] for s, m in enumerate(trial.curve, 1)},
        "user_attrs": attrs,
        # Optuna keeps naive local times
        "datetime_start": trial.started_at.astimezone().replace(tzinfo=None),
        "datetime_complete": trial.finished_at.astimezone().replace(tzinfo=None),
    }


def verify_optuna_view(db: Database, spec: StudySpec, trials: list[FakeTrial]) -> None:
    """Optuna (``optuna.load_study``, its public API) reads every trial as it was generated.

    Raises:
        SystemExit: naming the first trial and field that differ.
    """
    study = optuna.load_study(study_name=spec.name, storage=db.optuna_storage)
    got = study.get_trials(deepcopy=False)
    if len(got) != len(trials):
        raise SystemExit(f"optuna reads {len(got):,} trials, not {len(trials):,}")
    dists = algorithms.distributions(spec.space)
    for fake, frozen in zip(trials, sorted(got, key=lambda t: t.number), strict=True):
        for name, want in _expected(fake, dists).items():
            have = getattr(frozen, name)
            if have != want and not (name.startswith("datetime") and abs(have - want) < _SECOND):
                raise SystemExit(f"trial {fake.number}: optuna reads {name}={have!r}, not {want!r}")


_SECOND = timedelta(seconds=1)


def build(url: str, *, trials: int = 10_000, name: str = "big-study", seed: int = 0) -> BigStudy:
    """Create study ``name`` with ``trials`` finished trials in the database at ``url``, and
    its Optuna mirror."""
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    db = Database(url)
    try:
        spec = study_spec(name, trials, seed)
        created = service.create_study(db, spec=spec)
        fakes = fake_trials(spec, trials, seed=seed)
        seconds["create + generate"] = time.perf_counter() - clock
        clock = time.perf_counter()
        with db.transaction(write=True) as session:  # one transaction: all the rows or none
            insert_trials(session.connection(), spec, created.id, fakes)
        seconds["hpo rows"] = time.perf_counter() - clock
        seconds["optuna mirror"] = mirror(db, created.id)
        clock = time.perf_counter()
        verify_optuna_view(db, spec, fakes)
        seconds["read back through optuna"] = time.perf_counter() - clock
        optuna_study_id = db.optuna_storage.get_study_id_from_name(name)
    finally:
        db.dispose()
    return BigStudy(url, name, created.id, optuna_study_id, trials, seconds)


def check(url: str, name: str, trials: int) -> list[str]:
    """Read the study back through hpo.service and Optuna; return one line per check.

    Raises:
        SystemExit: when a count or a sample trial is not what ``build`` wrote.
    """
    db = Database(url, upgrade=False)
    try:
        study = service.get_study(db, ref=name)
        _, listed = service.list_trials(db, ref=name, limit=1)
        sample = service.get_trial(db, ref=name, number=trials // 2)
        storage = db.optuna_storage
        n_optuna = storage.get_n_trials(storage.get_study_id_from_name(name))
    finally:
        db.dispose()
    counts = {k: v for k, v in study.trial_counts.items() if v}
    lines = [
        f"get_study: status {study.status}, n_trials {study.n_trials}, counts {counts}, "
        f"best {study.best.value if study.best else float('nan'):.4f}",
        f"list_trials: count {listed}; optuna trials: {n_optuna}",
        f"get_trial({sample.number}): {sample.state}, {len(sample.reports)} reports of "
        f"{sorted(sample.reports[0].metrics)}",
    ]
    problems = [
        f"{what} is {got}, expected {trials}"
        for what, got in (
            ("n_trials", study.n_trials),
            ("list_trials count", listed),
            ("optuna trials", n_optuna),
            ("completed + pruned", counts.get("completed", 0) + counts.get("pruned", 0)),
        )
        if got != trials
    ]
    if sample.last_step is None or len(sample.reports) != sample.last_step:
        problems.append(f"trial {sample.number} has {len(sample.reports)} reports")
    if problems:
        raise SystemExit("check failed: " + "; ".join(problems))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite:///big-study.db", help="SQLAlchemy URL")
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--name", default="big-study")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    big = build(args.db, trials=args.trials, name=args.name, seed=args.seed)
    wall = time.perf_counter() - started
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in big.seconds.items())
    print(f"built {big.name!r} ({big.trials} trials) in {wall:.1f} s: {phases}")
    for line in check(args.db, args.name, args.trials):
        print("  " + line)


if __name__ == "__main__":
    main()
