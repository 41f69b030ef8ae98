"""``hpo demo``: the product's main job in one command.

Starts the controller on the embedded default (SQLite file, local Ray), creates an ASHA study
on the built-in ``digits-vit`` workload sized to finish in a few minutes on two CPU cores,
shows a live progress line, prints the best configuration, and keeps serving.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from typing import Any, TextIO

from hpo.client import Client, HPOClientError
from hpo.schemas import StudyPublic
from hpo.settings import Settings

from .server import Controller


def demo_spec(name: str, *, max_trials: int, max_epochs: int, gpus: float) -> dict[str, Any]:
    """An ASHA study over the five transformer knobs on scikit-learn's digits."""
    return {
        "name": name,
        "objective": {"metric": "val_accuracy", "direction": "maximize"},
        "search_space": {
            "learning_rate": {"type": "float", "low": 3e-4, "high": 1e-2, "log": True},
            "batch_size": {"type": "categorical", "choices": [32, 64, 128]},
            "dropout": {"type": "float", "low": 0.0, "high": 0.3, "step": 0.1},
            "num_heads": {"type": "categorical", "choices": [2, 4]},
            "num_layers": {"type": "int", "low": 1, "high": 3},
        },
        "algorithm": {"name": "asha", "seed": 0, "reduction_factor": 3, "grace_period": 1},
        "budget": {"max_trials": max_trials, "max_epochs": max_epochs, "parallelism": 2},
        "workload": {"name": "digits-vit", "options": {}},
        "resources": {"gpus_per_trial": gpus, "cpus_per_trial": 1},
    }


def progress_line(study: StudyPublic, elapsed: float) -> str:
    counts = study.trial_counts
    done = counts["completed"] + counts["pruned"] + counts["failed"]
    size = study.size or study.n_trials
    best = (
        f"best {study.spec.objective.metric} {study.best.value:.4f} (trial {study.best.number})"
        if study.best
        else "best -"
    )
    return (
        f"[{done:>3}/{size}] completed {counts['completed']}  pruned {counts['pruned']}  "
        f"failed {counts['failed']}  running {counts['running'] + counts['pending']}  "
        f"{best}  {int(elapsed // 60)}:{int(elapsed % 60):02d}"
    )


def watch(client: Client, name: str, out: TextIO, *, interval: float = 0.5) -> StudyPublic:
    """Redraw the progress line until the study ends; returns the final study."""
    started = time.monotonic()
    tty = out.isatty()
    last = ""
    while True:
        study = client.get_study(name)
        line = progress_line(study, time.monotonic() - started)
        if tty:
            out.write("\r" + line.ljust(len(last)))
        elif line.split("  ")[:-1] != last.split("  ")[:-1]:  # a log: only when it changed
            out.write(line + "\n")
        out.flush()
        last = line
        if study.status != "running":
            if tty:
                out.write("\n")
            return study
        time.sleep(interval)


def run_demo(
    settings: Settings, *, max_trials: int, max_epochs: int, keep_serving: bool, out: TextIO
) -> int:
    controller = Controller(settings, log_level="warning")
    out.write("hpo demo: starting Ray ... ")
    out.flush()
    out.write(controller.start_ray() + "\n")
    controller.start_background()
    out.write(f"hpo demo: controller serving on {controller.url} (docs at {controller.url}/docs)\n")
    try:
        import ray

        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
        client = Client(controller.url)
        name = "digits-vit-asha-" + datetime.now().strftime("%Y%m%d-%H%M%S")
        client.create_study(
            demo_spec(name, max_trials=max_trials, max_epochs=max_epochs, gpus=gpus)
        )
        out.write(
            f"hpo demo: study {name!r}: ViT on digits, ASHA over {max_trials} trials of up "
            f"to {max_epochs} epochs, 2 at a time\n"
        )
        study = watch(client, name, out)
        _print_result(client, study, controller.url, out)
        if keep_serving:
            out.write("hpo demo: still serving; press Ctrl-C to stop\n")
            out.flush()
            while True:
                time.sleep(3600)
        return 0 if study.best else 1
    except KeyboardInterrupt:
        return 130
    finally:
        controller.close()


def _print_result(client: Client, study: StudyPublic, url: str, out: TextIO) -> None:
    if study.best is None:
        out.write(f"hpo demo: study ended {study.status} with no completed trial\n")
        return
    try:
        trial = client.trial(study.name, study.best.number)
        epochs = trial.last_step
    except HPOClientError:
        epochs = None
    out.write(
        f"hpo demo: best trial {study.best.number}: {study.spec.objective.metric} = "
        f"{study.best.value:.4f} after {epochs} epochs\n"
        f"best configuration:\n{json.dumps(study.best.params, indent=2)}\n"
        f"from Python: Client({url!r}).best_config({study.name!r})\n"
    )
    out.flush()


def main(settings: Settings, **kwargs: Any) -> int:
    return run_demo(settings, out=sys.stdout, **kwargs)
