"""Search efficiency, simulated: hpo's own pure functions over the LCBench surrogate, no service.

``benchmarks/search_efficiency.py`` runs every algorithm through the real service and takes
about 20 minutes for five seeds. This script replays the same decisions in one process, so
that a rule can be judged on many more seeds (60 seeds take about 2 minutes for ``auto`` on
two cores, a few seconds for random search, about 3 minutes for TPE with early stopping,
whose draws model every earlier trial): each trial is drawn by
:func:`hpo.algorithms.sample_params` from the study's history, exactly as the service's ask
does, and every report is judged by
:func:`hpo.algorithms.successive_halving` against the values other trials recorded at the
rung, exactly as the service's early stopping does. What is simulated is only the timing:
``--parallelism`` trials are in flight and each advances one epoch in turn, which is what
``search_efficiency.py --schedule lockstep`` (its default) has the service's workers do, so
the two give the same trials, stopped at the same epochs, to the digit (its ``--schedule
threads`` interleaves by wall-clock time instead: up to 0.01 apart on five seeds).

A variant is a name and the spec's ``algorithm`` as JSON; the study's ``seed`` is the
benchmark seed. ``"judge_on_final": true`` in a variant (not a spec field) makes every rung
judge on the trial's final accuracy instead of its value at the rung: perfect early stopping,
the upper bound of what any promotion rule could gain. ``"promotion"`` simulates what the
trial protocol cannot run, trials paused at a rung and resumed later (at no cost: the resumed
trial goes on from the epoch it paused at): ``"paper"`` is promotion-based ASHA (Li et al.,
2020, the paper's own rule): a trial pauses at every rung, and a free worker resumes the best
trial of the highest rung whose top ``1/reduction_factor`` it is in and that was not promoted
yet, or else starts a new one; ``"resume"`` is the service's successive halving whose stopped
trials are paused instead, resumed the same way once enough values at their rung put them in
its top ``1/reduction_factor``. ::

    python benchmarks/search_simulation.py --seeds 10-69 \\
        --variant 'auto={"name": "auto"}' \\
        --variant 'auto-5={"name": "auto", "n_startup_trials": 5}' \\
        --recipe-json /tmp/recipe.json

prints, per variant, the mean best final accuracy at 260 / 520 / 1,040 epochs (the anytime
curve of ``search_efficiency.py``: the best final accuracy among trials that ran to the end),
the difference to the first variant paired by task and seed, with its standard error, and
with ``--recipe-json`` (a ``search_efficiency.py --algorithms raytune-random-asha --seeds
... --json`` of the same seeds) for each block of five seeds whether the variant reaches the
Ray Tune recipe's final mean best within half the budget, the issue's target. Needs
``onnxruntime`` (``pip install -e ".[bench]"``). Not a test: it never fails on a figure.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
import search_efficiency  # noqa: E402
from _lcbench import DEV_TASKS, EPOCHS, GRID_SPACE, SEARCH_SPACE, Surrogate  # noqa: E402

if TYPE_CHECKING:
    from hpo.algorithms import PastTrial
    from hpo.spec import AlgorithmSpec

CHECKPOINTS = (260, 520, 1040)
#: the issue's target is judged on blocks of this many seeds (the benchmark's default)
BLOCK = 5


def log(message: str) -> None:
    print(f"[search_simulation] {message}", file=sys.stderr, flush=True)


@dataclass
class _Trial:
    """One simulated trial: what the service's tables would hold of it."""

    number: int
    params: dict[str, Any]
    #: its learning curve, from the surrogate (epoch 1..52)
    curve: np.ndarray
    bracket: int
    state: str = "running"
    value: float | None = None
    last_step: int | None = None
    #: (epoch, value) at each rung it reached
    rungs: list[tuple[int, float]] = field(default_factory=list)
    next_rung: int = 0


