"""GPU check of hpo's CUDA path, driven through the real service (run by
benchmarks/gpu_check/check.sh).

1. starts ``python -m controller serve --no-dispatch`` (SQLite in /tmp, loopback, no key);
2. a digits-vit ASHA study: this process is the worker (no Ray): it asks trials with the
   Python client, builds a ``workers.runner.TrialJob`` as ``workers/dispatcher.py`` does and
   calls ``workers.runner.run(job)`` in-process; prints every trial's state, params, final
   metrics and per-epoch gpu_memory_peak_mb / epoch_seconds / samples_per_second, the autocast
   dtype in use, and the best configuration;
3. float16 with a gradient scaler, the path of a GPU without bfloat16 (the lent H100/H200 have
   it, so ``pick_device()`` never takes it there by itself): for this part only
   ``torch.cuda.is_bf16_supported`` is patched to return False (the product code is not
   changed) and ``torch.amp.GradScaler`` is replaced by a subclass that only records ``enabled``
   and counts updates; 2 digits-vit trials of one fixed configuration (their seeds differ),
   3 epochs each, must train with autocast float16 and an enabled GradScaler (final scale
   finite and > 0), complete, and report only finite metrics with ``gpu_memory_peak_mb``;
   both are restored afterwards;
4. real CUDA out-of-memory: the process limits itself with
   ``torch.cuda.set_per_process_memory_fraction`` (calibrated so batch 256 fits and 512 does
   not), then two studies with ``resources.on_oom: accumulate``: one that must come down
   1024 -> 512 -> 256 and complete, one whose ``min_batch_size`` 512 floor makes it fail with
   kind ``oom``; the attempts are read back through GET /api/v1/studies/{s}/trials/{n}.

Writes $OUT/summary.json; the server's log goes to $OUT/server.log. Exit code 0 when every
check passed, 1 otherwise. Without CUDA the float16 part prints "no CUDA, skipped", and so does
the OOM part (unless HPO_GPU_FAKE_OOM=1, a local test that raises torch's OutOfMemoryError for
batches > 256).
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

T0 = time.monotonic()
OUT = Path(os.environ.get("OUT") or tempfile.mkdtemp(prefix="hpo-gpu-out-"))
OUT.mkdir(parents=True, exist_ok=True)

import httpx  # noqa: E402
import torch  # noqa: E402

import workers.runner as runner  # noqa: E402
import workers.workloads._training as training  # noqa: E402
import workers.workloads.digits_vit as digits_vit  # noqa: E402
from hpo.client import Client, HPOClientError  # noqa: E402

CUDA = torch.cuda.is_available()
FAKE_OOM = not CUDA and os.environ.get("HPO_GPU_FAKE_OOM") == "1"
N_TRIALS = int(os.environ.get("HPO_GPU_TRIALS", "8" if CUDA else "4"))
MAX_EPOCHS = int(os.environ.get("HPO_GPU_EPOCHS", "5" if CUDA else "3"))
#: the digits study stops asking after this many seconds (so the OOM part still runs)
STUDY_SECONDS = float(os.environ.get("HPO_GPU_STUDY_SECONDS", "90"))
STAMP = time.strftime("%Y%m%d-%H%M%S")

SUMMARY: dict[str, Any] = {"checks": []}
#: per trial key "study/number/attempt": what this process saw the workload train with
SEEN: dict[str, dict[str, Any]] = {}
CURRENT: dict[str, Any] = {"key": None}

logging.basicConfig(
    level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(name)s %(message)s"
)
logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise


def say(*args: Any) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s]", *args, flush=True)


def check(name: str, ok: bool, detail: Any = "") -> bool:
    SUMMARY["checks"].append({"check": name, "ok": bool(ok), "detail": str(detail)[:500]})
    say(f"CHECK {'PASS' if ok else 'FAIL'}: {name}" + (f" -- {detail}" if detail != "" else ""))
    return bool(ok)


def section(title: str) -> None:
    print("\n" + "=" * 100 + f"\n== {title}\n" + "=" * 100, flush=True)


# --- watching what the workload really trains with (no change to its behaviour) ------------

_pick_device = digits_vit.pick_device
_build_model = digits_vit.build_model


def _watched_pick_device() -> training.DeviceSetup:
    setup = _pick_device()
    if CURRENT["key"]:
        SEEN.setdefault(CURRENT["key"], {}).update(
            device=str(setup.device),
            amp_dtype=str(setup.amp_dtype),
            grad_scaler=setup.needs_grad_scaler,
        )
    return setup


def _watched_build_model(hp: training.Hyperparameters) -> Any:
    model = _build_model(hp)
    key = CURRENT["key"]

    def hook(_module: Any, _inputs: Any, output: Any) -> None:
        if key and model.training:
            SEEN.setdefault(key, {}).setdefault(
                "classifier_output_dtype_in_training", str(output.dtype)
            )

    model.classifier.register_forward_hook(hook)
    return model


digits_vit.pick_device = _watched_pick_device
digits_vit.build_model = _watched_build_model

if FAKE_OOM:  # local test of the OOM code path only: torch's own error type, raised early
    _train_epoch = training._Loop.train_epoch

    def _fake_oom_train_epoch(self: Any, epoch: int) -> float:
        if self.hp.batch_size > 256:
            raise torch.cuda.OutOfMemoryError(
                f"(HPO_GPU_FAKE_OOM) CUDA out of memory at batch_size={self.hp.batch_size}"
            )
        return _train_epoch(self, epoch)

    training._Loop.train_epoch = _fake_oom_train_epoch


# --- the controller ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="hpo-gpu-db-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(OUT / "server.log", "w")
        cmd = [
            sys.executable,
            "-m",
            "controller",
            "serve",
            "--no-dispatch",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--database-url",
            f"sqlite:///{self.dir / 'hpo.db'}",
            "--log-level",
            "info",
        ]
        say("starting the controller:", " ".join(cmd))
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the controller exited with {self.proc.returncode}; see server.log"
                )
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the controller did not answer /healthz within 60 s")
            time.sleep(0.2)
        say(f"controller up at {self.url} (pid {self.proc.pid}, database {self.dir / 'hpo.db'})")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        say(f"controller stopped (exit code {self.proc.returncode})")
        self.log.close()


# --- the worker (what the dispatcher's Ray task does, in this process) ------------------------


def trial_seed(study_seed: int | None, number: int) -> int:
    """workers.dispatcher.trial_seed (that module imports ray, which is not on the GPU machine)."""
    return ((study_seed or 0) * 1_000_003 + number) % (2**31)


def work(client: Client, url: str, study: str, *, deadline: float) -> list[dict[str, Any]]:
    """Ask and run attempts of ``study`` until the controller has none left (409)."""
    spec = client.get_study(study).spec
    done: list[dict[str, Any]] = []
    while True:
        if time.monotonic() > deadline:
            say(f"time is up for {study}: cancelling it")
            client.cancel_study(study)
            break
        try:
            trial = client.ask(study, worker="gpu-check")
        except HPOClientError as exc:
            if exc.status_code == 409:
                say(f"ask {study}: 409 -- {exc.message}")
                break
            raise
        a = trial.assignment
        key = f"{study}/{a.number}/{a.attempt}"
        job = runner.TrialJob(
            controller_url=url,
            assignment=a,
            workload=spec.workload.name,
            options=dict(spec.workload.options),
            max_epochs=spec.budget.max_epochs,
            seed=trial_seed(spec.algorithm.seed, a.number),
            heartbeat_interval=10.0,
            patience=60.0,
        )
        say(f"trial {study}/{a.number} attempt {a.attempt}: params {a.params}")
        CURRENT["key"] = key
        start = time.monotonic()
        try:
            outcome = runner.run(job)
        finally:
            CURRENT["key"] = None
        seconds = time.monotonic() - start
        gc.collect()
        if CUDA:
            torch.cuda.empty_cache()
        say(
            f"trial {study}/{a.number} attempt {a.attempt}: runner.run -> {outcome!r} "
            f"in {seconds:.1f} s"
        )
        done.append(
            {
                "number": a.number,
                "attempt": a.attempt,
                "params": a.params,
                "outcome": outcome,
                "seconds": round(seconds, 2),
                **SEEN.get(key, {}),
            }
        )
    return done


def wait_finished(client: Client, study: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        status = client.get_study(study).status
        if status != "running" or time.monotonic() > deadline:
            return str(status)
        time.sleep(0.3)


# --- 3. the digits-vit study -------------------------------------------------------------------

EPOCH_COLUMNS = (
    "val_accuracy",
    "val_loss",
    "train_loss",
    "epoch_seconds",
    "samples_per_second",
    "gpu_memory_peak_mb",
)


def digits_study(client: Client, url: str) -> None:
    section(
        f"digits-vit study: ASHA, {N_TRIALS} trials of up to {MAX_EPOCHS} epochs, in-process worker"
    )
    name = f"gpu-digits-vit-{STAMP}"
    spec = {
        "name": name,
        "objective": {"metric": "val_accuracy", "direction": "maximize"},
        "search_space": "transformer-small",
        "algorithm": {"name": "asha", "seed": 0, "reduction_factor": 2, "grace_period": 1},
        "budget": {"max_trials": N_TRIALS, "max_epochs": MAX_EPOCHS, "parallelism": 1},
        "workload": {"name": "digits-vit"},
        "resources": {"gpus_per_trial": 1, "cpus_per_trial": 1},
    }
    study = client.create_study(spec)
    say(f"created study {study.name!r} (id {study.id}): {json.dumps(spec)}")
    setup = training.pick_device()
    say(
        f"pick_device(): device={setup.device} autocast dtype={setup.amp_dtype} "
        f"grad scaler={setup.needs_grad_scaler}"
    )
    attempts = work(client, url, name, deadline=time.monotonic() + STUDY_SECONDS)
    status = wait_finished(client, name)
    say(f"study status: {status}")
    trials = []
    for t in client.trials(name):
        d = client.trial(name, t.number)
        seen = next(
            (a for a in attempts if a["number"] == t.number and a["attempt"] == d.attempts), {}
        )
        print(
            f"\n--- trial {d.number}: state={d.state} value={d.value} attempts={d.attempts} "
            f"last_step={d.last_step}"
        )
        print(f"    params: {json.dumps(d.params)}")
        print(f"    final_metrics: {json.dumps(d.final_metrics)}")
        print(
            f"    trained on: device={seen.get('device')} autocast={seen.get('amp_dtype')} "
            f"grad_scaler={seen.get('grad_scaler')} classifier output dtype in training="
            f"{seen.get('classifier_output_dtype_in_training')}"
        )
        for r in d.runs:
            print(
                f"    run attempt {r.attempt}: state={r.state} worker={r.worker} gpus={r.gpus!r} "
                f"batch_size={r.batch_size} accumulation={r.gradient_accumulation_steps} "
                f"failure_kind={r.failure_kind} error={(r.error or '')[:300]!r}"
            )
        print("    " + "step " + " ".join(f"{c:>20}" for c in EPOCH_COLUMNS))
        for rep in d.reports:
            cells = [
                f"{rep.metrics[c]:>20.4f}" if c in rep.metrics else f"{'-':>20}"
                for c in EPOCH_COLUMNS
            ]
            print(f"    {rep.step:>4} " + " ".join(cells))
        trials.append({**d.model_dump(mode="json"), "seen_by_worker": seen})
    best = None
    try:
        b = client.best(name)
        best = b.model_dump(mode="json")
        print(
            f"\nBEST trial {b.number}: val_accuracy={b.value:.4f}\nbest configuration:\n"
            f"{json.dumps(b.params, indent=2)}"
        )
    except HPOClientError as exc:
        print(f"\nno best trial: {exc}")
    SUMMARY["digits_study"] = {
        "name": name,
        "spec": spec,
        "status": status,
        "best": best,
        "trials": trials,
        "attempts_run_here": attempts,
        "device_setup": {"device": str(setup.device), "amp_dtype": str(setup.amp_dtype)},
    }
    reports = [rep for t in trials for rep in t["reports"]]
    check(
        "digits study: every handed-out trial ended",
        all(t["state"] in ("completed", "pruned", "failed") for t in trials),
        [t["state"] for t in trials],
    )
    check(
        "digits study: at least one trial completed", any(t["state"] == "completed" for t in trials)
    )
    check(
        "digits study: no trial failed",
        not any(t["state"] == "failed" for t in trials),
        [
            (t["number"], (t["runs"][-1].get("error") or "")[:200])
            for t in trials
            if t["state"] == "failed"
        ],
    )
    check(
        "digits study: epoch_seconds and samples_per_second in every report",
        reports
        and all(
            "epoch_seconds" in r["metrics"] and "samples_per_second" in r["metrics"]
            for r in reports
        ),
    )
    if CUDA:
        check(
            "digits study: gpu_memory_peak_mb in every report (CUDA)",
            reports and all(r["metrics"].get("gpu_memory_peak_mb", 0) > 0 for r in reports),
        )
        want = "torch.bfloat16" if torch.cuda.is_bf16_supported() else "torch.float16"
        check(
            f"digits study: workloads trained with autocast {want}",
            attempts and all(a.get("amp_dtype") == want for a in attempts),
            [a.get("amp_dtype") for a in attempts],
        )
        check(
            "digits study: the classifier ran in reduced precision in training",
            attempts
            and all(
                a.get("classifier_output_dtype_in_training") in ("torch.bfloat16", "torch.float16")
                for a in attempts
            ),
            [a.get("classifier_output_dtype_in_training") for a in attempts],
        )
    check("digits study: a best configuration", best is not None)


# --- 4. float16 with a gradient scaler (what a GPU without bfloat16 trains with) ---------------

#: one configuration (a random "search" of single choices): its 2 trials differ by seed only
FP16_PARAMS: dict[str, list[Any]] = {
    "learning_rate": [1e-3],
    "batch_size": [32],
    "dropout": [0.1],
    "num_heads": [4],
    "num_layers": [2],
    "hidden_size": [64],
}
#: per trial key: the GradScaler the training loop built (read back after the trial)
SCALERS: dict[str, Any] = {}


class _WatchedGradScaler(torch.amp.GradScaler):
    """torch.amp.GradScaler, unchanged, that notes what it was built with and counts updates."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.updates = 0
        key = CURRENT["key"]
        if key:
            SCALERS[key] = self
            SEEN.setdefault(key, {}).update(
                grad_scaler_enabled=self.is_enabled(), grad_scaler_device=self._device
            )

    def update(self, new_scale: Any = None) -> None:
        super().update(new_scale)
        self.updates += 1


