"""Publishing to a real Triton server, and serving latency against local onnxruntime, in one run.

For the digits CNN (real data) and a MobileNetV2-class network (random weights, 224x224x3):
compress to fp32 + int8-static ONNX, start tritonserver (hack/triton, CPU, the test-only
Python-based "onnxruntime" backend: see tests/triton_backend), then for each precision:

  publish-to-ready   write the version and config, load it, until Triton reports it ready
  triton p50/p95     client-side latency of single-sample HTTP requests (binary tensors)
  server avg         Triton's own average request duration (statistics API) over those requests
  local p50/p95      the same model and sample in onnxruntime in this process (1 thread)

Usage: python bench/triton_serving.py [--requests N] [--json PATH]
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from modelfleet.api.compressedmodel import TritonTarget
from modelfleet.pipeline import measure
from modelfleet.pipeline.run import compress
from modelfleet.runtimes import OnnxRuntimeRunner
from modelfleet.progress import Progress
from modelfleet.publish.triton import publish
from pipeline import prepare_digits, prepare_mobilenet, resource

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import TritonProcess  # noqa: E402  (the tests' harness: tritonserver on loopback)

PRECISIONS = ["fp32", "int8-static"]


def build(name: str, workdir: Path, progress: Progress):
    data = workdir / name
    case = prepare_digits(data) if name == "digits" else prepare_mobilenet(data)
    model = resource(name, case)
    model.spec.compression.precisions = ["int8-static"]
    model.spec.targets.edge = []
    output = workdir / f"{name}-out"
    return compress(model, output, data, progress), output


def bench_model(name: str, server: TritonProcess, workdir: Path, requests: int, progress: Progress) -> list[dict]:
    result, output = build(name, workdir, progress)
    rows = []
    for precision in PRECISIONS:
        target = TritonTarget.model_validate({
            "repository": f"file://{server.repository}", "modelName": f"{name}-{precision}", "precision": precision,
            "serverUrl": server.url, "verification": {"latencyRequests": requests}})
        started = time.monotonic()
        outcome = publish(result, output, target, f"bench/{name}", None, progress)
        wall = time.monotonic() - started
        if outcome.state != "Served":
            raise SystemExit(f"{name} {precision}: {outcome.message}")
        artifact = next(a for a in result.artifacts if a.name == outcome.artifact)
        sample = np.load(output / artifact.smoke)["inputs"][0]
        local = measure.latency(OnnxRuntimeRunner(output / artifact.files[0], 1), sample,
                                measure.BenchmarkSettings(1, 20, requests))
        rows.append({"model": name, "precision": precision, "sizeBytes": artifact.size_bytes,
                     "readySeconds": outcome.ready_seconds, "publishSeconds": round(wall, 3),
                     "tritonP50Ms": outcome.latency.p50_ms, "tritonP95Ms": outcome.latency.p95_ms,
                     "serverAvgMs": (outcome.latency.server_avg_us or 0) / 1000,
                     "localP50Ms": local.p50_ms, "localP95Ms": local.p95_ms})
    return rows


COLUMNS = [("MODEL", "model", "{}"), ("PRECISION", "precision", "{}"), ("SIZE B", "sizeBytes", "{:,}"),
           ("READY S", "readySeconds", "{:.2f}"), ("PUBLISH S", "publishSeconds", "{:.2f}"),
           ("TRITON P50", "tritonP50Ms", "{:.3f}"), ("TRITON P95", "tritonP95Ms", "{:.3f}"),
           ("SERVER AVG", "serverAvgMs", "{:.3f}"), ("LOCAL P50", "localP50Ms", "{:.3f}"),
           ("LOCAL P95", "localP95Ms", "{:.3f}"), ("P50 RATIO", "p50Ratio", "{:.1f}x")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="timed requests per model and precision")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    progress = Progress()
    with tempfile.TemporaryDirectory(prefix="modelfleet-bench-triton-") as tmp:
        workdir = Path(tmp)
        (workdir / "repository").mkdir()
        started = time.monotonic()
        server = TritonProcess(workdir / "repository", workdir / "tritonserver.log")
        progress.step("bench", f"tritonserver live in {time.monotonic() - started:.2f} s")
        try:
            rows = [row for name in ("digits", "mobilenet") for row in bench_model(name, server, workdir,
                                                                                   args.requests, progress)]
        finally:
            server.stop()
    for row in rows:
        row["p50Ratio"] = row["tritonP50Ms"] / row["localP50Ms"]
    cells = [[header for header, _, _ in COLUMNS]] + [[fmt.format(r[key]) for _, key, fmt in COLUMNS] for r in rows]
    widths = [max(len(c) for c in column) for column in zip(*cells)]
    print(f"\n== Triton 2.51 (CPU, test-only Python onnxruntime backend) vs onnxruntime in-process; "
          f"{args.requests} single-sample requests; times in ms unless marked S")
    for line in cells:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
    int8 = {r["model"]: r for r in rows if r["precision"] == "int8-static"}
    fp32 = {r["model"]: r for r in rows if r["precision"] == "fp32"}
    for model in int8:
        print(f"{model}: int8 vs fp32 through Triton p50 {fp32[model]['tritonP50Ms'] / int8[model]['tritonP50Ms']:.2f}x "
              f"faster; locally {fp32[model]['localP50Ms'] / int8[model]['localP50Ms']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
