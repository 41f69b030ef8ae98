"""Search efficiency: best final accuracy against epochs spent, every algorithm, next to Ray Tune.

Every hpo algorithm runs through the real service: a controller process (``uvicorn
api.app:create_app``) on a fresh PostgreSQL database, and ``--parallelism`` trials per study in
flight, each spoken for over HTTP with the trial protocol (ask, one report per epoch, complete),
exactly as a worker on a GPU node would. By default (``--schedule lockstep``) the trials in
flight report one epoch each in turn, the timing the Ray Tune runs below get too, so a run is
the same run every time and equals ``search_simulation.py``'s replay of it trial for trial;
``--schedule threads`` gives every trial slot its own worker thread instead, reporting as fast
as the service answers, interleaved differently every run. What a worker "trains" is an MLP
configuration of LCBench, whose
learning curve comes from YAHPO Gym's surrogate model in ``../shared/data/lcbench``
(``benchmarks/_lcbench.py``). Every study gets ``--budget`` epochs (default 1,040: twenty
full-length trials of 52 epochs), counted by the benchmark as the service takes the reports:
the report that would spend one epoch more is not sent, and its trial is ended, so every
method spends exactly the same epochs. (``budget.max_total_epochs`` would stop each study a
little earlier, by a rule that never lets the trials in flight overrun the limit; its own
tests check it, and leaving it out keeps the budgets exactly equal here.)

Beside them, in the same run, the recipe users copy from Ray Tune's tutorials:

- ``raytune-random-asha``: random search (``num_samples=250``) with
  ``ASHAScheduler(max_t=52, grace_period=1)`` (its default ``reduction_factor`` of 4);
- ``raytune-optuna-asha``: ``OptunaSearch`` (TPE) with the same scheduler.

By default (``--ray-engine objects``) Ray Tune's own ``ASHAScheduler`` and ``OptunaSearch``
objects make every decision, driven by an event loop here with the same number of trials in
flight: a ``Tuner`` spends about half a second of its own per trial on this machine, which
would make the 60 Ray Tune runs take hours without changing a single decision.
``--ray-engine tuner`` runs the real ``Tuner`` instead (``reuse_actors=True``) to check that.

The anytime curve of one run is, after each epoch spent, the best validation accuracy at the
last epoch among the trials that ran to the end so far (a trial stopped early is not a finished
model). The figure shows the mean over every task and seed, with a band of one standard error,
and is written to ``docs/search_efficiency.html`` (and ``.png`` when kaleido can draw it);
``--json`` keeps every run's curve.

    python benchmarks/search_efficiency.py [--tasks 126025,...] [--seeds 5 | 5-9] [--budget 1040]
        [--algorithms auto,random,...] [--parallelism 4] [--jobs 2] [--postgres-url URL]

Needs ``onnxruntime`` and ``ray[tune]`` (``pip install -e ".[bench]"``). Not a test: it prints
figures and target checks and never fails on them.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import math
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
from _lcbench import DEV_TASKS, EPOCHS, GRID_SPACE, SEARCH_SPACE, Surrogate  # noqa: E402

#: hpo's algorithms as the benchmark names them, and the spec's ``algorithm`` for each
HPO_ALGORITHMS: dict[str, dict[str, Any]] = {
    "auto": {"name": "auto"},
    "grid": {"name": "grid"},
    "random": {"name": "random"},
    "asha": {"name": "asha"},
    "bayesian": {"name": "bayesian"},
    "bayesian+asha": {"name": "bayesian", "early_stopping": "asha"},
    "bayesian+hyperband": {"name": "bayesian", "early_stopping": "hyperband"},
    # TPE over the trials successive halving stopped (Optuna's TPESampler with a pruner): the
    # model of the two rows above until BOHB's became their default
    "bayesian+asha+tpe": {"name": "bayesian", "early_stopping": "asha", "model": "tpe"},
    "bayesian+hyperband+tpe": {"name": "bayesian", "early_stopping": "hyperband", "model": "tpe"},
}
RAY_TUNE = ("raytune-random-asha", "raytune-optuna-asha")
#: the tutorials' ``num_samples``
RAY_TUNE_SAMPLES = 250
CHECKPOINTS = (260, 520, 1040)
OBJECTIVE = "val_accuracy"


def log(message: str) -> None:
    print(f"[search_efficiency] {message}", file=sys.stderr, flush=True)


@dataclass
class Run:
    """One study (or one Ray Tune experiment) on one task with one seed."""

    method: str
    task: str
    seed: int
    #: (epochs spent when it finished, its accuracy at the last epoch), one per finished trial
    finished: list[tuple[int, float]] = field(default_factory=list)
    epochs: int = 0
    trials: int = 0
    seconds: float = 0.0
    #: what ``auto`` chose, as the study says
    chose: str = ""

    def curve(self, budget: int) -> np.ndarray:
        """Best final accuracy after each epoch 1..budget (NaN before the first finished trial)."""
        out = np.full(budget, np.nan)
        best = -math.inf
        events = sorted(self.finished)
        i = 0
        for epoch in range(1, budget + 1):
            while i < len(events) and events[i][0] <= epoch:
                best = max(best, events[i][1])
                i += 1
            if best > -math.inf:
                out[epoch - 1] = best
        return out


class Ledger:
    """Epochs spent by one run's workers, in the order the service took the reports."""

    def __init__(self, run: Run, budget: int) -> None:
        self.run = run
        self.budget = budget
        self.lock = threading.Lock()

    def spend(self) -> bool:
        """Count one epoch; False once the budget is spent (a worker that still holds a trial
        then stops it: the budget is the same for every method)."""
        with self.lock:
            if self.run.epochs >= self.budget:
                return False
            self.run.epochs += 1
            return True

    def finished(self, value: float) -> None:
        with self.lock:
            self.run.finished.append((self.run.epochs, value))


