"""Make a big finished study fast: N ASHA trials with per-epoch metrics, straight into a database.

    python benchmarks/make_big_study.py [--db sqlite:///big.db] [--trials 10000] [--name big-study]

The study itself is created through ``hpo.service.create_study`` (an ASHA study over the
``transformer-small`` preset, objective ``val_accuracy``, 9 epochs, workload ``external``), so
its spec and its Optuna study are exactly what the API makes. The trials then go in bulk,
bypassing the trial protocol, in one transaction of SQLAlchemy Core ``executemany``: into
Optuna's tables (trials, params, values, intermediate values, user attributes), the rows that
``Study.add_trials`` writes, built with Optuna's own table definitions and value encodings;
into ours, one run per trial and four metrics per epoch. ``add_trials`` itself makes about 35
ORM queries and a commit per trial (~25 ms on SQLite, over 4 minutes for 10,000), so it is
kept behind ``--via-optuna-api``; either way a few trials are read back through Optuna's
storage and compared field by field with the templates ``add_trials`` takes.
Trials are ranked by a noisy score of their parameters: the best third run all 9 epochs and
complete, the middle third are pruned at epoch 3 and the rest at epoch 1, as ASHA (eta 3)
would. Timestamps follow 8 trials running side by side.

Importable: ``build(url, trials=..., name=...)`` returns a :class:`BigStudy`; ``check`` reads it
back through ``hpo.service`` and Optuna.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import os
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import optuna  # noqa: E402
from optuna.distributions import distribution_to_json  # noqa: E402
from optuna.storages._rdb import models  # noqa: E402  (Optuna's table definitions)
from optuna.trial import TrialState  # noqa: E402
from sqlalchemy import Connection, insert, select, text, update  # noqa: E402

from hpo import algorithms, parse_spec, service  # noqa: E402
from hpo.spec import CategoricalParam, FloatParam, IntParam, StudySpec  # noqa: E402
from hpo.storage import Database, MetricRow, RunRow, StudyRow  # noqa: E402

MAX_EPOCHS = 9
#: ASHA rungs with grace period 1 and reduction factor 3 below 9 epochs
RUNGS = (1, 3)
PARALLELISM = 8
METRICS = ("val_accuracy", "val_loss", "train_loss", "epoch_seconds")
_CHUNK = 20_000  # metric rows per executemany


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


def _frozen(trial: FakeTrial, dists: dict[str, Any]) -> optuna.trial.FrozenTrial:
    values = {step: m["val_accuracy"] for step, m in enumerate(trial.curve, start=1)}
    last = trial.curve[-1]
    frozen = optuna.trial.create_trial(
        params=trial.params,
        distributions=dists,
        # a pruned trial keeps its last reported value, as Optuna's tell(PRUNED) does
        value=last["val_accuracy"],
        intermediate_values=values,
        state=TrialState.COMPLETE if trial.completed else TrialState.PRUNED,
        # what hpo.service.complete records for a completed trial
        user_attrs={"metrics": dict(last)} if trial.completed else {},
    )
    frozen.number = trial.number  # add_trials numbers trials in the order given
    # Optuna keeps naive local times
    frozen.datetime_start = trial.started_at.astimezone().replace(tzinfo=None)
    frozen.datetime_complete = trial.finished_at.astimezone().replace(tzinfo=None)
    return frozen


def add_via_optuna_api(db: Database, spec: StudySpec, trials: list[FakeTrial]) -> None:
    """Optuna's own ``add_trials``: one transaction and ~35 queries per trial (~25 ms each)."""
    dists = algorithms.distributions(spec.space)
    study = optuna.load_study(study_name=spec.name, storage=db.optuna_storage)
    study.add_trials([_frozen(t, dists) for t in trials])


def _utc_naive(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc).replace(tzinfo=None)  # Optuna's RDB convention


