"""The smoke test: a bundle's golden inputs through the runtime that will serve it, in a child process.

A child, so that a runtime that crashes (a bad model can segfault ncnn) cannot take the agent down, and so that
numpy and the runtimes never stay loaded in the agent (its idle RSS stays small).
`run_smoke(directory)` is the agent's side; `python -m modelfleet.agent.smoke DIR` the child's, which prints one
JSON line: agreement (mean per-sample cosine), maxAbsDiff, passed, p50Ms, p95Ms.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SmokeFailed", "SmokeResult", "run_smoke"]

TIMED_RUNS = 30
WARMUP_RUNS = 3


class SmokeFailed(Exception):
    """The runtime could not load or run the model (a crash, a timeout, an error)."""


@dataclass(frozen=True)
class SmokeResult:
    agreement: float  # mean cosine similarity per sample with the golden outputs
    max_abs_diff: float
    passed: bool
    p50_ms: float
    p95_ms: float
    detail: str  # which tolerance failed, for the report

    def to_json(self) -> dict:
        return {"agreement": self.agreement, "maxAbsDiff": self.max_abs_diff, "passed": self.passed,
                "p50Ms": self.p50_ms, "p95Ms": self.p95_ms, "detail": self.detail}


def run_smoke(directory: Path, manifest, *, threads: int = 1, timeout_s: float = 300.0,
              cancel: threading.Event | None = None) -> SmokeResult:
    """Smoke-test the unpacked bundle in `directory` (its verified `BundleManifest`) in a child process; raises
    `SmokeFailed`, also when `cancel` is set meanwhile (the child is killed: an agent told to stop does not wait
    for it). The child gets what it needs as JSON and imports only numpy and the runtime (no pydantic)."""
    task = {"directory": str(directory), "threads": threads, "runtime": manifest.runtime,
            "precision": manifest.precision, "modelFiles": list(manifest.model_files), "smokeFile": manifest.smoke.file,
            "minCosine": manifest.smoke.min_cosine, "maxAbsDiff": manifest.smoke.max_abs_diff}
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    deadline = time.monotonic() + timeout_s
    with subprocess.Popen([sys.executable, "-m", "modelfleet.agent.smoke", json.dumps(task)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=env) as child:
        while True:
            try:
                stdout, stderr = child.communicate(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if cancel is not None and cancel.is_set():
                    child.kill()
                    raise SmokeFailed("cancelled: the agent is stopping") from None
                if time.monotonic() > deadline:
                    child.kill()
                    raise SmokeFailed(f"the runtime did not finish within {timeout_s:.0f} s") from None
    if child.returncode != 0:
        tail = (stderr or "").strip().splitlines()[-3:]
        raise SmokeFailed(f"the smoke test exited {child.returncode}: {' | '.join(tail)[-500:]}")
    try:
        data = json.loads(stdout.strip().splitlines()[-1])
        return SmokeResult(agreement=float(data["agreement"]), max_abs_diff=float(data["maxAbsDiff"]),
                           passed=bool(data["passed"]), p50_ms=float(data["p50Ms"]), p95_ms=float(data["p95Ms"]),
                           detail=str(data.get("detail", "")))
    except (IndexError, KeyError, TypeError, ValueError) as e:
        raise SmokeFailed(f"the smoke test printed no result: {e}") from None


# --- the child ------------------------------------------------------------------------------------


def _runner(task: dict):
    from modelfleet.runtimes import NcnnRunner, TfliteRunner

    files = [Path(task["directory"]) / f for f in task["modelFiles"]]
    if task["runtime"] == "ncnn":
        return NcnnRunner(files[0], files[1], task["threads"], fp16=task["precision"] == "fp16")
    if task["runtime"] == "tflite":
        return TfliteRunner(files[0], task["threads"])
    raise ValueError(f"no runner for runtime {task['runtime']!r}")


def _predict(runner, inputs):
    """Outputs for every sample; a fixed-batch model gets exactly its batch (the padding's outputs dropped)."""
    import numpy as np

    outputs = []
    step = runner.batch_size
    for start in range(0, len(inputs), step):
        batch = inputs[start:start + step]
        real = len(batch)
        if runner.fixed_batch and real < step:
            batch = np.concatenate([batch, np.zeros((step - real, *batch.shape[1:]), batch.dtype)])
        outputs.append(np.asarray(runner.run({"input": batch})[0])[:real].reshape(real, -1))
    return np.concatenate(outputs).astype(np.float64)


def _child(task: dict) -> dict:
    import time

    import numpy as np

    with np.load(Path(task["directory"]) / task["smokeFile"], allow_pickle=False) as golden:
        inputs, expected = golden["inputs"].astype(np.float32), golden["outputs"]
    runner = _runner(task)
    outputs = _predict(runner, inputs)
    expected = expected.reshape(len(inputs), -1).astype(np.float64)
    if outputs.shape != expected.shape:
        raise ValueError(f"outputs of shape {outputs.shape}, golden outputs {expected.shape}")
    norms = np.linalg.norm(outputs, axis=1) * np.linalg.norm(expected, axis=1)
    cosine = np.where(norms > 0, np.sum(outputs * expected, axis=1) / np.maximum(norms, 1e-30),
                      np.all(outputs == expected, axis=1).astype(np.float64))
    agreement = float(np.clip(np.mean(cosine), -1, 1))
    max_abs = float(np.max(np.abs(outputs - expected)))
    problems = []
    if task["minCosine"] is not None and agreement < task["minCosine"]:
        problems.append(f"agreement {agreement:.5f} < minCosine {task['minCosine']}")
    if task["maxAbsDiff"] is not None and max_abs > task["maxAbsDiff"]:
        problems.append(f"max abs diff {max_abs:.3g} > maxAbsDiff {task['maxAbsDiff']}")

    # Latency of one call with one sample (or the whole fixed batch), as the application on the device calls it.
    sample = inputs[:1]
    if runner.fixed_batch:
        sample = np.concatenate([sample] * runner.batch_size)
    for _ in range(WARMUP_RUNS):
        runner.run({"input": sample})
    timings = []
    for _ in range(TIMED_RUNS):
        start = time.perf_counter()
        runner.run({"input": sample})
        timings.append((time.perf_counter() - start) * 1000)
    return SmokeResult(agreement=agreement, max_abs_diff=max_abs, passed=not problems,
                       p50_ms=float(np.percentile(timings, 50)), p95_ms=float(np.percentile(timings, 95)),
                       detail="; ".join(problems)).to_json()


if __name__ == "__main__":
    print(json.dumps(_child(json.loads(sys.argv[1]))))