# ---------------------------------------------------------------------------- hpo, for real


def study_spec(name: str, method: str, seed: int, budget: int, parallelism: int) -> dict[str, Any]:
    algorithm = {**HPO_ALGORITHMS[method], "seed": seed}
    return {
        "name": name,
        "objective": {"metric": OBJECTIVE, "direction": "maximize"},
        "search_space": GRID_SPACE if method == "grid" else SEARCH_SPACE,
        "algorithm": algorithm,
        "budget": {
            "max_epochs": EPOCHS,
            "parallelism": parallelism,
            "max_retries": 0,
        },
        "workload": {"name": "external"},
    }


def study_name(method: str, task: str, seed: int) -> str:
    """The name of the study of ``method`` on ``task`` with ``seed`` (Hyperband draws its
    brackets from it, so ``search_simulation.py`` names its studies the same)."""
    return f"se-{method.replace('+', '-')}-{task}-{seed}"


def hpo_run(
    base_url: str, surrogate: Surrogate, method: str, task: str, seed: int, args: argparse.Namespace
) -> Run:
    from hpo.client import Client

    run = Run(method, task, seed)
    name = study_name(method, task, seed)
    started = time.perf_counter()
    with Client(base_url, timeout=120) as client:
        created = client.create_study(study_spec(name, method, seed, args.budget, args.parallelism))
        run.chose = _chosen(created)
        if args.schedule == "lockstep":
            _lockstep(client, name, surrogate, task, run, args)
        else:
            _threads(base_url, name, surrogate, task, run, args)
        if client.get_study(name).status == "running":
            client.cancel_study(name)
    run.seconds = time.perf_counter() - started
    return run


def _threads(
    base_url: str, name: str, surrogate: Surrogate, task: str, run: Run, args: argparse.Namespace
) -> None:
    """``--schedule threads``: a worker thread per trial slot, each asking and reporting as
    fast as the service answers."""
    from hpo.client import Client, HPOClientError

    ledger = Ledger(run, args.budget)

    def worker(index: int) -> None:
        with Client(base_url, timeout=120) as own:
            while True:
                try:
                    trial = own.ask(name, worker=f"bench-{index}")
                except HPOClientError as exc:
                    if exc.status_code == 409:  # the budget is spent, or the study ended
                        return
                    raise
                with ledger.lock:
                    run.trials += 1
                if not _train(trial, surrogate.curve(task, trial.params), ledger):
                    return

    with concurrent.futures.ThreadPoolExecutor(args.parallelism) as pool:
        for future in [pool.submit(worker, i) for i in range(args.parallelism)]:
            future.result()