def simulate(
    surrogate: Surrogate,
    task: str,
    seed: int,
    algorithm: dict[str, Any],
    *,
    budget: int,
    parallelism: int,
    judge_on_final: bool = False,
    promotion: str | None = None,
    study_name: str = "sim",
) -> tuple[list[tuple[int, float]], int]:
    """One study: (epochs spent when it finished, its final accuracy) for every trial that ran
    to the end, and how many trials it started. ``study_name`` matters to Hyperband only, whose
    brackets are drawn from a hash of the study's name and the trial's number."""
    from hpo import algorithms
    from hpo.algorithms import sample_params
    from hpo.spec import StudySpec

    spec = StudySpec.model_validate(
        {
            "name": study_name,
            "objective": {"metric": "val_accuracy", "direction": "maximize"},
            "search_space": GRID_SPACE if algorithm["name"] == "grid" else SEARCH_SPACE,
            "algorithm": {**algorithm, "seed": seed},
            "budget": {"max_epochs": EPOCHS, "parallelism": parallelism, "max_retries": 0},
            "workload": {"name": "external"},
        }
    )
    chosen = algorithms.in_force(spec)
    if chosen.pruner not in ("none", "asha", "hyperband"):
        raise SystemExit(f"early stopping {chosen.pruner!r} is not simulated (asha, hyperband)")
    plan = algorithms.halving_plan(chosen, spec.budget)
    if promotion:
        if plan is None or plan.n_brackets != 1:
            raise SystemExit('"promotion" needs one successive-halving bracket (asha)')
        return _promotion(
            surrogate, task, spec, chosen, plan, promotion, budget=budget, parallelism=parallelism
        )
    history: list[_Trial] = []
    #: (bracket, rung) -> {trial number: the value it recorded there}
    at_rung: dict[tuple[int, int], dict[int, float]] = {}
    in_flight: list[_Trial] = []
    finished: list[tuple[int, float]] = []
    epochs = 0
    while epochs < budget:
        while len(in_flight) < parallelism:
            number = len(history)
            params = sample_params(
                chosen,
                spec.space,
                number=number,
                direction="maximize",
                history=_past(chosen, history),
            )
            trial = _Trial(
                number,
                params,
                surrogate.curve(task, params),
                algorithms.bracket_of(plan, study_name, number) if plan else 0,
            )
            history.append(trial)
            in_flight.append(trial)
        for trial in list(in_flight):
            epochs += 1
            if not _epoch(trial, epochs, finished, in_flight) and plan is not None:
                step, value = trial.last_step or 0, trial.value or 0.0
                judged = float(trial.curve[-1]) if judge_on_final else value
                bracket, number = trial.bracket, trial.number
                waits = algorithms.waits_at_first_rung(
                    plan, bracket, next_rung=trial.next_rung, last_step=step - 1
                )

                def standing(rung: int, v: float, b: int = bracket, n: int = number) -> Any:
                    values = at_rung.get((b, rung), {})
                    return algorithms.standing_among(
                        v, [x for k, x in values.items() if k != n], maximize=True
                    )

                outcome = algorithms.successive_halving(
                    plan=plan,
                    bracket=bracket,
                    next_rung=trial.next_rung,
                    step=step,
                    value=judged,
                    standing=standing,
                    waiting=at_rung[(bracket, 0)][number] if waits else None,
                )
                for rung, recorded in outcome.recorded:
                    at_rung.setdefault((bracket, rung), {})[number] = recorded
                    trial.rungs.append((algorithms.rung_step(plan, bracket, rung), recorded))
                trial.next_rung = outcome.next_rung
                if outcome.stop:
                    trial.state = "pruned"
                    in_flight.remove(trial)
            if epochs >= budget:
                break
    return finished, len(history)


def _past(chosen: AlgorithmSpec, history: list[_Trial]) -> list[PastTrial] | None:
    """The history an ask hands the sampler: none where drawing does not look at it (random,
    asha, grid), as the service's ask reads none then; building Optuna's study of 250 earlier
    trials on every ask would cost most of a run's time for nothing."""
    from hpo import algorithms

    if not algorithms.needs_history(chosen):
        return None
    return [
        algorithms.PastTrial(
            t.number, t.state, t.params, t.value, t.last_step, rungs=tuple(t.rungs)
        )
        for t in history
    ]


def _epoch(
    trial: _Trial, epochs: int, finished: list[tuple[int, float]], in_flight: list[_Trial]
) -> bool:
    """Train ``trial`` one more epoch, the study's ``epochs``-th; True when that was its last
    (it is then completed, in ``finished``, and out of ``in_flight``)."""
    step = (trial.last_step or 0) + 1
    trial.last_step, trial.value = step, float(trial.curve[step - 1])
    if step < EPOCHS:
        return False
    trial.state = "completed"
    finished.append((epochs, trial.value))
    in_flight.remove(trial)
    return True


