"""The import direction of DESIGN.md: the core never loads the heavy modules."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ["fastapi", "ray", "torch", "transformers", "plotly", "uvicorn", "starlette"]


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
