"""Dispatch overhead: N short `synthetic` trials through the full hpo service vs Ray Tune.

Both run the same trainable (one epoch that sleeps EPOCH seconds and reports a metric) with the
same parallelism on the same machine and the same local Ray. The overhead is
``wall / ideal - 1`` where ``ideal = trials * epoch / parallelism``.

    python benchmarks/dispatch_overhead.py [--trials 200] [--epoch 0.2] [--parallelism 2]

Not a test: it prints figures and never fails on a timing. Needs ``ray[tune]`` for the peer.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import ray  # noqa: E402

from hpo.client import Client  # noqa: E402


def run_hpo(trials: int, epoch: float, parallelism: int) -> float:
    from controller.server import Controller
    from hpo.settings import Settings
    from tests._servers import free_port

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(database_url=f"sqlite:///{tmp}/bench.db", port=free_port())
        controller = Controller(settings, log_level="warning")
        controller.start_background()
        try:
            client = Client(controller.url)
            started = time.perf_counter()
            client.create_study(
                {
                    "name": "overhead",
                    "objective": {"metric": "val_accuracy"},
                    "search_space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
                    "algorithm": {"name": "random", "seed": 0},
                    "budget": {"max_trials": trials, "max_epochs": 1, "parallelism": parallelism},
                    "workload": {"name": "synthetic", "options": {"epoch_seconds": epoch}},
                    "resources": {"gpus_per_trial": 0, "cpus_per_trial": 1},
                }
            )
            while client.get_study("overhead").status == "running":
                time.sleep(0.1)
            return time.perf_counter() - started
        finally:
            controller.close()


def run_ray_tune(trials: int, epoch: float, parallelism: int) -> float:
    from ray import tune

    def trainable(config: dict) -> None:
        time.sleep(epoch)
        tune.report({"val_accuracy": 1 - abs(config["x"] - 0.6)})

    with tempfile.TemporaryDirectory() as tmp:
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            param_space={"x": tune.uniform(0.0, 1.0)},
            tune_config=tune.TuneConfig(
                num_samples=trials,
                max_concurrent_trials=parallelism,
                metric="val_accuracy",
                mode="max",
            ),
            run_config=tune.RunConfig(storage_path=tmp, verbose=0),
        )
        started = time.perf_counter()
        tuner.fit()
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--epoch", type=float, default=0.2)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--only", choices=["hpo", "ray-tune"], help="run one side only")
    args = parser.parse_args()
    ray.init(num_cpus=args.parallelism, include_dashboard=False, log_to_driver=False)
    ideal = args.trials * args.epoch / args.parallelism
    print(
        f"{args.trials} trials x {args.epoch} s, parallelism {args.parallelism}, "
        f"{os.cpu_count()} CPUs; ideal wall time {ideal:.1f} s"
    )
    sides = {
        "hpo": ("hpo (REST + Ray tasks)", run_hpo),
        "ray-tune": ("Ray Tune Tuner", run_ray_tune),
    }
    for key, (name, runner) in sides.items():
        if args.only and key != args.only:
            continue
        try:
            wall = runner(args.trials, args.epoch, args.parallelism)
        except ImportError as exc:
            print(f"{name:<24} skipped: {exc}")
            continue
        print(f"{name:<24} wall {wall:7.1f} s   overhead {wall / ideal - 1:6.2f}", flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
