"""The import direction of DESIGN.md, read from the source and checked at run time.

The static half parses every module of every package and collects every import it can make:
at the top, inside functions, methods and ``if`` blocks (``TYPE_CHECKING`` ones too), relative
ones resolved, and the string literals handed to ``importlib.import_module`` and
``__import__``. A lazy import inside a function is still a dependency: it only fails later.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("hpo", "api", "workers", "dashboards", "search_spaces", "controller")
HEAVY = ["fastapi", "ray", "torch", "transformers", "plotly", "uvicorn", "starlette"]
#: what the core must never import (DESIGN.md: "hpo core ─► never imports ...")
CORE_FORBIDDEN = (
    "api",
    "workers",
    "dashboards",
    "controller",
    "fastapi",
    "starlette",
    "uvicorn",
    "ray",
    "torch",
    "transformers",
    "plotly",
)
#: hpo.client: httpx and the wire schemas only. ``hpo`` itself (its ``__init__``, loaded anyway
#: before any submodule) is allowed for ``__version__``.
CLIENT_THIRD_PARTY = ("httpx", "pydantic")
CLIENT_OURS = ("hpo.client", "hpo.schemas", "hpo.spec", "hpo._errors", "hpo.vocabulary")
#: what those modules may pull in turn: hpo.spec reads preset spaces (YAML) from search_spaces
#: and parses constraint expressions with hpo.constraints (standard library only)
CLIENT_CLOSURE_EXTRA = ("yaml", "search_spaces", "hpo.constraints")


@dataclass(frozen=True)
class Import:
    file: Path
    line: int
    module: str  # absolute dotted name
    statement: str  # the source as written

    def __str__(self) -> str:
        return (
            f"{self.file.relative_to(ROOT)}:{self.line}: `{self.statement}` imports {self.module}"
        )


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_ours(dotted: str) -> bool:
    """Whether ``dotted`` names a module or package of this repository."""
    base = ROOT.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _resolve(path: Path, level: int, module: str | None) -> str:
    if level == 0:
        return module or ""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - (level - 1)]
    return ".".join([*base, module] if module else base)


def _called_name(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def imports_of(path: Path) -> Iterator[Import]:
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path))
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom, ast.Call)):
            continue
        if isinstance(node, ast.Call) and _called_name(node) not in ("import_module", "__import__"):
            continue
        # only for the nodes reported: get_source_segment rescans the source each time
        text = (ast.get_source_segment(source, node) or "").strip()
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(path, node.lineno, alias.name, text)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(path, node.level, node.module)
            for alias in node.names:
                candidate = f"{base}.{alias.name}" if base else alias.name
                # `from hpo import service` imports hpo.service; `from hpo import X` only hpo
                module = candidate if _is_ours(candidate) else base
                yield Import(path, node.lineno, module, text)
        elif isinstance(node, ast.Call) and _called_name(node) in ("import_module", "__import__"):
            if node.args and isinstance(node.args[0], ast.Constant):
                name = node.args[0].value
                if isinstance(name, str):
                    yield Import(path, node.lineno, name, text)


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _under(module: str, prefixes: tuple[str, ...] | list[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _stdlib(module: str) -> bool:
    return module.split(".")[0] in sys.stdlib_module_names


def _report(rule: str, bad: list[Import]) -> str:
    return f"{rule} (DESIGN.md, 'Who may import whom'), but:\n" + "\n".join(
        f"  {imp}" for imp in bad
    )


def _forbidden(files: list[Path], forbidden: tuple[str, ...]) -> list[Import]:
    return [imp for f in files for imp in imports_of(f) if _under(imp.module, forbidden)]


def test_every_package_is_read():
    """The checks below see the real tree (a typo in a path would make them pass vacuously)."""
    for package in PACKAGES:
        assert sources(package), f"no modules found under {package}/"
    assert any(imp.module == "hpo.spec" for imp in imports_of(ROOT / "hpo" / "schemas.py"))
    lazy = [
        i for i in imports_of(ROOT / "dashboards" / "views.py") if "import_module" in i.statement
    ]
    assert {i.module for i in lazy} == {"dashboards.figures", "optuna.importance"}


def test_the_core_imports_no_web_app_worker_dashboard_or_heavy_library():
    core = [f for f in sources("hpo") if "client" not in f.relative_to(ROOT / "hpo").parts[:1]]
    bad = _forbidden(core, CORE_FORBIDDEN)
    assert not bad, _report(f"the core hpo/ imports none of {', '.join(CORE_FORBIDDEN)}", bad)


def test_the_client_imports_only_httpx_pydantic_and_the_wire_schemas():
    allowed = (*CLIENT_THIRD_PARTY, *CLIENT_OURS)
    bad = [
        imp
        for f in sources("hpo/client")
        for imp in imports_of(f)
        if not (_stdlib(imp.module) or imp.module == "hpo" or _under(imp.module, allowed))
    ]
    assert not bad, _report(
        f"hpo.client imports only the standard library, {', '.join(allowed)}", bad
    )


def _file_of(module: str) -> Path:
    base = ROOT.joinpath(*module.split("."))
    return base / "__init__.py" if (base / "__init__.py").is_file() else base.with_suffix(".py")


def test_what_the_client_imports_pulls_in_nothing_heavier():
    """The modules the client imports, and theirs in turn, stay within the schemas' world."""
    allowed = (*CLIENT_THIRD_PARTY, *CLIENT_OURS, *CLIENT_CLOSURE_EXTRA)
    seen: set[str] = set()
    todo = ["hpo", *(_module_name(f) for f in sources("hpo/client"))]
    bad: list[Import] = []
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        for imp in imports_of(_file_of(module)):
            if _stdlib(imp.module):
                continue
            if not (imp.module == "hpo" or _under(imp.module, allowed)):
                bad.append(imp)
            elif _is_ours(imp.module):
                todo.append(imp.module)
    assert not bad, _report(
        f"what hpo.client loads imports only the standard library, {', '.join(allowed)}", bad
    )


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("api", ("workers", "controller")),
        ("dashboards", ("api", "workers", "controller")),
        # workers talk to the controller over REST only, never to its database
        ("workers", ("api", "dashboards", "controller", "hpo.service", "hpo.storage")),
        ("search_spaces", ("hpo", "api", "workers", "dashboards", "controller")),
    ],
)
def test_each_package_keeps_to_its_side(package: str, forbidden: tuple[str, ...]):
    bad = _forbidden(sources(package), forbidden)
    assert not bad, _report(f"{package}/ imports none of {', '.join(forbidden)}", bad)


def test_only_the_controller_imports_the_controller():
    others = [f for p in PACKAGES if p != "controller" for f in sources(p)]
    bad = _forbidden(others, ("controller",))
    assert not bad, _report("only controller/ knows controller", bad)


# -- at run time: what importing actually loads ----------------------------------------------


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return {m for m in out.stdout.strip().split(",") if m}


def test_hpo_core_loads_no_heavy_module():
    core = (
        "import hpo, hpo.spec, hpo.algorithms, hpo.budget, hpo.storage, hpo.service, "
        "hpo.client, hpo.cli, hpo.settings, search_spaces"
    )
    assert _loaded_after(core) == set()


def test_the_client_needs_only_httpx_and_the_schemas():
    loaded = _loaded_after("import hpo.client")
    assert loaded == set()
    out = subprocess.run(
        [sys.executable, "-c", "import sys, hpo.client; print('sqlalchemy' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "False", "hpo.client must not pull in the storage layer"
