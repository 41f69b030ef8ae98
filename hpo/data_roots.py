"""Workload options that name files stay inside the directories the operator allowed.

An option that a built-in workload declares as a path
(:attr:`hpo.workloads.WorkloadInfo.path_options`: ``data_path``, ``text_path``,
``pretrained``) must be an absolute path that lies inside one of the data roots
(``HPO_DATA_DIRS``) once ``..`` and symlinks are resolved (``os.path.realpath``). With no root
configured, no option may name a file.

Two checks use the same rule:

* the controller, when a study is created (:func:`path_problems`): a refused study is a 422 and
  nothing is stored. It does not need the file to exist: on a cluster the data may live on the
  workers' nodes only, and whether a path exists is not the caller's business;
* the worker, just before the workload reads (:func:`confine_options`), against the roots the
  dispatcher gave it: a symlink swapped in after the study was created, or roots narrowed since,
  are caught there. The workload then opens the resolved path, and a directory's entries are
  checked too (a symlink inside a model directory that points out).

Operator-registered workloads (``HPO_WORKLOADS``) are the operator's own code; they declare no
path options here and read what they like.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from .workloads import BUILTIN

__all__ = ["MAX_DIRECTORY_ENTRIES", "OutsideDataRoots", "confine_options", "path_problems"]

#: entries of a directory option the worker checks; a model directory holds a handful
MAX_DIRECTORY_ENTRIES = 10_000
_SHOWN_CHARS = 200


class OutsideDataRoots(ValueError):
    """A workload option names a file or directory outside the data roots (in the worker)."""


def path_problems(workload: str, options: Mapping[str, Any], roots: Sequence[str]) -> list[str]:
    """What is wrong with the path options of ``workload`` under ``roots``; empty when none."""
    info = BUILTIN.get(workload)
    if info is None:
        return []
    problems = []
    for name in info.path_options:
        problem = _problem(name, options.get(name), roots)
        if problem:
            problems.append(problem)
    return problems


def confine_options(
    workload: str, options: Mapping[str, Any], roots: Sequence[str]
) -> dict[str, Any]:
    """``options`` with each path option replaced by its resolved path, checked again.

    Raises:
        OutsideDataRoots: a path option lies outside ``roots``, or a directory it names holds
            an entry that resolves outside them.
    """
    problems = path_problems(workload, options, roots)
    if problems:
        raise OutsideDataRoots("; ".join(problems))
    confined = dict(options)
    info = BUILTIN.get(workload)
    for name in info.path_options if info else ():
        if options.get(name) is None:
            continue
        real = os.path.realpath(options[name])
        if os.path.isdir(real):
            _check_entries(name, real, roots)
        confined[name] = real
    return confined


def _check_entries(name: str, directory: str, roots: Sequence[str]) -> None:
    with os.scandir(directory) as entries:
        for count, entry in enumerate(entries, 1):
            if count > MAX_DIRECTORY_ENTRIES:
                raise OutsideDataRoots(
                    f"workload.options.{name}: the directory holds more than "
                    f"{MAX_DIRECTORY_ENTRIES:,} entries; name the directory of one model or "
                    "data set"
                )
            if not _within(entry.path, roots):
                raise OutsideDataRoots(
                    f"workload.options.{name}: the directory holds {entry.name[:_SHOWN_CHARS]!r},"
                    " which leads outside the allowed data roots once symlinks are resolved; "
                    f"allowed: {_allowed(roots)} (HPO_DATA_DIRS)"
                )


def _problem(name: str, value: Any, roots: Sequence[str]) -> str | None:
    where = f"workload.options.{name}"
    if value is None:  # absent: the workload's default, which names no file of the caller's
        return None
    if not roots:
        return (
            f"{where}: names a file or directory, but the operator has allowed none: no data "
            "roots are configured. The operator lists the directories studies may read with "
            "HPO_DATA_DIRS (for example HPO_DATA_DIRS=/srv/hpo-data) and puts the data there"
        )
    if not isinstance(value, str):
        return (
            f"{where}: must be the path (a string) of a file or directory inside "
            f"{_allowed(roots)}, got {type(value).__name__}"
        )
    shown = repr(value[:_SHOWN_CHARS] + ("..." if len(value) > _SHOWN_CHARS else ""))
    if not os.path.isabs(value):
        return (
            f"{where}: {shown} is not an absolute path (nothing is looked up by name or "
            f"downloaded); give the absolute path of a file or directory inside "
            f"{_allowed(roots)}"
        )
    if not _within(value, roots):
        return (
            f"{where}: {shown} is outside the allowed data roots once '..' and symlinks are "
            f"resolved; allowed: {_allowed(roots)} (HPO_DATA_DIRS)"
        )
    return None


def _within(path: str, roots: Sequence[str]) -> bool:
    try:
        real = os.path.realpath(path)
    except (ValueError, OSError):  # an embedded NUL, a name too long to resolve
        return False
    for root in roots:
        real_root = os.path.realpath(root)
        if os.path.commonpath([real, real_root]) == real_root:
            return True
    return False


def _allowed(roots: Sequence[str]) -> str:
    return ", ".join(roots)