def fp16_part(client: Client, url: str) -> None:
    section("float16 + GradScaler: pick_device() as on a GPU without bfloat16")
    if not CUDA:
        say("no CUDA, skipped")
        SUMMARY["fp16"] = "no CUDA, skipped"
        return
    name = f"gpu-fp16-{STAMP}"
    spec = {
        "name": name,
        "objective": {"metric": "val_accuracy", "direction": "maximize"},
        "search_space": {k: {"type": "categorical", "choices": v} for k, v in FP16_PARAMS.items()},
        "algorithm": {"name": "random", "seed": 0},
        "budget": {"max_trials": 2, "max_epochs": 3, "parallelism": 1},
        "workload": {"name": "digits-vit"},
        "resources": {"gpus_per_trial": 1, "cpus_per_trial": 1},
    }
    is_bf16_supported, grad_scaler = torch.cuda.is_bf16_supported, torch.amp.GradScaler
    # for this phase only: the product code picks float16 as on a GPU without bfloat16
    torch.cuda.is_bf16_supported = lambda *args, **kwargs: False
    torch.amp.GradScaler = _WatchedGradScaler  # type: ignore[misc]
    try:
        setup = training.pick_device()
        say(
            f"torch.cuda.is_bf16_supported patched to False: pick_device(): device={setup.device} "
            f"autocast dtype={setup.amp_dtype} grad scaler={setup.needs_grad_scaler}"
        )
        client.create_study(spec)
        say(f"created study {name!r}: {json.dumps(spec)}")
        attempts = work(client, url, name, deadline=time.monotonic() + 60)
    finally:
        torch.cuda.is_bf16_supported = is_bf16_supported
        torch.amp.GradScaler = grad_scaler  # type: ignore[misc]
    say(f"restored torch.cuda.is_bf16_supported() -> {torch.cuda.is_bf16_supported()}")
    for a in attempts:
        scaler = SCALERS.get(f"{name}/{a['number']}/{a['attempt']}")
        if scaler is not None:
            a.update(grad_scaler_final_scale=scaler.get_scale(), grad_scaler_updates=scaler.updates)
    status = wait_finished(client, name)
    trials = [client.trial(name, t.number).model_dump(mode="json") for t in client.trials(name)]
    for t in trials:
        a = next((a for a in reversed(attempts) if a["number"] == t["number"]), {})
        print(
            f"\n--- trial {t['number']}: state={t['state']} value={t['value']} "
            f"params={json.dumps(t['params'])}"
        )
        print(
            f"    trained on: device={a.get('device')} autocast={a.get('amp_dtype')} "
            f"classifier output dtype in training={a.get('classifier_output_dtype_in_training')} "
            f"GradScaler enabled={a.get('grad_scaler_enabled')} "
            f"updates={a.get('grad_scaler_updates')} "
            f"final scale={a.get('grad_scaler_final_scale')} "
            f"(initial 65536: lower means steps with inf/NaN gradients were skipped)"
        )
        for rep in t["reports"]:
            print(f"    step {rep['step']}: {json.dumps(rep['metrics'])}")
    print(f"    study status: {status}")
    SUMMARY["fp16"] = {
        "name": name,
        "spec": spec,
        "status": status,
        "device_setup": {"device": str(setup.device), "amp_dtype": str(setup.amp_dtype)},
        "trials": trials,
        "attempts_run_here": attempts,
    }
    reports = [rep for t in trials for rep in t["reports"]]
    check(
        "fp16: pick_device() chose float16 with bf16 reported unsupported",
        setup.amp_dtype == torch.float16 and setup.needs_grad_scaler,
        setup.amp_dtype,
    )
    check(
        "fp16: workloads trained with autocast torch.float16",
        bool(attempts) and all(a.get("amp_dtype") == "torch.float16" for a in attempts),
        [a.get("amp_dtype") for a in attempts],
    )
    check(
        "fp16: the classifier ran in float16 in training",
        bool(attempts)
        and all(a.get("classifier_output_dtype_in_training") == "torch.float16" for a in attempts),
        [a.get("classifier_output_dtype_in_training") for a in attempts],
    )
    check(
        "fp16: the GradScaler was enabled and stepped, its final scale finite and > 0",
        bool(attempts)
        and all(
            a.get("grad_scaler_enabled") is True
            and a.get("grad_scaler_updates", 0) > 0
            and 0 < a.get("grad_scaler_final_scale", 0) < math.inf
            for a in attempts
        ),
        [
            (
                a.get("grad_scaler_enabled"),
                a.get("grad_scaler_updates"),
                a.get("grad_scaler_final_scale"),
            )
            for a in attempts
        ],
    )
    check(
        "fp16: every trial completed",
        len(trials) == 2 and all(t["state"] == "completed" for t in trials),
        [
            (t["number"], t["state"], (t["runs"][-1].get("error") or "")[:200] if t["runs"] else "")
            for t in trials
        ],
    )
    values = [v for r in reports for v in r["metrics"].values()] + [
        v for t in trials for v in (t.get("final_metrics") or {}).values()
    ]
    check(
        "fp16: every reported loss and metric finite",
        bool(reports) and all(isinstance(v, (int, float)) and math.isfinite(v) for v in values),
        [v for v in values if not (isinstance(v, (int, float)) and math.isfinite(v))],
    )
    check(
        "fp16: gpu_memory_peak_mb in every report",
        bool(reports) and all(r["metrics"].get("gpu_memory_peak_mb", 0) > 0 for r in reports),
    )


