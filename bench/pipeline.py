"""End-to-end benchmark of the compression pipeline on two models.

  digits      the example CNN, trained on scikit-learn's real digits (examples/digits/train.py)
  mobilenet   a MobileNetV2-class network (bench/mobilenet.py) with random weights; its
              evaluation labels are the fp32 torch model's own top-1 on random images, so its
              accuracy only says how often an artifact agrees with fp32 torch: it is NOT a
              real accuracy

Each model goes through one `compress()` call (fp16, int8-dynamic, int8-static; ncnn fp32,
ncnn fp16, TFLite fp32). Latency is measured by the pipeline at 1 thread, then again here at
2 threads on the published artifacts. Prints a table per model and PASS/FAIL lines for the
targets; exits 0 whether or not targets are met.

Usage: python bench/pipeline.py [--json PATH] [--keep DIR]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from modelfleet.api import CompressedModel
from modelfleet.api.result import ArtifactResult, ResultManifest
from modelfleet.pipeline import measure
from modelfleet.pipeline.run import BASELINE, compress
from modelfleet.pipeline.runtimes import NcnnRunner, OnnxRuntimeRunner, TfliteRunner
from modelfleet.progress import Progress
from mobilenet import mobilenet_v2, smooth_images

ROOT = Path(__file__).resolve().parents[1]
INT8 = "onnx-int8-static"
EDGE = [("x86-boxes", "ncnn", "fp32"), ("arm-boards", "ncnn", "fp16"), ("phones", "tflite", "fp32")]
EDGE_ARTIFACTS = [f"{runtime}-{precision}-{name}" for name, runtime, precision in EDGE]  # as run.py names them
MOBILENET_NOTE = ("mobilenet accuracy = agreement with the fp32 torch model's top-1 on random images "
                  "(random weights): NOT a meaningful accuracy")


def prepare_digits(directory: Path) -> dict:
    subprocess.run([sys.executable, "-W", "ignore", str(ROOT / "examples/digits/train.py"), "--out", str(directory)],
                   check=True, stdout=subprocess.DEVNULL)
    return {"source": "digits.torchscript.pt", "shape": [-1, 1, 8, 8], "calibrationSamples": 256,
            "warmupRuns": 50, "runs": 500}


def prepare_mobilenet(directory: Path) -> dict:
    directory.mkdir(parents=True, exist_ok=True)
    model = mobilenet_v2()
    generator = torch.Generator().manual_seed(1)
    calibration, evaluation = smooth_images(64, generator), smooth_images(32, generator)
    with torch.no_grad():
        torch.jit.trace(model, evaluation[:2]).save(str(directory / "mobilenet.torchscript.pt"))
        labels = model(evaluation).argmax(1).numpy()
    np.savez(directory / "calibration.npz", inputs=calibration.numpy())
    np.savez(directory / "evaluation.npz", inputs=evaluation.numpy(), labels=labels)
    return {"source": "mobilenet.torchscript.pt", "shape": [-1, 3, 224, 224], "calibrationSamples": 64,
            "warmupRuns": 20, "runs": 100}


def resource(name: str, case: dict) -> CompressedModel:
    return CompressedModel.model_validate({
        "apiVersion": "modelfleet.io/v1alpha1",
        "kind": "CompressedModel",
        "metadata": {"name": name},
        "spec": {
            "source": {"uri": f"file://{case['source']}", "format": "torchscript",
                       "inputs": [{"name": "input", "shape": case["shape"]}]},
            "dataset": {"calibration": {"uri": "file://calibration.npz"},
                        "evaluation": {"uri": "file://evaluation.npz"}},
            "compression": {"precisions": ["fp16", "int8-dynamic", "int8-static"],
                            "calibrationSamples": case["calibrationSamples"]},
            "targets": {"edge": [{"name": n, "runtime": r, "precision": p} for n, r, p in EDGE]},
            "benchmark": {"threads": 1, "warmupRuns": case["warmupRuns"], "runs": case["runs"]},
        },
    })


def _runner(out: Path, artifact: ArtifactResult, threads: int):
    files = [out / f for f in artifact.files]
    if artifact.runtime == "onnxruntime":
        return OnnxRuntimeRunner(files[0], threads)
    if artifact.runtime == "ncnn":
        return NcnnRunner(files[0], files[1], threads, artifact.precision == "fp16")
    return TfliteRunner(files[0], threads)


def benchmark(name: str, workdir: Path, progress: Progress) -> dict:
    data = workdir / name
    case = prepare_digits(data) if name == "digits" else prepare_mobilenet(data)
    output = workdir / f"{name}-out"
    started = time.monotonic()
    result: ResultManifest = compress(resource(name, case), output, data, progress)
    wall = time.monotonic() - started
    sample = np.load(data / "evaluation.npz")["inputs"][0]
    settings = measure.BenchmarkSettings(2, case["warmupRuns"], case["runs"])
    progress.step("bench", f"{name}: latency at 2 threads")
    two_threads = {a.name: measure.latency(_runner(output, a, 2), sample, settings).p50_ms
                   for a in result.artifacts}
    base = next(a for a in result.artifacts if a.name == BASELINE)
    rows = [{
        "artifact": a.name, "runtime": a.runtime, "precision": a.precision, "sizeBytes": a.size_bytes,
        "sizeRatio": a.size_bytes / base.size_bytes, "p50Ms": a.latency.p50_ms, "p95Ms": a.latency.p95_ms,
        "speedup": base.latency.p50_ms / a.latency.p50_ms, "p50Ms2T": two_threads[a.name],
        "speedup2T": two_threads[BASELINE] / two_threads[a.name], "accuracy": a.accuracy,
        "dropPoints": a.accuracy_drop_points,
    } for a in result.artifacts]
    return {"compressWallSeconds": wall, "runs": case["runs"], "evaluatedSamples": result.baseline.evaluated_samples,
            "artifacts": rows, "failures": [f.model_dump(by_alias=True, exclude_none=True) for f in result.failures]}


COLUMNS = [("ARTIFACT", "artifact", "{}"), ("RUNTIME", "runtime", "{}"), ("PRECISION", "precision", "{}"),
           ("SIZE B", "sizeBytes", "{:,}"), ("/FP32", "sizeRatio", "{:.3f}"), ("P50 MS", "p50Ms", "{:.3f}"),
           ("P95 MS", "p95Ms", "{:.3f}"), ("SPEEDUP", "speedup", "{:.2f}x"), ("P50 MS 2T", "p50Ms2T", "{:.3f}"),
           ("SPEEDUP 2T", "speedup2T", "{:.2f}x"), ("ACCURACY", "accuracy", "{:.2f}%"), ("DROP", "dropPoints", "{:+.2f}")]


def print_table(name: str, figures: dict) -> None:
    cells = [[header for header, _, _ in COLUMNS]]
    cells += [[fmt.format(row[key]) for _, key, fmt in COLUMNS] for row in figures["artifacts"]]
    widths = [max(len(cell) for cell in column) for column in zip(*cells)]
    print(f"\n== {name}: compress() wall {figures['compressWallSeconds']:.1f} s, {figures['evaluatedSamples']} "
          f"evaluation samples, {figures['runs']} timed runs; speed-up = onnx-fp32 p50 / artifact p50")
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    for failure in figures["failures"]:
        print(f"FAILED {failure['target']} ({failure['stage']}): {failure['message']}")


def check_targets(figures: dict) -> list[dict]:
    def check(model: str, name: str, what: str, key: str, fmt: str, ok) -> dict:
        row = next((r for r in figures[model]["artifacts"] if r["artifact"] == name), None)
        measured = fmt.format(row[key]) if row else "not built"
        return {"target": f"{model} {name}: {what}", "measured": measured, "passed": bool(row and ok(row[key]))}

    checks = [check(m, INT8, "size <= 0.27x onnx-fp32", "sizeRatio", "{:.3f}x", lambda v: v <= 0.27)
              for m in figures]
    checks.append(check("mobilenet", INT8, "onnxruntime p50 >= 1.5x faster than fp32 (1 thread)", "speedup",
                        "{:.2f}x", lambda v: v >= 1.5))
    for name in (INT8, *EDGE_ARTIFACTS):
        checks.append(check("digits", name, "accuracy drop <= 0.5 points", "dropPoints", "{:+.2f}",
                            lambda v: v <= 0.5))
    return checks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it (default: a temporary one)")
    args = parser.parse_args()
    progress = Progress()
    with tempfile.TemporaryDirectory(prefix="modelfleet-bench-") as tmp:
        workdir = args.keep or Path(tmp)
        figures = {name: benchmark(name, workdir, progress) for name in ("digits", "mobilenet")}
    for name, model_figures in figures.items():
        print_table(name, model_figures)
    print(f"\nNOTE: {MOBILENET_NOTE}")
    targets = check_targets(figures)
    print("\nTARGETS")
    for t in targets:
        print(f"{'PASS' if t['passed'] else 'FAIL'}  {t['target']}: {t['measured']}")
    print(f"digits pipeline wall time (compress call): {figures['digits']['compressWallSeconds']:.1f} s")
    if args.json:
        args.json.write_text(json.dumps({"models": figures, "targets": targets, "note": MOBILENET_NOTE}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
