"""Training machinery shared by the model workloads.

* :func:`pick_device` and :func:`seed_everything`: where a trial runs, and how it is made
  reproducible;
* :func:`resolve_hyperparameters`: the :data:`hpo.workloads.MODEL_PARAMS` of a trial, checked
  (with the value and the rule) before anything is built;
* :func:`fit`: the epoch loop (AdamW, linear warmup then cosine decay, gradient accumulation,
  clipping, mixed precision on CUDA) that reports to the controller after every epoch.

A workload describes its model and data as a :class:`TrainingJob`; batches are plain tensors
sliced in this process (no DataLoader workers: data sets here are small, and Ray workers should
not fork).
"""

from __future__ import annotations

import math
import operator
import random
import time
from collections.abc import Callable, Collection, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split
from transformers import get_cosine_schedule_with_warmup

from ._base import InvalidHyperparameters, NonFiniteLoss, Reporter

#: model inputs (keyword arguments of the model's forward) and the targets
Batch = tuple[dict[str, torch.Tensor], torch.Tensor]

MAX_GRAD_NORM = 1.0


@dataclass(frozen=True)
class DeviceSetup:
    """Where a trial trains, and in which precision."""

    device: torch.device
    #: autocast dtype; None trains in float32
    amp_dtype: torch.dtype | None = None

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def needs_grad_scaler(self) -> bool:
        return self.amp_dtype == torch.float16

    def autocast(self) -> AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)


def pick_device() -> DeviceSetup:
    """The trial's GPU when there is one (Ray sets CUDA_VISIBLE_DEVICES), else the CPU.

    On CUDA, training autocasts to bfloat16 where the GPU supports it and to float16 (with a
    gradient scaler) elsewhere; on the CPU it stays in float32.
    """
    if torch.cuda.is_available():
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return DeviceSetup(torch.device("cuda"), dtype)
    return DeviceSetup(torch.device("cpu"))


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and every GPU) random generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


@dataclass(frozen=True)
class Hyperparameters:
    """The checked hyperparameters every model workload understands."""

    learning_rate: float
    batch_size: int
    dropout: float
    num_heads: int
    num_layers: int
    hidden_size: int
    weight_decay: float
    warmup_ratio: float
    label_smoothing: float
    gradient_accumulation_steps: int

    @property
    def intermediate_size(self) -> int:
        return 4 * self.hidden_size


# name: (type, default, check, the rule as the error message states it)
_RULES: dict[str, tuple[type, Any, Callable[[Any], bool], str]] = {
    "learning_rate": (float, 1e-3, lambda v: v > 0, "learning_rate > 0"),
    "batch_size": (int, 32, lambda v: v >= 1, "batch_size >= 1"),
    "dropout": (float, 0.1, lambda v: 0 <= v < 1, "0 <= dropout < 1"),
    "num_heads": (int, 4, lambda v: v >= 1, "num_heads >= 1"),
    "num_layers": (int, 2, lambda v: v >= 1, "num_layers >= 1"),
    "hidden_size": (int, 64, lambda v: v >= 1, "hidden_size >= 1"),
    "head_dim": (int, None, lambda v: v >= 1, "head_dim >= 1"),
    "weight_decay": (float, 0.01, lambda v: v >= 0, "weight_decay >= 0"),
    "warmup_ratio": (float, 0.1, lambda v: 0 <= v <= 1, "0 <= warmup_ratio <= 1"),
    "label_smoothing": (float, 0.0, lambda v: 0 <= v < 1, "0 <= label_smoothing < 1"),
    "gradient_accumulation_steps": (int, 1, lambda v: v >= 1, "gradient_accumulation_steps >= 1"),
}