# --- 5. a real CUDA out-of-memory ----------------------------------------------------------------

OOM_PARAMS = {
    "learning_rate": 1e-3,
    "dropout": 0.1,
    "num_heads": 8,
    "num_layers": 8,
    "hidden_size": 256,
    "batch_size": 1024,
}
if FAKE_OOM:  # tiny on the CPU
    OOM_PARAMS = {**OOM_PARAMS, "num_heads": 2, "num_layers": 1, "hidden_size": 32}


class _Quiet:
    def report(self, step: int, metrics: dict[str, float]) -> bool:
        return False


def calibrate() -> dict[str, Any]:
    """Peak memory of one real epoch at batch 256 and 512 (no limit yet): the limit goes
    between them."""
    out: dict[str, Any] = {}
    for batch in (256, 512):
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        start = time.monotonic()
        digits_vit.train(
            {**OOM_PARAMS, "batch_size": batch}, _Quiet(), options={}, max_epochs=1, seed=0
        )
        out[batch] = {
            "max_allocated": torch.cuda.max_memory_allocated(),
            "max_reserved": torch.cuda.max_memory_reserved(),
            "seconds": round(time.monotonic() - start, 2),
        }
        say(
            f"calibration batch {batch}: "
            f"max allocated {out[batch]['max_allocated'] / 2**20:.0f} MiB, "
            f"max reserved {out[batch]['max_reserved'] / 2**20:.0f} MiB ({out[batch]['seconds']} s)"
        )
    gc.collect()
    torch.cuda.empty_cache()
    return out


