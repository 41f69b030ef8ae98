#!/usr/bin/env bash
# GPU check of hpo's CUDA path. On a lent GPU machine: `bash benchmarks/gpu_check/check.sh`, carrying .whl
# (the service's own dependencies as cp312 wheels, which that machine lacks: see the README there).
# Locally (CPU): HPO_GPU_LOCAL=1 OUT=/tmp/x bash benchmarks/gpu_check/check.sh   (uses .venv/bin/python, no wheels)
#   HPO_GPU_SIMULATE=1: block imports of packages the GPU machine lacks (benchmarks/gpu_check/sim/sitecustomize.py)
#   HPO_GPU_PYTEST_ARGS: replaces the pytest selection (default: all of tests/test_workloads.py)
cd "$(dirname "$0")/../.." || exit
if [ -z "${HPO_GPU_LOCAL:-}" ]; then
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=$PWD:/tmp/site || exit; PY=python3
else
  PY=${PY:-$PWD/.venv/bin/python}; export PYTHONPATH=$PWD
  if [ -n "${HPO_GPU_SIMULATE:-}" ]; then export PYTHONPATH=$PWD/benchmarks/gpu_check/sim:$PWD HPO_GPU_WHEELS=$PWD/.whl
    export PYTEST_DISABLE_PLUGIN_AUTOLOAD=1  # this venv's own pytest plugins (schemathesis) need blocked packages
  fi
fi
set -o pipefail
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-$(mktemp -d /tmp/hpo-gpu-out.XXXXXX)}; mkdir -p "$OUT"
START=$SECONDS
echo "hpo GPU check: OUT=$OUT PY=$PY PYTHONPATH=$PYTHONPATH"

# 1. the machine and the software (~10 s)
{
  echo "== nvidia-smi"; timeout 20 nvidia-smi || echo "(no nvidia-smi)"
  echo "== versions"
  timeout 45 "$PY" - <<'EOF'
import importlib.metadata as md, sys
print("python", sys.version)
import torch, transformers
print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)
print("torch.cuda.is_available()", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0))
    print("torch.cuda.is_bf16_supported()", torch.cuda.is_bf16_supported())
    free, total = torch.cuda.mem_get_info()
    print(f"memory free {free / 2**20:.0f} MiB of {total / 2**20:.0f} MiB")
names = ["pydantic", "pydantic-core", "pydantic-settings", "python-dotenv", "annotated-types",
         "typing-inspection", "typing-extensions", "optuna", "colorlog", "sqlalchemy", "alembic",
         "mako", "fastapi", "starlette", "uvicorn", "plotly", "narwhals", "opentelemetry-api",
         "annotated-doc", "anyio", "h11", "httpx", "httpcore", "click", "jinja2", "markupsafe",
         "pyyaml", "numpy", "packaging", "tqdm", "scikit-learn", "tokenizers", "huggingface-hub",
         "uvloop", "httptools", "websockets", "pytest", "psycopg2-binary", "greenlet", "ray"]
for n in names:
    try:
        d = md.distribution(n)
        print(f"  {n:<20} {d.version:<12} {d.locate_file('')}")
    except md.PackageNotFoundError:
        print(f"  {n:<20} (not installed)")
import api, controller.server, hpo.client, workers.runner  # noqa: F401  the service imports
print("hpo imports: ok")
EOF
} 2>&1 | tee "$OUT/env.log"

# 2. the workload tests on this machine (GPU): all of tests/test_workloads.py
echo "== pytest tests/test_workloads.py" | tee "$OUT/pytest.log"
# pytest-timeout (on the GPU machine, not here) names a test that hangs, with its traceback
PER_TEST=""; "$PY" -c "import pytest_timeout" 2>/dev/null && PER_TEST="--timeout=90"
# shellcheck disable=SC2086
timeout -k 10 140 "$PY" -m pytest -q -p no:cacheprovider --durations=15 $PER_TEST \
  --junitxml="$OUT/pytest-junit.xml" ${HPO_GPU_PYTEST_ARGS:-tests/test_workloads.py} 2>&1 | tee -a "$OUT/pytest.log"
PYTEST_RC=$?
echo "pytest exit code $PYTEST_RC ($((SECONDS - START)) s so far)" | tee -a "$OUT/pytest.log"

# 3-5. the digits-vit study, float16 + GradScaler and the real CUDA OOM through the service (server
# killed at the end); 87 s on an H100 before the float16 part (~10-20 s) was added
timeout -k 10 180 "$PY" benchmarks/gpu_check/gpu_study.py 2>&1 | tee "$OUT/study.log"
STUDY_RC=$?
echo "gpu_study.py exit code $STUDY_RC"

echo "== RESULTS ($((SECONDS - START)) s)"
echo "pytest tests/test_workloads.py: exit $PYTEST_RC -- $(grep -E '(passed|failed|error)' "$OUT/pytest.log" | tail -1)"
grep -E '^FAILED|^ERROR' "$OUT/pytest.log" | head -20
echo "gpu_study.py: exit $STUDY_RC (study.log, server.log, summary.json in \$OUT)"
ls -la "$OUT"
[ "$PYTEST_RC" = 0 ] && [ "$STUDY_RC" = 0 ]
