"""The LCBench surrogate (YAHPO Gym's ONNX model) as learning curves of MLP configurations.

Read from ``../shared/data/lcbench`` (never copied into the repository; see its README). A
configuration's whole curve (52 epochs of validation accuracy) costs one model call of about
a millisecond and is cached, so a benchmark can replay a trial epoch by epoch for free.

    surrogate = Surrogate()
    curve = surrogate.curve("126025", {"batch_size": 64, "learning_rate": 0.01, ...})
    curve[51]  # validation accuracy (a fraction) after epoch 52
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

#: where the shared benchmark data lies, beside the repository
DATA = Path(
    os.environ.get(
        "HPO_LCBENCH_DIR",
        Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "lcbench",
    )
)
#: the development tasks the data's README names: tune on these, judge generality over all six
DEV_TASKS = ("126025", "167161", "167168", "168910", "189354", "189866")
EPOCHS = 52
#: the model's continuous inputs, in its column order (YAHPO's ``cont_names``)
_COLUMNS = (
    "epoch",
    "batch_size",
    "learning_rate",
    "momentum",
    "weight_decay",
    "num_layers",
    "max_units",
    "max_dropout",
)

#: the search space of LCBench (its config_space.json) as an hpo ``search_space``
SEARCH_SPACE: dict[str, dict[str, Any]] = {
    "batch_size": {"type": "int", "low": 16, "high": 512, "log": True},
    "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "momentum": {"type": "float", "low": 0.1, "high": 0.99},
    "weight_decay": {"type": "float", "low": 1e-5, "high": 0.1},
    "num_layers": {"type": "int", "low": 1, "high": 5},
    "max_units": {"type": "int", "low": 64, "high": 1024, "log": True},
    "max_dropout": {"type": "float", "low": 0.0, "high": 1.0},
}

#: the same space as a lattice for grid search: the centres of three equal bins of every
#: parameter (on a log scale where the space is), 3**7 = 2,187 points, chosen by rule, not tuned
GRID_SPACE: dict[str, dict[str, Any]] = {
    "batch_size": {"type": "categorical", "choices": [29, 91, 287]},
    "learning_rate": {"type": "categorical", "choices": [0.000316, 0.00316, 0.0316]},
    "momentum": {"type": "categorical", "choices": [0.248, 0.545, 0.842]},
    "weight_decay": {"type": "categorical", "choices": [0.0167, 0.05, 0.0833]},
    "num_layers": {"type": "categorical", "choices": [2, 3, 4]},
    "max_units": {"type": "categorical", "choices": [102, 256, 645]},
    "max_dropout": {"type": "categorical", "choices": [0.167, 0.5, 0.833]},
}


class Surrogate:
    """Learning curves from the ONNX model, one cached curve per (task, configuration)."""

    def __init__(self, data: Path = DATA, cache_size: int = 200_000) -> None:
        try:
            import onnxruntime
        except ImportError as exc:
            raise SystemExit(
                "the LCBench surrogate needs onnxruntime: pip install onnxruntime"
            ) from exc
        if not (data / "model.onnx").is_file():
            raise SystemExit(
                f"no LCBench surrogate at {data}: expected model.onnx there "
                "(set HPO_LCBENCH_DIR to the folder that holds it)"
            )
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(str(data / "model.onnx"), options)
        self._inputs = [i.name for i in self._session.get_inputs()]
        encoding = json.loads((data / "encoding.json").read_text())
        self._tasks: dict[str, int] = encoding["OpenML_task_id"]
        self._cache: OrderedDict[tuple[Any, ...], np.ndarray] = OrderedDict()
        self._cache_size = cache_size

    def curve(self, task: str, config: dict[str, Any]) -> np.ndarray:
        """Validation accuracy (a fraction, 0..1) after each of the 52 epochs."""
        key = (task, *(float(config[c]) for c in _COLUMNS[1:]))
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        if task not in self._tasks:
            raise ValueError(f"unknown LCBench task {task!r}")
        x_cont = np.empty((EPOCHS, len(_COLUMNS)), dtype=np.float32)
        x_cont[:, 0] = np.arange(1, EPOCHS + 1)
        x_cont[:, 1:] = key[1:]
        x_cat = np.full((EPOCHS, 1), self._tasks[task], dtype=np.int32)
        out = self._session.run(None, {self._inputs[0]: x_cat, self._inputs[1]: x_cont})[0]
        curve = np.clip(out[:, 1] / 100.0, 0.0, 1.0)
        self._cache[key] = curve
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return curve