def _optuna_trial_rows(optuna_study_id: int, trials: list[FakeTrial]) -> list[dict[str, Any]]:
    return [
        {
            "number": t.number,
            "study_id": optuna_study_id,
            "state": TrialState.COMPLETE if t.completed else TrialState.PRUNED,
            "datetime_start": _utc_naive(t.started_at),
            "datetime_complete": _utc_naive(t.finished_at),
        }
        for t in trials
    ]


def _optuna_detail_rows(
    spec: StudySpec, trials: list[FakeTrial], trial_ids: dict[int, int]
) -> dict[Any, list[dict[str, Any]]]:
    """Rows of Optuna's params, values, intermediate values and user attributes, per table."""
    dists = algorithms.distributions(spec.space)
    dist_json = {name: distribution_to_json(d) for name, d in dists.items()}
    rows: dict[Any, list[dict[str, Any]]] = {
        models.TrialParamModel: [],
        models.TrialValueModel: [],
        models.TrialIntermediateValueModel: [],
        models.TrialUserAttributeModel: [],
    }
    to_value = models.TrialValueModel.value_to_stored_repr
    to_step = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr
    for t in trials:
        tid = trial_ids[t.number]
        rows[models.TrialParamModel] += [
            {
                "trial_id": tid,
                "param_name": name,
                "param_value": dists[name].to_internal_repr(value),
                "distribution_json": dist_json[name],
            }
            for name, value in t.params.items()
        ]
        value, kind = to_value(t.curve[-1]["val_accuracy"])
        rows[models.TrialValueModel].append(
            {"trial_id": tid, "objective": 0, "value": value, "value_type": kind}
        )
        for step, metrics in enumerate(t.curve, start=1):
            stored, stored_kind = to_step(metrics["val_accuracy"])
            rows[models.TrialIntermediateValueModel].append(
                {
                    "trial_id": tid,
                    "step": step,
                    "intermediate_value": stored,
                    "intermediate_value_type": stored_kind,
                }
            )
        if t.completed:
            rows[models.TrialUserAttributeModel].append(
                {"trial_id": tid, "key": "metrics", "value_json": json.dumps(t.curve[-1])}
            )
    return rows


def insert_optuna_rows(
    conn: Connection, spec: StudySpec, optuna_study_id: int, trials: list[FakeTrial]
) -> None:
    """Optuna's rows for the trials, with executemany: what ``add_trials`` writes, in bulk."""
    conn.execute(insert(models.TrialModel.__table__), _optuna_trial_rows(optuna_study_id, trials))
    for model, rows in _optuna_detail_rows(spec, trials, optuna_ids(conn, optuna_study_id)).items():
        for chunk in _chunks(iter(rows), _CHUNK):
            conn.execute(insert(model.__table__), chunk)


def optuna_ids(conn: Connection, optuna_study_id: int) -> dict[int, int]:
    """Optuna's trial id of each trial number of the study."""
    rows = conn.execute(
        text("SELECT number, trial_id FROM trials WHERE study_id = :id"), {"id": optuna_study_id}
    )
    return {int(number): int(trial_id) for number, trial_id in rows}