def oom_study(client: Client, url: str, *, min_batch_size: int, label: str) -> dict[str, Any]:
    name = f"gpu-oom-{label}-{STAMP}"
    spec = {
        "name": name,
        "objective": {"metric": "val_accuracy", "direction": "maximize"},
        "search_space": {k: {"type": "categorical", "choices": [v]} for k, v in OOM_PARAMS.items()},
        "algorithm": {"name": "random", "seed": 0},
        "budget": {"max_trials": 1, "max_epochs": 2},
        "workload": {"name": "digits-vit", "options": {"max_samples": 400} if FAKE_OOM else {}},
        "resources": {
            "gpus_per_trial": 1,
            "on_oom": "accumulate",
            "min_batch_size": min_batch_size,
        },
    }
    client.create_study(spec)
    say(f"created study {name!r}: resources {spec['resources']}, params {OOM_PARAMS}")
    attempts = work(client, url, name, deadline=time.monotonic() + 60)
    status = wait_finished(client, name)
    raw = httpx.get(f"{url}/api/v1/studies/{name}/trials/0", timeout=30)
    raw.raise_for_status()
    detail = raw.json()
    print(
        f"\nGET /api/v1/studies/{name}/trials/0 -> {raw.status_code}: state={detail['state']} "
        f"attempts={detail['attempts']} final_metrics={detail.get('final_metrics')}"
    )
    for r in detail["runs"]:
        err = (r.get("error") or "").strip().splitlines()
        print(
            f"    attempt {r['attempt']}: state={r['state']} batch_size={r['batch_size']} "
            f"gradient_accumulation_steps={r['gradient_accumulation_steps']} "
            f"failure_kind={r['failure_kind']} last_step={r['last_step']} "
            f"error[0]={err[0][:300] if err else ''!r}"
        )
        peaks = [rep["metrics"].get("gpu_memory_peak_mb") for rep in r.get("reports", [])]
        if peaks:
            print(f"        gpu_memory_peak_mb per epoch: {peaks}")
    print(f"    study status: {status}")
    return {
        "name": name,
        "spec": spec,
        "status": status,
        "trial": detail,
        "attempts_run_here": attempts,
    }