def _lockstep(
    client: Any, name: str, surrogate: Surrogate, task: str, run: Run, args: argparse.Namespace
) -> None:
    """``--schedule lockstep``: ``parallelism`` trials in flight, each trained one epoch in
    turn, as the Ray Tune recipe runs here and as ``search_simulation.py`` replays it: every
    free slot asks first (in order), then each trial in flight reports one epoch. The service
    sees the same requests as from ``parallelism`` workers, one at a time, so a run is the same
    run every time."""
    from hpo.client import HPOClientError

    in_flight: list[tuple[Any, np.ndarray, list[int]]] = []  # trial, curve, [epochs done]
    ended = False
    while run.epochs < args.budget:
        while not ended and len(in_flight) < args.parallelism:
            try:
                trial = client.ask(name, worker=f"bench-{len(in_flight)}")
            except HPOClientError as exc:
                if exc.status_code != 409:  # the budget is spent, or the study ended
                    raise
                ended = True
                break
            run.trials += 1
            in_flight.append((trial, surrogate.curve(task, trial.params), [0]))
        if not in_flight:
            return
        for item in list(in_flight):
            trial, curve, done = item
            done[0] += 1
            epoch = done[0]
            run.epochs += 1
            value = float(curve[epoch - 1])
            if epoch == EPOCHS:
                trial.complete({OBJECTIVE: value})
                run.finished.append((run.epochs, value))
                in_flight.remove(item)
            elif trial.report(epoch, {OBJECTIVE: value}):
                in_flight.remove(item)
            if run.epochs >= args.budget:
                break
    for trial, _, _ in in_flight:  # the budget is spent: the trials still running end here
        trial.fail("the benchmark's epoch budget is spent", kind="reported")


def _train(trial: Any, curve: np.ndarray, ledger: Ledger) -> bool:
    """Report the curve epoch by epoch until the service stops the trial or it ends; False
    when the benchmark's own count says the budget is spent."""
    for epoch in range(1, EPOCHS + 1):
        if not ledger.spend():
            trial.fail("the benchmark's epoch budget is spent", kind="reported")
            return False
        value = float(curve[epoch - 1])
        if epoch == EPOCHS:
            trial.complete({OBJECTIVE: value})
            ledger.finished(value)
            return True
        if trial.report(epoch, {OBJECTIVE: value}):
            return True
    return True


def _chosen(study: Any) -> str:
    choice = getattr(study, "algorithm_choice", None)
    if choice is None:
        return ""
    return str(getattr(choice, "summary", "") or choice)


@contextlib.contextmanager
def hpo_service(postgres_url: str | None) -> Iterator[str]:
    """A controller process on a fresh PostgreSQL database (protocol_load.py's set-up)."""
    import protocol_load as pl

    with pl.postgres_server(postgres_url) as (server_url, _pid):
        with pl.fresh_database(server_url) as database_url:
            with tempfile.TemporaryDirectory() as tmp:
                log_path = Path(tmp) / "controller.log"
                with pl.controller(database_url, log_path) as (base_url, _):
                    yield base_url


# ------------------------------------------------------------------------- Ray Tune's recipe