def _promotion(
    surrogate: Surrogate,
    task: str,
    spec: Any,
    chosen: Any,
    plan: Any,
    promotion: str,
    *,
    budget: int,
    parallelism: int,
) -> tuple[list[tuple[int, float]], int]:
    """:func:`simulate` with trials paused at a rung and resumed when promoted (``promotion``
    is ``paper`` or ``resume``, see the module's docstring)."""
    from hpo import algorithms
    from hpo.algorithms import rung_steps, sample_params

    stops = [*rung_steps(plan), EPOCHS]
    history: list[_Trial] = []
    #: rung index -> {trial number: value there}; and the trials promoted from each rung
    recorded: list[dict[int, float]] = [{} for _ in stops[:-1]]
    promoted: list[set[int]] = [set() for _ in stops[:-1]]
    in_flight: list[_Trial] = []
    finished: list[tuple[int, float]] = []
    epochs = 0

    def next_trial() -> _Trial:
        for rung in reversed(range(len(recorded))):
            values = recorded[rung]
            top = sorted(values, key=values.__getitem__, reverse=True)
            for number in top[: len(values) // plan.reduction_factor]:
                if number not in promoted[rung]:
                    promoted[rung].add(number)
                    trial = history[number]
                    trial.state, trial.next_rung = "running", rung + 1
                    return trial
        params = sample_params(
            chosen,
            spec.space,
            number=len(history),
            direction="maximize",
            history=_past(chosen, history),
        )
        trial = _Trial(len(history), params, surrogate.curve(task, params), 0)
        history.append(trial)
        return trial

    while epochs < budget:
        while len(in_flight) < parallelism:
            in_flight.append(next_trial())
        for trial in list(in_flight):
            epochs += 1
            if not _epoch(trial, epochs, finished, in_flight):
                step, value = trial.last_step or 0, trial.value or 0.0
                if step == stops[trial.next_rung]:
                    rung = trial.next_rung
                    goes_on = promotion == "resume" and algorithms.promoted(
                        algorithms.standing_among(
                            value, list(recorded[rung].values()), maximize=True
                        ),
                        plan.reduction_factor,
                    )
                    recorded[rung][trial.number] = value
                    trial.rungs.append((step, value))
                    if goes_on:
                        promoted[rung].add(trial.number)
                        trial.next_rung = rung + 1
                    else:  # paused: the sampler sees it as stopped at the rung
                        trial.state = "pruned"
                        in_flight.remove(trial)
            if epochs >= budget:
                break
    return finished, len(history)


def anytime(finished: list[tuple[int, float]], budget: int) -> np.ndarray:
    """Best final accuracy after each epoch 1..budget (0 before the first finished trial)."""
    out = np.zeros(budget)
    best = 0.0
    events = sorted(finished)
    i = 0
    for epoch in range(1, budget + 1):
        while i < len(events) and events[i][0] <= epoch:
            best = max(best, events[i][1])
            i += 1
        out[epoch - 1] = best
    return out


_SURROGATE: Surrogate | None = None
#: variant keys that are the simulation's, not the spec's
_NOT_SPEC = ("judge_on_final", "promotion")


def _job(
    name: str, variant: dict[str, Any], task: str, seed: int, budget: int, parallelism: int
) -> Any:
    global _SURROGATE
    if _SURROGATE is None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        _SURROGATE = Surrogate()
    import warnings

    warnings.filterwarnings("ignore", category=Warning, module="optuna")
    algorithm = {k: v for k, v in variant.items() if k not in _NOT_SPEC}
    finished, trials = simulate(
        _SURROGATE,
        task,
        seed,
        algorithm,
        budget=budget,
        parallelism=parallelism,
        judge_on_final=bool(variant.get("judge_on_final")),
        promotion=variant.get("promotion"),
        # search_efficiency.py's study name, so that a variant named as its method there (say
        # bayesian+hyperband) draws the same Hyperband brackets
        study_name=search_efficiency.study_name(name, task, seed),
    )
    return finished, trials


def _seeds(text: str) -> list[int]:
    if "-" in text:
        first, last = (int(part) for part in text.split("-", 1))
        return list(range(first, last + 1))
    return list(range(int(text)))


def _variant(text: str) -> tuple[str, dict[str, Any]]:
    name, sep, spec = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(
            f'{text!r}: write NAME=JSON, e.g. \'auto={{"name": "auto"}}\''
        )
    try:
        algorithm = json.loads(spec)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"{name}: the algorithm is not JSON ({exc})") from exc
    if not isinstance(algorithm, dict) or "name" not in algorithm:
        raise argparse.ArgumentTypeError(f"{name}: the algorithm must be an object with a name")
    if algorithm.get("promotion", "paper") not in ("paper", "resume"):
        raise argparse.ArgumentTypeError(f'{name}: "promotion" is "paper" or "resume"')
    from pydantic import ValidationError

    from hpo.spec import AlgorithmSpec

    try:
        AlgorithmSpec.model_validate({k: v for k, v in algorithm.items() if k not in _NOT_SPEC})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"]))
        raise argparse.ArgumentTypeError(f"{name}: {where}: {first['msg']}") from exc
    return name, algorithm


