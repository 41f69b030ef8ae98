"""What each built-in workload trains, reports and understands (data only).

The implementations live in ``workers/`` (torch, transformers); the controller validates a
study against this catalog without importing them. Operator-registered workloads
(``HPO_WORKLOADS``) are not described here: the controller accepts any parameter for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["BUILTIN", "EXTERNAL", "MODEL_PARAMS", "WorkloadInfo", "check_study_fits"]

#: hyperparameters every model workload understands
MODEL_PARAMS = (
    "learning_rate",
    "batch_size",
    "dropout",
    "num_heads",
    "num_layers",
    "hidden_size",
    "head_dim",
    "weight_decay",
    "warmup_ratio",
    "label_smoothing",
    "gradient_accumulation_steps",
)


@dataclass(frozen=True)
class WorkloadInfo:
    name: str
    description: str
    #: metrics reported every epoch; any of them may be the study's objective
    metrics: tuple[str, ...]
    #: hyperparameters it understands; None means any
    params: tuple[str, ...] | None
    #: the objective and direction that suit it
    default_objective: tuple[str, str] = ("val_loss", "minimize")
    options: dict[str, str] = field(default_factory=dict)
    #: the options that name a file or directory: they must lie inside the operator's data
    #: roots (:mod:`hpo.data_roots`)
    path_options: tuple[str, ...] = ()


_EPOCH_METRICS = ("train_loss", "epoch_seconds", "samples_per_second", "gpu_memory_peak_mb")

EXTERNAL = WorkloadInfo(
    name="external",
    description="Trials run by any script through the REST trial protocol (ask/report/complete).",
    metrics=(),
    params=None,
)

BUILTIN: dict[str, WorkloadInfo] = {
    w.name: w
    for w in (
        WorkloadInfo(
            name="digits-vit",
            description="ViTForImageClassification on scikit-learn's 8x8 digits (10 classes).",
            metrics=("val_accuracy", "val_loss", *_EPOCH_METRICS),
            params=MODEL_PARAMS,
            default_objective=("val_accuracy", "maximize"),
            options={"max_samples": "use at most this many images (default: all 1797)"},
        ),
        WorkloadInfo(
            name="charlm-gpt",
            description="Character-level GPT2LMHeadModel on a text file (default: the Python "
            "standard library's own source).",
            metrics=("val_loss", "val_perplexity", *_EPOCH_METRICS),
            params=(*MODEL_PARAMS, "context_length"),
            options={
                "text_path": "a UTF-8 text file (default: Python's stdlib sources)",
                "max_chars": "use at most this many characters (default 200000)",
                "windows_per_epoch": "random training windows per epoch (default 2000)",
            },
            path_options=("text_path",),
        ),
        WorkloadInfo(
            name="text-classification",
            description="BertForSequenceClassification on a CSV/JSONL file of text and label, "
            "tokenizer trained on the data (or a local pretrained path).",
            metrics=("val_accuracy", "val_loss", *_EPOCH_METRICS),
            params=(*MODEL_PARAMS, "max_length"),
            default_objective=("val_accuracy", "maximize"),
            options={
                "data_path": "CSV or JSONL with 'text' and 'label' columns (required)",
                "pretrained": "local path of a pretrained BERT to fine-tune (optional)",
            },
            path_options=("data_path", "pretrained"),
        ),
        WorkloadInfo(
            name="synthetic",
            description="Analytic learning curves with a configurable time per epoch, for tests "
            "and overhead benchmarks.",
            metrics=("val_accuracy", "val_loss", "train_loss", "epoch_seconds"),
            params=None,
            default_objective=("val_accuracy", "maximize"),
            options={
                "epoch_seconds": "seconds each epoch sleeps (default 0.2)",
                "raise_when": "{param: [values]}: a trial whose param takes one of the values "
                "raises (a failure for tests)",
                "memory_limit": "raise the out-of-memory error of torch when batch_size x "
                "num_layers x hidden_size (those the trial has) exceeds this number",
            },
        ),
    )
}


def check_study_fits(
    workload: str, params: list[str], metric: str, registered: dict[str, str]
) -> list[str]:
    """Problems with running ``params``/``metric`` on ``workload``; empty when it fits."""
    if workload == EXTERNAL.name or workload in registered and workload not in BUILTIN:
        return []
    info = BUILTIN.get(workload)
    if info is None:
        known = sorted({EXTERNAL.name, *BUILTIN, *registered})
        return [
            f"workload.name: unknown workload {workload!r}; known workloads: {', '.join(known)}"
        ]
    problems = []
    if info.params is not None:
        unknown = [p for p in params if p not in info.params]
        if unknown:
            problems.append(
                f"search_space: workload {workload!r} cannot use {', '.join(map(repr, unknown))}; "
                f"it understands {', '.join(info.params)}"
            )
    if metric not in info.metrics:
        problems.append(
            f"objective.metric: workload {workload!r} does not report {metric!r}; "
            f"it reports {', '.join(info.metrics)}"
        )
    return problems