def ray_space(seed_space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The LCBench space in Ray Tune's words (upper bounds of its int domains are exclusive)."""
    from ray import tune

    out: dict[str, Any] = {}
    for name, p in seed_space.items():
        if p["type"] == "int":
            make = tune.lograndint if p.get("log") else tune.randint
            out[name] = make(p["low"], p["high"] + 1)
        else:
            make = tune.loguniform if p.get("log") else tune.uniform
            out[name] = make(p["low"], p["high"])
    return out


def ray_tune_objects(
    surrogate: Surrogate, method: str, task: str, seed: int, budget: int, parallelism: int
) -> Run:
    """Ray Tune's ASHAScheduler and searcher make every decision; trials run round-robin, one
    epoch each per turn, ``parallelism`` at a time, like the Tuner's actors."""
    import optuna
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # a line per trial otherwise
    run = Run(method, task, seed)
    started = time.perf_counter()
    space = ray_space(SEARCH_SPACE)
    scheduler = ASHAScheduler(
        time_attr="training_iteration", metric=OBJECTIVE, mode="max", max_t=EPOCHS, grace_period=1
    )
    searcher = None
    rng = np.random.RandomState(seed)
    if method == "raytune-optuna-asha":
        searcher = OptunaSearch(metric=OBJECTIVE, mode="max", seed=seed)
        searcher.set_search_properties(OBJECTIVE, "max", space)

    def new_trial() -> tuple[Any, np.ndarray] | None:
        if run.trials >= RAY_TUNE_SAMPLES:
            return None
        trial = Trial("lcbench", config={}, stub=True)
        if searcher is not None:
            config = searcher.suggest(trial.trial_id)
        else:
            config = {name: domain.sample(random_state=rng) for name, domain in space.items()}
        trial.config = config
        scheduler.on_trial_add(None, trial)
        run.trials += 1
        return trial, surrogate.curve(task, config)

    running: list[list[Any]] = []  # [trial, curve, epochs done]
    while run.epochs < budget:
        while len(running) < parallelism:
            made = new_trial()
            if made is None:
                break
            running.append([*made, 0])
        if not running:
            break
        for item in list(running):
            trial, curve, done = item
            epoch = item[2] = done + 1
            value = float(curve[epoch - 1])
            run.epochs += 1
            result = {"training_iteration": epoch, OBJECTIVE: value, "trial_id": trial.trial_id}
            if searcher is not None:
                searcher.on_trial_result(trial.trial_id, result)
            decision = scheduler.on_trial_result(None, trial, result)
            if epoch == EPOCHS or decision == TrialScheduler.STOP:
                if epoch == EPOCHS:
                    run.finished.append((run.epochs, value))
                scheduler.on_trial_complete(None, trial, result)
                if searcher is not None:
                    searcher.on_trial_complete(trial.trial_id, result)
                running.remove(item)
            if run.epochs >= budget:
                break
    run.seconds = time.perf_counter() - started
    return run


def ray_tune_tuner(method: str, task: str, seed: int, budget: int, parallelism: int) -> Run:
    """The recipe itself: ``tune.Tuner`` with ``num_samples=250`` and the ASHA scheduler,
    stopped once the epochs spent reach the budget."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    run = Run(method, task, seed)
    started = time.perf_counter()
    lock = threading.Lock()

    class Count(tune.Callback):
        def on_trial_result(
            self, iteration: int, trials: Any, trial: Any, result: Any, **info: Any
        ) -> None:
            with lock:
                run.epochs += 1
                if result["training_iteration"] == EPOCHS and run.epochs <= budget:
                    run.finished.append((run.epochs, float(result[OBJECTIVE])))

        def on_trial_start(self, iteration: int, trials: Any, trial: Any, **info: Any) -> None:
            run.trials += 1

    class Budget(tune.Stopper):
        def __call__(self, trial_id: str, result: Any) -> bool:
            return False

        def stop_all(self) -> bool:
            return run.epochs >= budget

    searcher = OptunaSearch(seed=seed) if method == "raytune-optuna-asha" else None
    with tempfile.TemporaryDirectory() as tmp:
        tuner = tune.Tuner(
            tune.with_resources(_tune_trainable, {"cpu": 1}),
            param_space={"task": task, **ray_space(SEARCH_SPACE)},
            tune_config=tune.TuneConfig(
                num_samples=RAY_TUNE_SAMPLES,
                max_concurrent_trials=parallelism,
                metric=OBJECTIVE,
                mode="max",
                search_alg=searcher,
                scheduler=ASHAScheduler(max_t=EPOCHS, grace_period=1),
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                storage_path=tmp, verbose=0, callbacks=[Count()], stop=Budget()
            ),
        )
        tuner.fit()
    run.seconds = time.perf_counter() - started
    return run


def _tune_trainable(config: dict[str, Any]) -> None:
    from ray import tune

    global _WORKER_SURROGATE
    if _WORKER_SURROGATE is None:
        _WORKER_SURROGATE = Surrogate()
    params = {k: v for k, v in config.items() if k != "task"}
    curve = _WORKER_SURROGATE.curve(config["task"], params)
    for epoch in range(EPOCHS):
        tune.report({OBJECTIVE: float(curve[epoch])})


_WORKER_SURROGATE: Surrogate | None = None


# ------------------------------------------------------------------------------ the summary


def summarize(runs: list[Run], budget: int) -> dict[str, Any]:
    methods = list(dict.fromkeys(r.method for r in runs))
    out: dict[str, Any] = {}
    for method in methods:
        mine = [r for r in runs if r.method == method]
        # the spread is over seeds: each seed's curve is its mean over the tasks (the tasks
        # differ in how good a model can get; that is no spread of the method's)
        seeds = sorted({r.seed for r in mine})
        by_seed = np.array(
            [np.mean([r.curve(budget) for r in mine if r.seed == seed], axis=0) for seed in seeds]
        )
        mean = by_seed.mean(axis=0)  # NaN until every run has a finished trial
        sem = by_seed.std(axis=0, ddof=1) / math.sqrt(len(seeds)) if len(seeds) > 1 else 0 * mean
        out[method] = {
            "runs": len(mine),
            "mean": mean,
            "sem": sem,
            "at": {c: _at(mean, c) for c in CHECKPOINTS if c <= budget},
            "trials": float(np.mean([r.trials for r in mine])),
            "seconds": float(np.mean([r.seconds for r in mine])),
            "per_task": {
                task: {
                    c: float(np.mean([r.curve(budget)[c - 1] for r in mine if r.task == task]))
                    for c in CHECKPOINTS
                    if c <= budget
                }
                for task in dict.fromkeys(r.task for r in mine)
            },
        }
    return out


def _at(mean: np.ndarray, epoch: int) -> float:
    return float(mean[min(epoch, len(mean)) - 1])


def targets(summary: dict[str, Any], budget: int) -> list[str]:
    """The issue's targets, each a line saying met or missed, with the figures."""
    lines: list[str] = []
    if "auto" not in summary:
        return lines
    auto = summary["auto"]
    for c in CHECKPOINTS:
        if c > budget:
            continue
        rivals = {m: s["at"][c] for m, s in summary.items() if m != "auto"}
        beaten = [m for m, v in rivals.items() if not (auto["at"][c] >= v or math.isnan(v))]
        verdict = "met" if not beaten else f"MISSED (ahead: {', '.join(beaten)})"
        lines.append(f"auto >= every other method at {c} epochs ({auto['at'][c]:.4f}): {verdict}")
    recipe = summary.get("raytune-random-asha")
    if recipe is not None:
        final = float(recipe["mean"][~np.isnan(recipe["mean"])][-1])
        reach = np.nonzero(auto["mean"] >= final)[0]
        if len(reach):
            epochs = int(reach[0]) + 1
            verdict = "met" if epochs <= budget / 2 else "MISSED"
            lines.append(
                f"auto reaches the recipe's final mean best ({final:.4f}) at {epochs} epochs, "
                f"{epochs / budget:.0%} of the recipe's {budget}: {verdict} (target: at most half)"
            )
        else:
            lines.append(f"auto never reaches the recipe's final mean best ({final:.4f}): MISSED")
    return lines


def table(summary: dict[str, Any]) -> str:
    header = f"{'method':22s}" + "".join(f"{c:>10d}" for c in CHECKPOINTS) + "    trials  s/run"
    rows = [header, "-" * len(header)]
    for method, s in summary.items():
        cells = "".join(f"{s['at'].get(c, math.nan):10.4f}" for c in CHECKPOINTS)
        rows.append(f"{method:22s}{cells}  {s['trials']:8.1f}  {s['seconds']:5.1f}")
    return "\n".join(rows)


def task_table(summary: dict[str, Any], epochs: int) -> str:
    """Mean best per task at ``epochs``: a result must hold on every task, not on average."""
    tasks = list(next(iter(summary.values()))["per_task"])
    header = f"{'at ' + str(epochs) + ' epochs':22s}" + "".join(f"{t:>9s}" for t in tasks)
    rows = [header, "-" * len(header)]
    for method, s in summary.items():
        cells = "".join(f"{s['per_task'][t].get(epochs, math.nan):9.4f}" for t in tasks)
        rows.append(f"{method:22s}{cells}")
    return "\n".join(rows)


def figure(summary: dict[str, Any], budget: int, path: Path, subtitle: str) -> None:
    import plotly.graph_objects as go

    fig = go.Figure()
    x = np.arange(1, budget + 1)
    for i, (method, s) in enumerate(summary.items()):
        color = _COLORS[i % len(_COLORS)]
        mean, sem = s["mean"], s["sem"]
        keep = ~np.isnan(mean)
        width = 4 if method == "auto" else 2
        dash = "dot" if method.startswith("raytune") else "solid"
        fig.add_trace(
            go.Scatter(
                x=np.concatenate([x[keep], x[keep][::-1]]),
                y=np.concatenate([(mean + sem)[keep], (mean - sem)[keep][::-1]]),
                fill="toself",
                fillcolor=_fade(color),
                line={"width": 0},
                hoverinfo="skip",
                showlegend=False,
                legendgroup=method,
            )
        )
        fig.add_trace(
            go.Scatter(
                x=x[keep],
                y=mean[keep],
                name=method,
                legendgroup=method,
                line={"color": color, "width": width, "dash": dash},
            )
        )
    for c in CHECKPOINTS:
        if c <= budget:
            fig.add_vline(x=c, line={"color": "#bbb", "width": 1, "dash": "dash"})
    fig.update_layout(
        title={
            "text": f"Best final validation accuracy against epochs spent<br><sup>{subtitle}</sup>"
        },
        xaxis_title="epochs spent (all trials)",
        yaxis_title="best final accuracy (mean; band: ± s.e. over seeds)",
        template="plotly_white",
        width=1000,
        height=600,
        legend={"x": 1.01, "y": 0},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(path.with_suffix(".html"), include_plotlyjs="cdn")
    if "BROWSER_PATH" not in os.environ and Path("/usr/bin/chromium").exists():
        os.environ["BROWSER_PATH"] = "/usr/bin/chromium"  # kaleido's Chrome: Debian's
    try:
        fig.write_image(path.with_suffix(".png"), scale=1)
        log(f"figure: {path.with_suffix('.png')}")
    except Exception as exc:  # kaleido missing, or no browser for it
        log(f"no PNG ({type(exc).__name__}: {str(exc)[:200]}); the HTML is written")
    log(f"figure: {path.with_suffix('.html')}")


_COLORS = [
    "#d62728",
    "#1f77b4",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#7f7f7f",
    "#bcbd22",
    "#ff7f0e",
]


def _fade(color: str) -> str:
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},0.15)"