def _recipe_finals(path: Path, budget: int) -> dict[tuple[str, int], float]:
    saved = json.loads(path.read_text())
    finals: dict[tuple[str, int], float] = {}
    for run in saved["runs"]:
        if run["method"] == "raytune-random-asha":
            curve = anytime([(int(e), float(v)) for e, v in run["finished"]], budget)
            finals[(run["task"], int(run["seed"]))] = float(curve[-1])
    return finals


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--variant",
        type=_variant,
        action="append",
        help="NAME=JSON of the spec's algorithm (repeat; the first is the baseline of the "
        "paired differences); default: auto",
    )
    parser.add_argument("--seeds", type=_seeds, default="10-39", help="N (0..N-1) or A-B")
    parser.add_argument("--tasks", default=",".join(DEV_TASKS))
    parser.add_argument("--budget", type=int, default=1040)
    parser.add_argument("--parallelism", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=2, help="processes")
    parser.add_argument(
        "--recipe-json", type=Path, help="search_efficiency.py --json of the recipe"
    )
    parser.add_argument("--json", type=Path, help="write every run's finished trials here")
    args = parser.parse_args(argv)
    variants = dict(args.variant or [("auto", {"name": "auto"})])
    tasks = [t for t in args.tasks.split(",") if t]
    recipe = _recipe_finals(args.recipe_json, args.budget) if args.recipe_json else {}
    missing = [(t, s) for t in tasks for s in args.seeds if recipe and (t, s) not in recipe]
    if missing:
        raise SystemExit(
            f"{args.recipe_json} has no recipe run for task {missing[0][0]} seed {missing[0][1]}"
        )

    curves: dict[str, dict[tuple[str, int], np.ndarray]] = {}
    saved: dict[str, list[dict[str, Any]]] = {}
    started = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(args.jobs) as pool:
        for name, variant in variants.items():
            futures = {
                (task, seed): pool.submit(
                    _job, name, variant, task, seed, args.budget, args.parallelism
                )
                for task in tasks
                for seed in args.seeds
            }
            curves[name] = {}
            trials = []
            for (task, seed), future in futures.items():
                finished, n = future.result()
                curves[name][(task, seed)] = anytime(finished, args.budget)
                trials.append(n)
                saved.setdefault(name, []).append(
                    {"task": task, "seed": seed, "trials": n, "finished": finished}
                )
            log(f"{name}: {len(futures)} runs, {np.mean(trials):.0f} trials each, "
                f"{time.perf_counter() - started:.0f} s so far")  # fmt: skip

    keys = [(t, s) for t in tasks for s in args.seeds]
    checks = [c for c in CHECKPOINTS if c <= args.budget]
    baseline = next(iter(variants))
    print(
        f"\nseeds {args.seeds[0]}-{args.seeds[-1]}, {len(tasks)} tasks, budget {args.budget}, "
        f"{args.parallelism} in flight: mean best final accuracy at " + " / ".join(map(str, checks))
    )
    for name in variants:
        mean = np.mean([curves[name][k] for k in keys], axis=0)
        cells = " / ".join(f"{mean[c - 1]:.4f}" for c in checks)
        line = f"  {name:<24} {cells}"
        if name != baseline:
            diffs = []
            for c in checks:
                d = np.array([curves[name][k][c - 1] - curves[baseline][k][c - 1] for k in keys])
                se = d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else math.nan
                diffs.append(f"{d.mean():+.4f}±{se:.4f}")
            line += f"   vs {baseline}: " + " / ".join(diffs)
        print(line)
    if recipe:
        half = args.budget // 2
        print(
            f"\nreaches the recipe's final mean best within {half} epochs, {BLOCK} seeds a block:"
        )
        blocks = [args.seeds[i : i + BLOCK] for i in range(0, len(args.seeds) - BLOCK + 1, BLOCK)]
        for name in variants:
            met = 0
            reached = []
            for block in blocks:
                bkeys = [(t, s) for t in tasks for s in block]
                final = float(np.mean([recipe[k] for k in bkeys]))
                mean = np.mean([curves[name][k] for k in bkeys], axis=0)
                reach = np.nonzero(mean >= final)[0]
                epochs = int(reach[0]) + 1 if len(reach) else None
                met += epochs is not None and epochs <= half
                reached.append(f"{block[0]}-{block[-1]}: {epochs or 'never'}")
            print(f"  {name:<24} met on {met} of {len(blocks)}  ({', '.join(reached)})")
    if args.json:
        args.json.write_text(json.dumps(saved))
        log(f"runs: {args.json}")


if __name__ == "__main__":
    main()
