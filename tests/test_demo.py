"""`hpo demo`, the README's main command, runs to the end and prints a best configuration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests._servers import free_port

ROOT = Path(__file__).resolve().parent.parent


def test_demo_runs_to_the_end_and_prints_the_best_configuration(tmp_path):
    port = free_port()
    pp = os.environ.get("PYTHONPATH")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "controller",
            "demo",
            "--exit",
            "--port",
            str(port),
            "--max-trials",
            "4",
            "--max-epochs",
            "3",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), pp]))},
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert f"controller serving on http://127.0.0.1:{port}" in out
    assert "[  4/4]" in out, "the progress line reaches the end of the budget"
    config_text = out.split("best configuration:\n", 1)[1].split("\nfrom Python:", 1)[0]
    config = json.loads(config_text)
    assert set(config) == {"learning_rate", "batch_size", "dropout", "num_heads", "num_layers"}
    assert "best_config(" in out
    assert (tmp_path / "hpo.db").exists(), "the embedded default is a SQLite file here"