# ---------------------------------------------------------------------------------- the run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default=",".join(DEV_TASKS))
    parser.add_argument(
        "--seeds",
        type=_seeds,
        default="5",
        help="how many seeds (5: seeds 0 to 4), or a range of them (5-9), to check a result on "
        "seeds it was not chosen on",
    )
    parser.add_argument("--budget", type=int, default=1040)
    parser.add_argument("--parallelism", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=2, help="hpo studies run at once")
    parser.add_argument(
        "--algorithms",
        default=",".join([*HPO_ALGORITHMS, *RAY_TUNE]),
        help="comma-separated: " + ", ".join([*HPO_ALGORITHMS, *RAY_TUNE]),
    )
    parser.add_argument(
        "--schedule",
        choices=("lockstep", "threads"),
        default="lockstep",
        help="lockstep: the trials in flight report one epoch each in turn, as the Ray Tune "
        "runs and the simulation do (the same run every time); threads: --parallelism worker "
        "threads per study report as fast as the service answers (interleaved differently "
        "every run)",
    )
    parser.add_argument("--ray-engine", choices=("objects", "tuner"), default="objects")
    parser.add_argument("--postgres-url", default=os.environ.get("HPO_BENCH_POSTGRES_URL"))
    parser.add_argument("--figure", type=Path, default=ROOT / "docs" / "search_efficiency")
    parser.add_argument("--json", type=Path, default=None, help="write every run's curve here")
    parser.add_argument(
        "--from-json",
        type=Path,
        default=None,
        help="summarize and draw the runs a previous --json holds, without running anything",
    )
    args = parser.parse_args(argv)
    if args.from_json:
        report_saved(args)
        return

    tasks = [t for t in args.tasks.split(",") if t]
    methods = [m for m in args.algorithms.split(",") if m]
    unknown = [m for m in methods if m not in HPO_ALGORITHMS and m not in RAY_TUNE]
    if unknown:
        parser.error(f"unknown algorithm {unknown[0]!r}")
    surrogate = Surrogate()
    runs: list[Run] = []
    jobs = [(m, t, s) for m in methods for t in tasks for s in args.seeds]
    started = time.perf_counter()
    hpo_jobs = [j for j in jobs if j[0] in HPO_ALGORITHMS]
    if hpo_jobs:
        with hpo_service(args.postgres_url) as base_url:
            log(f"{len(hpo_jobs)} hpo studies through {base_url}, {args.jobs} at a time")
            runs += _all(
                hpo_jobs,
                args.jobs,
                lambda m, t, s: hpo_run(base_url, surrogate, m, t, s, args),
                started,
            )
    ray_jobs = [j for j in jobs if j[0] in RAY_TUNE]
    if ray_jobs:
        if args.ray_engine == "tuner":
            runs += _ray_tuner(ray_jobs, args, started)
        else:
            runs += _all(
                ray_jobs,
                1,
                lambda m, t, s: ray_tune_objects(surrogate, m, t, s, args.budget, args.parallelism),
                started,
            )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "tasks": tasks,
                    "seeds": len(args.seeds),
                    "seed_list": list(args.seeds),
                    "budget": args.budget,
                    "parallelism": args.parallelism,
                    "ray_engine": args.ray_engine,
                    "schedule": args.schedule,
                    "runs": [
                        {
                            "method": r.method,
                            "task": r.task,
                            "seed": r.seed,
                            "trials": r.trials,
                            "epochs": r.epochs,
                            "seconds": r.seconds,
                            "finished": r.finished,
                            "chose": r.chose,
                        }
                        for r in runs
                    ],
                },
                indent=1,
            )
        )
    subtitle = _subtitle(tasks, len(args.seeds), args.parallelism, args.schedule)
    report(runs, args.budget, args.figure, subtitle)
    log(f"done in {time.perf_counter() - started:.0f} s")