def oom_part(client: Client, url: str) -> None:
    section("real CUDA out-of-memory with resources.on_oom: accumulate")
    if not CUDA and not FAKE_OOM:
        say("no CUDA, skipped")
        SUMMARY["oom"] = "no CUDA, skipped"
        return
    info: dict[str, Any] = {"fake": FAKE_OOM}
    if CUDA:
        total = torch.cuda.get_device_properties(0).total_memory
        cal = calibrate()
        fits, too_big = cal[256], cal[512]
        limit = (fits["max_reserved"] + too_big["max_allocated"]) / 2
        fraction = limit / total
        info.update(
            calibration={str(k): v for k, v in cal.items()},
            limit_bytes=int(limit),
            fraction=fraction,
            total_memory=total,
        )
        check(
            "oom: calibration leaves room (512 needs more than 256 reserves)",
            too_big["max_allocated"] > fits["max_reserved"] * 1.05,
            f"256 reserves {fits['max_reserved'] / 2**20:.0f} MiB, 512 allocates "
            f"{too_big['max_allocated'] / 2**20:.0f} MiB",
        )
        torch.cuda.set_per_process_memory_fraction(fraction, 0)
        say(
            f"torch.cuda.set_per_process_memory_fraction({fraction:.6f}) -> limit "
            f"{limit / 2**20:.0f} MiB of {total / 2**20:.0f} MiB"
        )
    SUMMARY["oom"] = info
    try:
        section("OOM study 1: min_batch_size 64 -> expect 1024 oom, 512 oom, 256 completes")
        a = oom_study(client, url, min_batch_size=64, label="accumulate")
        info["accumulate"] = a
        runs = a["trial"]["runs"]
        check(
            "oom accumulate: first attempt failed with kind oom",
            runs and runs[0]["failure_kind"] == "oom" and runs[0]["state"] == "failed",
            runs and (runs[0]["failure_kind"], (runs[0].get("error") or "")[:200]),
        )
        check(
            "oom accumulate: the runner reported it as a failure",
            a["attempts_run_here"] and a["attempts_run_here"][0]["outcome"] == "failed",
        )
        halving = all(
            later["batch_size"] == earlier["batch_size"] // 2
            and later["gradient_accumulation_steps"] == earlier["gradient_accumulation_steps"] * 2
            for earlier, later in zip(runs, runs[1:], strict=False)
        )
        check(
            "oom accumulate: each retry halves batch_size and doubles accumulation",
            halving,
            [(r["batch_size"], r["gradient_accumulation_steps"]) for r in runs],
        )
        check(
            "oom accumulate: effective batch stays 1024",
            all(r["batch_size"] * r["gradient_accumulation_steps"] == 1024 for r in runs),
        )
        check(
            "oom accumulate: the trial completed once it fit",
            a["trial"]["state"] == "completed",
            f"state {a['trial']['state']}, {len(runs)} attempts",
        )
        check(
            "oom accumulate: 1024 -> 512 -> 256",
            [r["batch_size"] for r in runs] == [1024, 512, 256],
            [r["batch_size"] for r in runs],
        )
        check(
            "oom accumulate: every failed attempt is kind oom",
            all(r["failure_kind"] == "oom" for r in runs if r["state"] == "failed"),
        )
        section(
            "OOM study 2: min_batch_size 512 -> expect 1024 oom, 512 oom, "
            "then the trial fails (floor)"
        )
        b = oom_study(client, url, min_batch_size=512, label="floor")
        info["floor"] = b
        runs = b["trial"]["runs"]
        check(
            "oom floor: the trial failed with kind oom at the floor",
            b["trial"]["state"] == "failed" and runs and runs[-1]["failure_kind"] == "oom",
            [(r["batch_size"], r["state"], r["failure_kind"]) for r in runs],
        )
        check(
            "oom floor: attempts at 1024 and 512 only",
            [r["batch_size"] for r in runs] == [1024, 512],
            [r["batch_size"] for r in runs],
        )
    finally:
        if CUDA:
            torch.cuda.set_per_process_memory_fraction(1.0, 0)


