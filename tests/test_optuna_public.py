"""Optuna through its public API alone, and none of its tables in our SQL (issue 7).

Read from the source, like the layering test: an import of one of Optuna's private modules, an
attribute that only Optuna defines with a leading underscore (``dist._contains``,
``storage._backend``), a ``getattr`` of one, or an SQL string that names one of Optuna's tables
fails here with the file and line. Optuna's private names and table names are read from its
installed source, so an upgrade that adds some is checked too.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import optuna

from tests.test_layering import PACKAGES, ROOT

OPTUNA_ROOT = Path(optuna.__file__).resolve().parent
#: every directory of ours that holds Python: the product, its benchmarks and its tests
OURS = (*PACKAGES, "benchmarks", "tests")


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _trees(paths: list[Path]) -> Iterator[tuple[Path, ast.Module]]:
    for path in paths:
        yield path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _defined_names(tree: ast.Module) -> set[str]:
    """Every name a module defines: functions, classes, assigned names and attributes."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return names


def _member_names(tree: ast.Module) -> set[str]:
    """The names a module gives to members of objects: methods and class attributes, and
    attributes it assigns (``self._x = ...``)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    names.add(item.name)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    names.add(item.target.id)
                elif isinstance(item, ast.Assign):
                    names |= {t.id for t in item.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
    return names


def _our_files() -> list[Path]:
    files = [path for package in OURS for path in sorted((ROOT / package).rglob("*.py"))]
    assert len(files) > 100, "the check must see the real tree"
    return files


def _optuna_private_names() -> set[str]:
    names: set[str] = set()
    for _, tree in _trees(sorted(OPTUNA_ROOT.rglob("*.py"))):
        names |= {name for name in _defined_names(tree) if _private(name)}
    return names


def _optuna_tables() -> set[str]:
    tables: set[str] = set()
    for _, tree in _trees(sorted(OPTUNA_ROOT.rglob("*.py"))):
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "__tablename__" for t in node.targets)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
            ):
                tables.add(node.value.value)
    return tables


def _private_module(module: str) -> bool:
    parts = module.split(".")
    return parts[0] == "optuna" and any(_private(part) for part in parts[1:])


def test_no_private_optuna_api():
    files = _our_files()
    trees = list(_trees(files))
    ours: set[str] = set()
    for _, tree in trees:
        ours |= _member_names(tree)
    theirs = _optuna_private_names()
    assert {"_contains", "_backend", "_trial_id"} <= theirs, "read from Optuna's own source"
    only_optuna = theirs - ours

    found: list[str] = []
    for path, tree in trees:
        where = path.relative_to(ROOT)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [
                    f"{where}:{node.lineno}: import {a.name}"
                    for a in node.names
                    if _private_module(a.name)
                ]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if _private_module(node.module) or (
                    node.module.split(".")[0] == "optuna"
                    and any(_private(a.name) for a in node.names)
                ):
                    found.append(f"{where}:{node.lineno}: from {node.module} import ...")
            elif isinstance(node, ast.Attribute) and node.attr in only_optuna:
                found.append(f"{where}:{node.lineno}: .{node.attr}")
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "setattr", "hasattr")
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and node.args[1].value in only_optuna
            ):
                found.append(f"{where}:{node.lineno}: {node.func.id}(..., {node.args[1].value!r})")
    assert not found, "Optuna's private API is used:\n" + "\n".join(found)


def test_no_sql_on_optuna_tables():
    tables = _optuna_tables()
    assert {"studies", "trials", "trial_params", "trial_values"} <= tables
    names = "|".join(sorted(map(re.escape, tables), key=len, reverse=True))
    sql = re.compile(
        rf"\b(from|join|into|update|table|exists)\s+[\"`]?({names})[\"`]?(\s|$|,|\)|;)",
        re.IGNORECASE,
    )
    found: list[str] = []
    for path, tree in _trees(_our_files()):
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                match = sql.search(node.value)
                if match:
                    where = path.relative_to(ROOT)
                    found.append(f"{where}:{node.lineno}: {match.group(0).strip()!r}")
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, (ast.Name, ast.Attribute))
                and (node.func.id if isinstance(node.func, ast.Name) else node.func.attr)
                in ("table", "Table")
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and node.args[0].value in tables
            ):
                found.append(
                    f"{path.relative_to(ROOT)}:{node.lineno}: table({node.args[0].value!r})"
                )
    assert not found, "SQL names Optuna's tables (use Optuna's storage API):\n" + "\n".join(found)
