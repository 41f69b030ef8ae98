"""Built-in training workloads, and the operator's registered ones.

Each is a function described in :mod:`workers.workloads._base`; the catalog of what they
report and understand is :data:`hpo.workloads.BUILTIN`. Modules are imported only when a
trial runs, so a controller never loads torch for a workload it does not run.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from ._base import InvalidHyperparameters, NonFiniteLoss, Reporter, Workload

__all__ = [
    "BUILTIN",
    "InvalidHyperparameters",
    "NonFiniteLoss",
    "Reporter",
    "Workload",
    "resolve",
]

#: built-in workload name -> import path of its ``train`` function
BUILTIN = {
    "digits-vit": "workers.workloads.digits_vit:train",
    "charlm-gpt": "workers.workloads.charlm_gpt:train",
    "text-classification": "workers.workloads.text_classification:train",
    "synthetic": "workers.workloads.synthetic:train",
}


def resolve(name: str, registered: Mapping[str, str] | None = None) -> Workload:
    """The ``train`` function of workload ``name`` (built-in, or registered by the operator)."""
    paths = {**BUILTIN, **(registered or {})}
    if name not in paths:
        raise LookupError(f"unknown workload {name!r}; known workloads: {', '.join(sorted(paths))}")
    module_name, _, attribute = paths[name].partition(":")
    if not attribute:
        raise LookupError(
            f"workload {name!r} is registered as {paths[name]!r}; use 'package.module:function'"
        )
    function: Workload = getattr(importlib.import_module(module_name), attribute)
    return function