def main() -> int:
    section("environment (the worker process)")
    say(
        f"python {sys.version.split()[0]} torch {torch.__version__} cuda available {CUDA} "
        f"trials {N_TRIALS} max_epochs {MAX_EPOCHS} fake_oom {FAKE_OOM}"
    )
    if CUDA:
        say(
            f"device {torch.cuda.get_device_name(0)} "
            f"bf16 supported {torch.cuda.is_bf16_supported()}"
        )
    else:
        torch.set_num_threads(int(os.environ.get("HPO_GPU_CPU_THREADS", "1")))
    SUMMARY["env"] = {
        "python": sys.version,
        "torch": torch.__version__,
        "cuda": CUDA,
        "device": torch.cuda.get_device_name(0) if CUDA else None,
    }
    server = Server()
    client = Client(server.url, timeout=60)
    try:
        for part in (digits_study, fp16_part, oom_part):
            try:
                part(client, server.url)
            except Exception as exc:  # go on with the next part
                traceback.print_exc()
                check(
                    f"{part.__name__} ran without an exception",
                    False,
                    f"{type(exc).__name__}: {exc}",
                )
    finally:
        client.close()
        server.stop()
        SUMMARY["seconds"] = round(time.monotonic() - T0, 1)
        (OUT / "summary.json").write_text(json.dumps(SUMMARY, indent=2, default=str))
    section("summary of checks")
    failed = [c for c in SUMMARY["checks"] if not c["ok"]]
    for c in SUMMARY["checks"]:
        print(f"  {'PASS' if c['ok'] else 'FAIL'}  {c['check']}")
    d = SUMMARY.get("digits_study") or {}
    if d.get("best"):
        print(
            f"  best digits-vit trial {d['best']['number']}: val_accuracy {d['best']['value']:.4f} "
            f"params {json.dumps(d['best']['params'])}"
        )
    for t in d.get("trials", []):
        peaks = [r["metrics"].get("gpu_memory_peak_mb") for r in t["reports"]]
        secs = [round(r["metrics"].get("epoch_seconds", 0), 3) for r in t["reports"]]
        print(
            f"  trial {t['number']}: {t['state']:<9} value={t['value']} epoch_seconds={secs} "
            f"gpu_memory_peak_mb={[round(p, 1) if p else p for p in peaks]} "
            f"autocast={t['seen_by_worker'].get('amp_dtype')}"
        )
    fp16 = SUMMARY.get("fp16")
    if isinstance(fp16, dict):
        for a in fp16["attempts_run_here"]:
            print(
                f"  fp16 trial {a['number']}: {a['outcome']} autocast={a.get('amp_dtype')} "
                f"GradScaler enabled={a.get('grad_scaler_enabled')} "
                f"final scale={a.get('grad_scaler_final_scale')} in {a['seconds']} s"
            )
    else:
        print(f"  fp16: {fp16}")
    oom = SUMMARY.get("oom")
    if isinstance(oom, dict):
        for label in ("accumulate", "floor"):
            if label in oom:
                runs = oom[label]["trial"]["runs"]
                print(
                    f"  oom {label}: trial {oom[label]['trial']['state']}; attempts "
                    + ", ".join(
                        f"bs={r['batch_size']}x{r['gradient_accumulation_steps']} "
                        f"{r['state']}/{r['failure_kind']}"
                        for r in runs
                    )
                )
    else:
        print(f"  oom: {oom}")
    print(
        f"  {len(SUMMARY['checks']) - len(failed)} of {len(SUMMARY['checks'])} checks passed "
        f"in {SUMMARY['seconds']} s; summary in {OUT / 'summary.json'}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