def _number(name: str, value: Any, kind: type) -> int | float:
    """``value`` as an int or a finite float; 4.0 is the int 4, 4.5 is not an int."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InvalidHyperparameters(f"The value of {name!r} is {value!r}, but must be a number.")
    if kind is int:
        if isinstance(value, Integral):
            return operator.index(value)
        if float(value).is_integer():
            return int(float(value))
        raise InvalidHyperparameters(
            f"The value of {name!r} is {value!r}, but must be a whole number."
        )
    number = float(value)
    if not math.isfinite(number):
        raise InvalidHyperparameters(f"The value of {name!r} is {value!r}, but must be finite.")
    return number


def _checked(params: Mapping[str, Any], name: str, default: Any) -> Any:
    kind, _, check, rule = _RULES[name]
    if params.get(name) is None:
        return default
    value = _number(name, params[name], kind)
    if not check(value):
        raise InvalidHyperparameters(f"The value of {name!r} is {value}, but must be {rule}.")
    return value


def _hidden_size(params: Mapping[str, Any], num_heads: int) -> int:
    hidden = _checked(params, "hidden_size", None)
    head_dim = _checked(params, "head_dim", None)
    if head_dim is not None:
        if hidden is not None and hidden != num_heads * head_dim:
            raise InvalidHyperparameters(
                f"hidden_size is {hidden}, but with num_heads={num_heads} and head_dim={head_dim} "
                f"it must be num_heads * head_dim = {num_heads * head_dim}; give one of the two"
            )
        return int(num_heads * head_dim)
    if hidden is None:
        hidden = _RULES["hidden_size"][1]
    if hidden % num_heads:
        raise InvalidHyperparameters(
            f"hidden_size is {hidden} and num_heads is {num_heads}, but hidden_size must be "
            "divisible by num_heads; search over head_dim instead of hidden_size to always fit"
        )
    return int(hidden)


def resolve_hyperparameters(
    params: Mapping[str, Any], *, extra: Collection[str] = (), learning_rate: float = 1e-3
) -> Hyperparameters:
    """The trial's :class:`Hyperparameters`, defaults filled in and every rule checked.

    Args:
        params: the trial's hyperparameters.
        extra: names the workload understands beyond the shared ones (it checks them itself).
        learning_rate: the default learning rate (1e-3 suits models trained from scratch).

    Raises:
        InvalidHyperparameters: an unknown name, a value of the wrong type or out of range, or
            a combination that cannot be built; the message names the values and the rule.
    """
    unknown = sorted(set(params) - set(_RULES) - set(extra))
    if unknown:
        known = ", ".join(sorted([*_RULES, *extra]))
        raise InvalidHyperparameters(
            f"unknown hyperparameter(s) {', '.join(map(repr, unknown))}; known: {known}"
        )
    values = {
        name: _checked(params, name, default)
        for name, (_, default, _, _) in _RULES.items()
        if name not in ("hidden_size", "head_dim")
    }
    if params.get("learning_rate") is None:
        values["learning_rate"] = learning_rate
    values["hidden_size"] = _hidden_size(params, values["num_heads"])
    return Hyperparameters(**values)


def int_param(params: Mapping[str, Any], name: str, *, default: int, minimum: int) -> int:
    """A workload's own integer hyperparameter (e.g. ``context_length``), checked."""
    if params.get(name) is None:
        return default
    value = int(_number(name, params[name], int))
    if value < minimum:
        raise InvalidHyperparameters(
            f"The value of {name!r} is {value}, but must be {name} >= {minimum}."
        )
    return value


def int_option(options: Mapping[str, Any], name: str, *, default: int, minimum: int) -> int:
    """An integer workload option (e.g. ``max_samples``), checked; ``default`` when absent."""
    value = options.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(
            f"workload option {name!r} is {value!r}, but must be a whole number >= {minimum}"
        )
    return int(value)


def check_options(options: Mapping[str, Any], known: Collection[str]) -> None:
    """Refuse option names the workload does not know (a typo would be silently ignored)."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(
            f"unknown workload option(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(sorted(known))}"
        )


def stratified_split(
    labels: np.ndarray, *, seed: int, val_fraction: float = 0.2
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a stratified train/validation split, seeded."""
    classes, counts = np.unique(labels, return_counts=True)
    if counts.min() < 2:
        rare = classes[counts.argmin()]
        raise ValueError(
            f"label {rare!r} has only 1 example; a stratified split needs at least 2 per label"
        )
    n_val = math.ceil(val_fraction * len(labels))
    if n_val < len(classes):
        raise ValueError(
            f"{len(labels)} examples give a validation split of {n_val}, fewer than the "
            f"{len(classes)} labels; give at least {math.ceil(len(classes) / val_fraction)}"
        )
    train, val = train_test_split(
        np.arange(len(labels)), test_size=val_fraction, stratify=labels, random_state=seed
    )
    return np.sort(train), np.sort(val)


def batches_of(
    inputs: Mapping[str, torch.Tensor],
    targets: torch.Tensor,
    batch_size: int,
    *,
    generator: torch.Generator | None = None,
) -> list[Batch]:
    """``inputs``/``targets`` cut into batches, shuffled when a ``generator`` is given."""
    n = len(targets)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    return [
        ({k: v[idx] for k, v in inputs.items()}, targets[idx]) for idx in order.split(batch_size)
    ]


def classification_metrics(loss: float, accuracy: float) -> dict[str, float]:
    return {"val_accuracy": accuracy, "val_loss": loss}


@dataclass
class TrainingJob:
    """What a workload hands to :func:`fit`."""

    model: torch.nn.Module
    #: the (shuffled) batches of the next epoch; called once per epoch
    train_batches: Callable[[], list[Batch]]
    #: samples (sequences, images) per epoch; the last batch may be short
    train_samples: int
    val_batches: list[Batch]
    #: (mean validation loss, validation accuracy) -> the metrics to report
    val_metrics: Callable[[float, float], dict[str, float]] = classification_metrics