def _seeds(text: str) -> range:
    """``5``: seeds 0 to 4; ``5-9``: seeds 5 to 9."""
    first, _, last = text.partition("-")
    seeds = range(int(first), int(last) + 1) if last else range(int(first))
    if not seeds:
        raise argparse.ArgumentTypeError(f"no seeds in {text!r}")
    return seeds


def report_saved(args: argparse.Namespace) -> None:
    saved = json.loads(args.from_json.read_text())
    runs = [
        Run(
            r["method"],
            r["task"],
            r["seed"],
            [(int(f[0]), float(f[1])) for f in r["finished"]],
            r["epochs"],
            r["trials"],
            r["seconds"],
            r.get("chose", ""),
        )
        for r in saved["runs"]
    ]
    # runs saved before --schedule existed ran worker threads
    schedule = saved.get("schedule", "threads")
    subtitle = _subtitle(saved["tasks"], saved["seeds"], saved["parallelism"], schedule)
    report(runs, saved["budget"], args.figure, subtitle)


def _subtitle(tasks: list[str], seeds: int, parallelism: int, schedule: str) -> str:
    timing = "an epoch each in turn" if schedule == "lockstep" else "a thread each"
    return (
        f"LCBench surrogate, tasks {', '.join(tasks)}; {seeds} seeds each; {parallelism} "
        f"in flight, {timing}; hpo over its REST protocol on PostgreSQL"
    )


