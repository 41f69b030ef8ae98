"""LOCAL ONLY (HPO_GPU_SIMULATE=1): make this venv look like the GPU machine's package set.

A top-level module whose distribution is neither in KINDS.md's "Python packages already there"
list nor among the wheels in .whl/ cannot be imported (ModuleNotFoundError), so a wheel missing
from .whl/ shows up here instead of on the GPU machine. Versions are not simulated.
"""

import importlib.metadata as _md
import os as _os
import re as _re
import sys as _sys

_THERE = """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch
build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage
cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn
einops equinox etils execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec
gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna imageio
iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib
kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml
markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack
multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda
numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse
nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13
nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum
opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy
portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich
sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece
sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy
tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm
transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop
wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp""".split()


def _norm(name):
    return _re.sub(r"[-_.]+", "-", name).lower()


# httpx2/httpcore2/truststore: what this venv's huggingface_hub 2.x needs; the GPU machine's
# huggingface_hub 1.x uses httpx, which is there
_allowed = {_norm(n) for n in _THERE} | {"hpo", "httpx2", "httpcore2", "truststore"}
_whl = _os.environ.get("HPO_GPU_WHEELS", "")
if _whl and _os.path.isdir(_whl):
    _allowed |= {_norm(f.split("-")[0]) for f in _os.listdir(_whl) if f.endswith(".whl")}
_blocked = {
    top
    for top, dists in _md.packages_distributions().items()
    if not any(_norm(d) in _allowed for d in dists)
}
_told = set()


class _Blocker:
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in _blocked:
            if top not in _told:
                _told.add(top)
                print(
                    f"[gpu-sim] blocked import of {top!r} (not on the GPU machine)",
                    file=_sys.stderr,
                )
            raise ModuleNotFoundError(f"No module named {top!r} (gpu-sim)", name=top)
        return None


_sys.meta_path.insert(0, _Blocker())