def _optimizer(
    model: torch.nn.Module, hp: Hyperparameters, device: DeviceSetup
) -> torch.optim.AdamW:
    """AdamW; biases and LayerNorm weights are not decayed (the BERT recipe)."""
    no_decay = {
        id(p)
        for module in model.modules()
        if isinstance(module, torch.nn.LayerNorm)
        for p in module.parameters(recurse=False)
    }
    decay: list[torch.nn.Parameter] = []
    plain: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (plain if id(p) in no_decay or name.endswith("bias") else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": hp.weight_decay},
        {"params": plain, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=hp.learning_rate, fused=device.is_cuda)


def _loss(
    model: torch.nn.Module, batch: Batch, device: DeviceSetup, label_smoothing: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean cross-entropy over every target (tokens for a language model), logits, targets."""
    inputs, targets = batch
    inputs = {k: v.to(device.device, non_blocking=True) for k, v in inputs.items()}
    targets = targets.to(device.device, non_blocking=True).flatten()
    with device.autocast():
        logits = model(**inputs).logits
    logits = logits.float().flatten(0, -2)
    return F.cross_entropy(logits, targets, label_smoothing=label_smoothing), logits, targets


class _Loop:
    def __init__(self, job: TrainingJob, hp: Hyperparameters, device: DeviceSetup, epochs: int):
        self.job, self.hp, self.device = job, hp, device
        self.model = job.model.to(device.device)
        self.optimizer = _optimizer(self.model, hp, device)
        batches = math.ceil(job.train_samples / hp.batch_size)
        total = math.ceil(batches / hp.gradient_accumulation_steps) * epochs
        self.scheduler = get_cosine_schedule_with_warmup(
            self.optimizer, round(hp.warmup_ratio * total), total
        )
        self.scaler = torch.amp.GradScaler(device.device.type, enabled=device.needs_grad_scaler)

    def train_epoch(self, epoch: int) -> float:
        """One pass over the epoch's batches; the mean training loss per sample."""
        self.model.train()
        batches = self.job.train_batches()
        accumulate = self.hp.gradient_accumulation_steps
        total, count = 0.0, 0
        for i, batch in enumerate(batches):
            group_start = i - i % accumulate
            group_size = min(accumulate, len(batches) - group_start)
            loss, _, _ = _loss(self.model, batch, self.device, self.hp.label_smoothing)
            value = loss.item()  # one sync per step: the check below needs it anyway
            if not math.isfinite(value):
                raise NonFiniteLoss(
                    f"the training loss is {value} at epoch {epoch}, batch {i + 1} of "
                    f"{len(batches)}, learning rate {self.scheduler.get_last_lr()[0]:.3g} "
                    f"(peak learning_rate={self.hp.learning_rate:g}); try a smaller learning_rate"
                )
            total += value * len(batch[1])
            count += len(batch[1])
            self.scaler.scale(loss / group_size).backward()
            if i + 1 == group_start + group_size:
                self._step()
        return total / count

    def _step(self) -> None:
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), MAX_GRAD_NORM)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    @torch.inference_mode()
    def evaluate(self) -> tuple[float, float]:
        """Mean cross-entropy and accuracy over every validation target."""
        self.model.eval()
        loss_sum = torch.zeros((), device=self.device.device)
        correct = torch.zeros((), device=self.device.device)
        count = 0
        for batch in self.job.val_batches:
            loss, logits, targets = _loss(self.model, batch, self.device)
            loss_sum += loss * len(targets)
            correct += (logits.argmax(-1) == targets).sum()
            count += len(targets)
        return loss_sum.item() / count, correct.item() / count


def fit(
    job: TrainingJob,
    hp: Hyperparameters,
    reporter: Reporter,
    *,
    max_epochs: int,
    device: DeviceSetup,
) -> dict[str, float] | None:
    """Train ``job.model`` for ``max_epochs``, reporting after every epoch.

    Each report holds the job's validation metrics, ``train_loss`` (mean over the epoch),
    ``epoch_seconds`` (training and validation), ``samples_per_second`` (training samples per
    epoch second) and, on CUDA, ``gpu_memory_peak_mb`` (peak allocated during the epoch).

    Returns:
        The last epoch's metrics, or None when ``reporter.report`` asked to stop.

    Raises:
        NonFiniteLoss: the training loss, or a reported metric, became NaN or infinite.
    """
    if max_epochs < 1:
        raise ValueError(f"max_epochs is {max_epochs}, but must be >= 1")
    loop = _Loop(job, hp, device, max_epochs)
    metrics: dict[str, float] = {}
    for epoch in range(1, max_epochs + 1):
        if device.is_cuda:
            torch.cuda.reset_peak_memory_stats(device.device)
        start = time.perf_counter()
        train_loss = loop.train_epoch(epoch)
        val_loss, val_accuracy = loop.evaluate()
        seconds = time.perf_counter() - start
        metrics = {
            **job.val_metrics(val_loss, val_accuracy),
            "train_loss": train_loss,
            "epoch_seconds": seconds,
            "samples_per_second": job.train_samples / seconds,
        }
        if device.is_cuda:
            metrics["gpu_memory_peak_mb"] = torch.cuda.max_memory_allocated(device.device) / 2**20
        _check_finite(metrics, epoch, hp)
        if reporter.report(epoch, metrics):
            return None
    return metrics


def _check_finite(metrics: Mapping[str, float], epoch: int, hp: Hyperparameters) -> None:
    bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
    if bad:
        raise NonFiniteLoss(
            f"{', '.join(f'{k}={v}' for k, v in bad.items())} after epoch {epoch} "
            f"(learning_rate={hp.learning_rate:g}); the model diverged, try a smaller learning_rate"
        )