def report(runs: list[Run], budget: int, path: Path, subtitle: str) -> None:
    summary = summarize(runs, budget)
    print(table(summary))
    for epochs in CHECKPOINTS:
        if epochs <= budget:
            print()
            print(task_table(summary, epochs))
    print()
    for line in targets(summary, budget):
        print(line)
    for run in runs:
        if run.method == "auto" and run.chose:
            print(f"auto chose: {run.chose}")
            break
    figure(summary, budget, path, subtitle)


def _all(
    jobs: list[tuple[str, str, int]],
    workers: int,
    one: Callable[[str, str, int], Run],
    started: float,
) -> list[Run]:
    runs: list[Run] = []
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = {pool.submit(one, *job): job for job in jobs}
        for future in concurrent.futures.as_completed(futures):
            run = future.result()
            runs.append(run)
            best = max((v for _, v in run.finished), default=math.nan)
            log(
                f"[{len(runs)}/{len(jobs)} {time.perf_counter() - started:5.0f}s] {run.method} "
                f"task {run.task} seed {run.seed}: best {best:.4f}, {run.trials} trials, "
                f"{run.epochs} epochs, {run.seconds:.1f} s"
            )
    return runs


def _ray_tuner(
    jobs: list[tuple[str, str, int]], args: argparse.Namespace, started: float
) -> list[Run]:
    import ray

    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    path = os.pathsep.join([str(ROOT / "benchmarks"), str(ROOT)])
    ray.init(
        num_cpus=args.parallelism,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    try:
        return _all(
            jobs, 1, lambda m, t, s: ray_tune_tuner(m, t, s, args.budget, args.parallelism), started
        )
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