def _run_row(study_id: int, trial: FakeTrial, trial_id: int) -> dict[str, Any]:
    return {
        "study_id": study_id,
        "trial_number": trial.number,
        "optuna_trial_id": trial_id,
        "attempt": 1,
        "state": "completed" if trial.completed else "pruned",
        "token_hash": "",  # no token hashes to "": nobody can report to a finished bench run
        "worker": f"bench-worker-{trial.number % PARALLELISM}",
        "gpus": str(trial.number % PARALLELISM),
        "last_step": trial.epochs,
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


def _chunks(rows: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def insert_ours(
    conn: Connection, study_id: int, trials: list[FakeTrial], trial_ids: dict[int, int]
) -> None:
    """Our runs and metrics, with executemany, and the study's counters and status."""
    conn.execute(insert(RunRow), [_run_row(study_id, t, trial_ids[t.number]) for t in trials])
    run_ids = {
        int(number): int(run_id)
        for number, run_id in conn.execute(
            select(RunRow.trial_number, RunRow.id).where(RunRow.study_id == study_id)
        )
    }
    for chunk in _chunks(_metric_rows(study_id, trials, run_ids), _CHUNK):
        conn.execute(insert(MetricRow), chunk)
    last = max(t.finished_at for t in trials)
    conn.execute(
        update(StudyRow)
        .where(StudyRow.id == study_id)
        .values(
            handed_out=len(trials),
            status="completed",
            created_at=min(t.started_at for t in trials),
            updated_at=last,
            finished_at=last,
        )
    )


def verify_optuna_view(
    db: Database, spec: StudySpec, trials: list[FakeTrial], trial_ids: dict[int, int]
) -> None:
    """Optuna reads a few trials back exactly as the templates ``add_trials`` would take.

    Raises:
        SystemExit: naming the first field that differs.
    """
    dists = algorithms.distributions(spec.space)
    for t in (trials[0], trials[len(trials) // 2], trials[-1]):
        got, want = db.optuna_storage.get_trial(trial_ids[t.number]), _frozen(t, dists)
        for name in _FROZEN_FIELDS:
            a, b = getattr(got, name), getattr(want, name)
            if a != b and not (name.startswith("datetime") and abs(a - b) < _SECOND):
                raise SystemExit(f"trial {t.number}: optuna reads {name}={a!r}, not {b!r}")


_FROZEN_FIELDS = (
    "number",
    "state",
    "value",
    "params",
    "distributions",
    "intermediate_values",
    "user_attrs",
    "datetime_start",
    "datetime_complete",
)
_SECOND = timedelta(seconds=1)


def build(
    url: str,
    *,
    trials: int = 10_000,
    name: str = "big-study",
    seed: int = 0,
    via_optuna_api: bool = False,
) -> BigStudy:
    """Create study ``name`` with ``trials`` finished trials in the database at ``url``.

    Args:
        via_optuna_api: add Optuna's trials with ``Study.add_trials`` (about 25 ms a trial on
            SQLite) instead of bulk inserts into Optuna's tables (what ``add_trials`` writes,
            checked by reading some back through Optuna).
    """
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    db = Database(url)
    try:
        spec = study_spec(name, trials, seed)
        created = service.create_study(db, spec=spec)
        with db.transaction() as session:
            row = session.get(StudyRow, created.id)
            optuna_study_id = row.optuna_study_id if row else 0
        fakes = fake_trials(spec, trials, seed=seed)
        seconds["create + generate"] = time.perf_counter() - clock
        clock = time.perf_counter()
        if via_optuna_api:
            add_via_optuna_api(db, spec, fakes)
        with db.engine.begin() as conn:  # one transaction: all the rows or none
            if not via_optuna_api:
                insert_optuna_rows(conn, spec, optuna_study_id, fakes)
            trial_ids = optuna_ids(conn, optuna_study_id)
            seconds["optuna rows"] = time.perf_counter() - clock
            clock = time.perf_counter()
            insert_ours(conn, created.id, fakes, trial_ids)
        seconds["hpo runs + metrics"] = time.perf_counter() - clock
        verify_optuna_view(db, spec, fakes, trial_ids)
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
        n_optuna = len(
            optuna.load_study(study_name=name, storage=db.url).get_trials(deepcopy=False)
        )
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
    parser.add_argument(
        "--via-optuna-api",
        action="store_true",
        help="add Optuna's trials with Study.add_trials (slow: ~25 ms a trial on SQLite)",
    )
    args = parser.parse_args()
    started = time.perf_counter()
    big = build(
        args.db,
        trials=args.trials,
        name=args.name,
        seed=args.seed,
        via_optuna_api=args.via_optuna_api,
    )
    wall = time.perf_counter() - started
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in big.seconds.items())
    print(f"built {big.name!r} ({big.trials} trials) in {wall:.1f} s: {phases}")
    for line in check(args.db, args.name, args.trials):
        print("  " + line)


if __name__ == "__main__":
    main()
