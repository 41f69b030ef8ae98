"""How a worker names a failure (pure: no Ray, no controller)."""

from __future__ import annotations

import torch

from workers.runner import _call, _failure_kind
from workers.workloads import InvalidHyperparameters, NonFiniteLoss


def test_failures_are_named_by_what_went_wrong():
    assert _failure_kind(torch.cuda.OutOfMemoryError("CUDA out of memory")) == "oom"
    assert _failure_kind(NonFiniteLoss("loss is nan")) == "nonfinite"
    assert _failure_kind(InvalidHyperparameters("heads do not divide hidden")) == "exception"
    assert _failure_kind(KeyError("x")) == "exception"


def test_a_workload_gets_only_the_keywords_it_takes():
    seen = {}

    def two(params, reporter):
        seen["two"] = (params, reporter)

    def three(params, reporter, *, seed):
        seen["three"] = seed

    def everything(params, reporter, **kwargs):
        seen["all"] = sorted(kwargs)

    extra = {"options": {}, "max_epochs": 3, "seed": 7}
    _call(two, {"a": 1}, "r", **extra)
    _call(three, {}, "r", **extra)
    _call(everything, {}, "r", **extra)
    assert seen == {"two": ({"a": 1}, "r"), "three": 7, "all": ["max_epochs", "options", "seed"]}
