"""``hpo demo``: the product's main job in one command.

Starts the controller on the embedded default (SQLite file, local Ray), creates an ASHA study
on the built-in ``digits-vit`` workload sized to finish in a few minutes on two CPU cores,
shows a live progress line, prints the best configuration, and keeps serving.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from datetime import datetime, timezone
from typing import Any, TextIO

import hpo
from hpo import service
from hpo.client import Client, HPOClientError
from hpo.schemas import StudyPublic
from hpo.settings import Settings

from .logs import configure_logging
from .server import AccessRefused, Controller


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
    # the trials budget is the [done/size] above; the others (epochs, GPU-hours, time) follow
    limited = study.budget_parts(now=datetime.now(timezone.utc), limited_only=True)
    used = [part for part in limited if not part.startswith("trials ")]
    return (
        f"[{done:>3}/{size}] completed {counts['completed']}  pruned {counts['pruned']}  "
        f"failed {counts['failed']}  running {counts['running'] + counts['pending']}  "
        f"{best}  {int(elapsed // 60)}:{int(elapsed % 60):02d}"
        + "".join(f"  {part}" for part in used)
    )


class ProgressLine:
    """The live progress line: redrawn in place on a terminal, one line per change in a log.

    Log lines go to their own stream; on a terminal :meth:`above` wipes the progress line first
    and redraws it after, so that log lines scroll past above it instead of breaking it up.
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.text = ""
        self._lock = threading.RLock()

    def show(self, line: str) -> None:
        with self._lock:
            if self.tty:
                self.out.write("\r" + line.ljust(len(self.text)))
            elif line.split("  ")[:-1] != self.text.split("  ")[:-1]:  # only when it changed
                self.out.write(line + "\n")
            self.out.flush()
            self.text = line

    def end(self) -> None:
        """Leave the last state on screen; from now on log lines need no care."""
        with self._lock:
            if self.tty and self.text:
                self.out.write("\n")
                self.out.flush()
            self.text = ""

    def above(self, write: Any) -> None:
        """Call ``write()`` (which prints a log line) with the progress line out of its way."""
        with self._lock:
            drawn = self.tty and self.text
            if drawn:
                self.out.write("\r\033[K")
                self.out.flush()
            write()
            if drawn:
                self.out.write(self.text)
                self.out.flush()


class _AboveProgress(logging.StreamHandler):
    """A log handler that keeps clear of the progress line."""

    def __init__(self, progress: ProgressLine, stream: TextIO) -> None:
        super().__init__(stream)
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        self.progress.above(lambda: super(_AboveProgress, self).emit(record))


def watch(
    client: Client, name: str, progress: ProgressLine, *, interval: float = 0.5
) -> StudyPublic:
    """Redraw the progress line until the study ends; returns the final study."""
    started = time.monotonic()
    while True:
        study = client.get_study(name)
        progress.show(progress_line(study, time.monotonic() - started))
        if study.status != "running":
            progress.end()
            return study
        time.sleep(interval)


def run_demo(
    settings: Settings,
    *,
    max_trials: int,
    max_epochs: int,
    keep_serving: bool,
    out: TextIO,
    log_level: str = "info",
    log_stream: TextIO | None = None,
) -> int:
    progress = ProgressLine(out)
    configure_logging(log_level, handler=_AboveProgress(progress, log_stream or sys.stderr))
    # uvicorn's startup lines would only repeat what the demo prints itself
    controller = Controller(settings, log_level="warning")
    try:
        out.write(controller.access().replace("hpo: ", "hpo demo: ", 1) + "\n")
    except AccessRefused:
        controller.app.state.db.dispose()
        raise
    # the demo's own client needs a key only once operators have made keys
    api_key = os.environ.get("HPO_API_KEY") or (
        controller.own_key("demo", "member")
        if service.operator_keys_exist(controller.app.state.db)
        else None
    )
    out.write("hpo demo: starting Ray ... ")
    out.flush()
    out.write(controller.start_ray() + "\n")
    controller.start_background()
    out.write(f"hpo demo: controller serving on {controller.url} (docs at {controller.url}/docs)\n")
    try:
        import ray

        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
        # the progress line polls twice a second: hpo's own traffic, logged at debug
        client = Client(
            controller.url, user_agent=f"hpo-demo/{hpo.__version__}", api_key=api_key or ""
        )
        name = "digits-vit-asha-" + datetime.now().strftime("%Y%m%d-%H%M%S")
        client.create_study(
            demo_spec(name, max_trials=max_trials, max_epochs=max_epochs, gpus=gpus)
        )
        out.write(
            f"hpo demo: study {name!r}: ViT on digits, ASHA over {max_trials} trials of up "
            f"to {max_epochs} epochs, 2 at a time\n"
        )
        study = watch(client, name, progress)
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
