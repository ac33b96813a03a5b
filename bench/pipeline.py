"""End-to-end benchmark of the compression pipeline and its per-target choice, on three models.

  digits      the example CNN, trained on scikit-learn's real digits (examples/digits/train.py)
  paddle-cls  a real pretrained CNN from another framework: PaddleOCR's text-direction classifier
              (paddle2onnx, ONNX opset 11; its weights ship in the rapidocr-onnxruntime wheel), on
              rendered real text (examples/paddle-ocr-cls/prepare.py): its accuracy is real
  mobilenet   a MobileNetV2-class network (bench/mobilenet.py) with RANDOM weights, for size and speed
              at 224x224: its evaluation labels are the fp32 torch model's own top-1 on random images,
              so its accuracy only says how often an artifact agrees with fp32 torch

Each model goes through one `compress()` call with every target on `precision: auto`: Triton
(onnx fp32, fp16, int8-dynamic, int8-static), ncnn (fp32, fp16, int8) and TFLite (fp32, int8). Latency is
measured by the pipeline at 1 thread. Prints, per model and target, every candidate with its size ratio
to the target's fp32, p95, speed-up versus fp32, accuracy drop, and the choice with why the others lost;
then PASS/FAIL lines for the targets. Exits 0 whether or not targets are met.

Real pretrained models with their real task metrics (each its example's manifest, metric fidelity, the SLO
cosine >= 0.99; ONNX targets unless --edge):
  paddle-det  PaddleOCR's DB text detector on rendered pages (task metric: line hmean at IoU 0.5)
  paddle-rec  PaddleOCR's SVTR text recognizer on rendered lines (task metric: exact text match)
  silero-vad  Silero VAD, three inputs (audio, int64 0-d sample rate, state) and two outputs, on espeak-ng
              speech (task metric: per-chunk speech accuracy, the state fed back)
For these it prints, per target, every candidate's size ratio, median, speed-up with its 95% interval, cosine
and task metric (ONNX artifacts, through the example's task_metric.py) with its drop from fp32, and the issue's
target: some int8 or mixed artifact within 1 point of task metric (or cosine >= 0.99) at <= 0.5x the size, or
the layer-by-layer reason none is.

Usage: python bench/pipeline.py [--json PATH] [--keep DIR] [--edge]
                                [--models digits,paddle-cls,mobilenet,paddle-det,paddle-rec,silero-vad]
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
from modelfleet.api.result import ResultManifest
from modelfleet.pipeline.run import compress
from modelfleet.progress import Progress
from mobilenet import mobilenet_v2, smooth_images

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "paddle-ocr-cls"))
import prepare as paddle_cls  # noqa: E402  (the example's own data preparation)

MODELS = ("digits", "paddle-cls", "mobilenet")
REAL = {"paddle-det": "paddle-ocr-det", "paddle-rec": "paddle-ocr-rec", "silero-vad": "silero-vad"}
TASK_DROP, SIZE_RATIO = 1.0, 0.5  # the target for the real models
EDGE = [("boxes", "ncnn"), ("phones", "tflite")]
CHOICE_MARGIN = 0.05  # the choice may be at most this much slower than the fastest SLO-meeting candidate
MOBILENET_NOTE = ("mobilenet accuracy = agreement with the fp32 torch model's top-1 on random images "
                  "(random weights): NOT a meaningful accuracy")


def prepare_digits(directory: Path) -> dict:
    subprocess.run([sys.executable, "-W", "ignore", str(ROOT / "examples/digits/train.py"), "--out", str(directory)],
                   check=True, stdout=subprocess.DEVNULL)
    return {"source": "digits.torchscript.pt", "format": "torchscript", "input": "input", "shape": [-1, 1, 8, 8],
            "calibrationSamples": 256, "warmupRuns": 50, "runs": 500}


def prepare_paddle_cls(directory: Path) -> dict:
    paddle_cls.prepare(directory, evaluation=600, calibration=128)
    return {"source": "cls.onnx", "format": "onnx", "input": "x", "shape": [-1, 3, 48, 192],
            "calibrationSamples": 128, "warmupRuns": 30, "runs": 300}


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
    return {"source": "mobilenet.torchscript.pt", "format": "torchscript", "input": "input",
            "shape": [-1, 3, 224, 224], "calibrationSamples": 64, "warmupRuns": 20, "runs": 100}


PREPARE = {"digits": prepare_digits, "paddle-cls": prepare_paddle_cls, "mobilenet": prepare_mobilenet}


def resource(name: str, case: dict, workdir: Path) -> CompressedModel:
    return CompressedModel.model_validate({
        "apiVersion": "modelfleet.io/v1alpha1",
        "kind": "CompressedModel",
        "metadata": {"name": name},
        "spec": {
            "source": {"uri": f"file://{case['source']}", "format": case["format"],
                       "inputs": [{"name": case["input"], "shape": case["shape"]}]},
            "dataset": {"calibration": {"uri": "file://calibration.npz"},
                        "evaluation": {"uri": "file://evaluation.npz"}},
            "compression": {"precisions": ["fp16", "int8-dynamic", "int8-static"],
                            "calibrationSamples": case["calibrationSamples"]},
            "targets": {"triton": {"repository": f"file://{workdir / 'triton-models'}", "modelName": name},
                        "edge": [{"name": n, "runtime": r} for n, r in EDGE]},
            "slo": {"maxAccuracyDropPoints": 1.0},
            "benchmark": {"threads": 1, "warmupRuns": case["warmupRuns"], "runs": case["runs"]},
        },
    })


def benchmark(name: str, workdir: Path, progress: Progress) -> dict:
    data = workdir / name
    case = PREPARE[name](data)
    output = workdir / f"{name}-out"
    started = time.monotonic()
    result: ResultManifest = compress(resource(name, case, workdir), output, data, progress)
    wall = time.monotonic() - started
    artifacts = {a.name: a for a in result.artifacts}
    targets = []
    for choice in result.choices:
        names = [n for n in [choice.chosen, *(lost.artifact for lost in choice.losers)] if n in artifacts]
        built = sorted((artifacts[n] for n in names), key=lambda a: a.latency.p95_ms)
        fp32 = next((a for a in built if a.precision == "fp32"), None)
        reasons = {lost.artifact: lost.reason for lost in choice.losers}
        rows = [{
            "artifact": a.name, "precision": a.precision, "sizeBytes": a.size_bytes,
            "sizeRatio": a.size_bytes / fp32.size_bytes if fp32 else None, "p95Ms": a.latency.p95_ms,
            "speedup": a.speedup_vs_fp32, "slower": a.slower_than_fp32, "accuracy": a.accuracy,
            "dropPoints": a.accuracy_drop_points, "chosen": a.name == choice.chosen,
            "lostBecause": reasons.get(a.name), "meetsSlo": a.name == choice.chosen or _meets_slo(reasons.get(a.name)),
        } for a in built]
        failed = {n: why for n, why in reasons.items() if n not in artifacts}
        targets.append({"target": choice.target, "runtime": choice.runtime, "chosen": choice.chosen,
                        "candidates": rows, "failed": failed})
    return {"compressWallSeconds": wall, "runs": case["runs"], "baselineAccuracy": result.baseline.accuracy,
            "evaluatedSamples": result.baseline.evaluated_samples, "targets": targets, "notes": result.notes,
            "failures": [f.model_dump(by_alias=True, exclude_none=True) for f in result.failures]}


def _meets_slo(lost_because: str | None) -> bool:
    """A candidate that lost only on speed or size met the SLOs; one that lost on an SLO names it."""
    return lost_because is not None and lost_because.startswith(("p95 ", "larger than", "slower than fp32"))


COLUMNS = [("CANDIDATE", "artifact", "{}"), ("SIZE B", "sizeBytes", "{:,}"), ("/FP32", "sizeRatio", "{:.3f}x"),
           ("P95 MS", "p95Ms", "{:.3f}"), ("VS FP32", "speedup", "{:.2f}x"), ("ACCURACY", "accuracy", "{:.2f}%"),
           ("DROP", "dropPoints", "{:+.2f}")]


def print_tables(name: str, figures: dict) -> None:
    accuracy = f"{figures['baselineAccuracy']:.2f}%" if figures["baselineAccuracy"] is not None else "-"
    print(f"\n== {name}: compress() wall {figures['compressWallSeconds']:.1f} s, fp32 accuracy {accuracy} on "
          f"{figures['evaluatedSamples']} samples, {figures['runs']} timed runs at 1 thread")
    for target in figures["targets"]:
        print(f"-- {target['target']} ({target['runtime']}): chose {target['chosen'] or 'NOTHING'}")
        cells = [[header for header, _, _ in COLUMNS] + ["CHOICE"]]
        for row in target["candidates"]:
            cells.append([fmt.format(row[key]) if row[key] is not None else "-" for _, key, fmt in COLUMNS]
                         + ["CHOSEN" if row["chosen"] else f"lost: {row['lostBecause']}"])
        widths = [max(len(cell) for cell in column) for column in zip(*cells)]
        for row in cells:
            print("   " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        for artifact, why in target["failed"].items():
            print(f"   {artifact}: {why}")
    for note in figures["notes"]:
        print(f"   note: {note}")


def check_targets(figures: dict) -> list[dict]:
    checks = []

    def add(target: str, measured: str, passed: bool) -> None:
        checks.append({"target": target, "measured": measured, "passed": passed})

    def candidate(model: str, artifact: str) -> dict | None:
        return next((row for t in figures.get(model, {}).get("targets", []) for row in t["candidates"]
                     if row["artifact"] == artifact), None)

    if "mobilenet" in figures:
        row = candidate("mobilenet", "tflite-int8-phones")
        add("mobilenet tflite-int8: size <= 0.30x tflite-fp32", f"{row['sizeRatio']:.3f}x" if row else "not built",
            bool(row and row["sizeRatio"] <= 0.30))
        row = candidate("mobilenet", "onnx-int8-static")
        add("mobilenet onnx-int8-static: size <= 0.27x onnx-fp32", f"{row['sizeRatio']:.3f}x" if row else "not built",
            bool(row and row["sizeRatio"] <= 0.27))
    for model, model_figures in figures.items():
        for target in model_figures["targets"]:
            qualifying = [row for row in target["candidates"] if row["meetsSlo"]]
            chosen = next((row for row in target["candidates"] if row["chosen"]), None)
            if not qualifying or chosen is None:
                add(f"{model} {target['target']}: a choice", "nothing qualifies", False)
                continue
            fastest = min(row["p95Ms"] for row in qualifying)
            ratio = chosen["p95Ms"] / fastest
            add(f"{model} {target['target']}: choice p95 <= {1 + CHOICE_MARGIN:.2f}x the fastest SLO-meeting "
                f"candidate", f"{chosen['artifact']} {ratio:.3f}x", ratio <= 1 + CHOICE_MARGIN)
        if model != "mobilenet":  # real accuracy: every edge int8 artifact keeps it within the SLO
            for artifact in ("ncnn-int8-boxes", "tflite-int8-phones", "onnx-int8-static"):
                row = candidate(model, artifact)
                add(f"{model} {artifact}: accuracy drop <= 1 point",
                    f"{row['dropPoints']:+.2f}" if row else "not built", bool(row and row["dropPoints"] <= 1.0))
    return checks


def example_module(directory: str, name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{directory.replace('-', '_')}_{name}",
                                                  ROOT / "examples" / directory / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def benchmark_real(name: str, workdir: Path, progress: Progress, edge: bool) -> dict:
    """One real model through its example's manifest, and the task metric of every ONNX artifact."""
    import yaml

    directory = REAL[name]
    data = example_module(directory, "prepare").prepare(workdir / name)
    manifest = yaml.safe_load((ROOT / "examples" / directory / "compressedmodel.yaml").read_text())
    spec = manifest["spec"]
    spec["source"]["uri"] = f"file://{data / Path(spec['source']['uri']).name}"
    for kind in ("calibration", "evaluation"):
        spec["dataset"][kind]["uri"] = f"file://{data / f'{kind}.npz'}"
    spec["targets"]["triton"]["repository"] = f"file://{workdir / 'triton-models'}"
    if not edge:
        spec["targets"]["edge"] = []
    output = workdir / f"{name}-out"
    started = time.monotonic()
    result = compress(CompressedModel.model_validate(manifest), output, data, progress)
    wall = time.monotonic() - started
    metric = example_module(directory, "task_metric")
    artifacts = {a.name: a for a in result.artifacts}
    task = {a.name: metric.task_metric(output / a.files[0], data) for a in result.artifacts
            if a.runtime == "onnxruntime"}
    targets = []
    for choice in result.choices:
        names = [n for n in [choice.chosen, *(lost.artifact for lost in choice.losers)] if n in artifacts]
        built = [artifacts[n] for n in names]
        fp32 = next((a for a in built if a.precision == "fp32"), None)
        rows = [{"artifact": a.name, "precision": a.precision, "sizeBytes": a.size_bytes,
                 "sizeRatio": a.size_bytes / fp32.size_bytes if fp32 else None, "medianMs": a.latency.p50_ms,
                 "speedup": a.speedup_vs_fp32, "interval": a.speedup_interval, "cosine": a.fidelity.cosine,
                 "task": task.get(a.name), "taskDrop": (task[fp32.name] - task[a.name]) if fp32 and a.name in task
                 and fp32.name in task else None, "chosen": a.name == choice.chosen,
                 "floatNodes": len(a.mixed_precision.float_nodes) if a.mixed_precision else None}
                for a in sorted(built, key=lambda a: a.latency.p50_ms)]
        targets.append({"target": choice.target, "runtime": choice.runtime, "chosen": choice.chosen, "rows": rows,
                        "losers": {lost.artifact: lost.reason for lost in choice.losers}})
    return {"compressWallSeconds": wall, "modelBytes": (data / Path(spec["source"]["uri"]).name).stat().st_size,
            "targets": targets, "failures": [f.model_dump(by_alias=True, exclude_none=True) for f in result.failures]}


REAL_COLUMNS = [("CANDIDATE", "artifact", "{}"), ("/FP32", "sizeRatio", "{:.3f}x"), ("MEDIAN MS", "medianMs", "{:.3f}"),
                ("VS FP32", "speedup", "{:.2f}x"), ("COSINE", "cosine", "{:.4f}"), ("TASK", "task", "{:.2f}"),
                ("TASK DROP", "taskDrop", "{:+.2f}")]


def print_real(name: str, figures: dict) -> list[dict]:
    print(f"\n== {name}: compress() wall {figures['compressWallSeconds']:.1f} s, model "
          f"{figures['modelBytes'] / 2**20:.1f} MiB")
    checks = []
    for target in figures["targets"]:
        print(f"-- {target['target']} ({target['runtime']}): chose {target['chosen'] or 'NOTHING'}")
        cells = [[header for header, _, _ in REAL_COLUMNS] + ["INTERVAL", "CHOICE"]]
        for row in target["rows"]:
            cells.append([fmt.format(row[key]) if row[key] is not None else "-" for _, key, fmt in REAL_COLUMNS]
                         + [f"[{row['interval'][0]:.2f}, {row['interval'][1]:.2f}]" if row["interval"] else "-",
                            "CHOSEN" if row["chosen"] else f"lost: {target['losers'].get(row['artifact'])}"])
        widths = [max(len(cell) for cell in column) for column in zip(*cells)]
        for row in cells:
            print("   " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        small = [row for row in target["rows"] if row["precision"].startswith("int8") and row["sizeRatio"] is not None
                 and row["sizeRatio"] <= SIZE_RATIO
                 and ((row["taskDrop"] is not None and row["taskDrop"] <= TASK_DROP) or row["cosine"] >= 0.99)]
        best = min(small, key=lambda row: row["sizeRatio"], default=None)
        checks.append({"target": f"{name} {target['target']}: an int8 or mixed artifact within {TASK_DROP:g} point "
                                 f"of task metric (or cosine >= 0.99) at <= {SIZE_RATIO}x the size",
                       "measured": (f"{best['artifact']} {best['sizeRatio']:.2f}x, task drop "
                                    f"{best['taskDrop'] if best['taskDrop'] is not None else float('nan'):+.2f}, "
                                    f"cosine {best['cosine']:.4f}") if best else "none",
                       "passed": best is not None})
    for failure in figures["failures"]:
        print(f"   failed: {failure['target']} ({failure['reason']}): {failure['message'][:400]}")
    return checks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it (default: a temporary one)")
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"comma-separated subset of {', '.join([*MODELS, *REAL])}")
    parser.add_argument("--edge", action="store_true", help="the real models' edge targets too (ncnn, TFLite)")
    args = parser.parse_args()
    models = [m for m in args.models.split(",") if m]
    unknown = set(models) - set(MODELS) - set(REAL)
    if unknown:
        parser.error(f"unknown model(s) {', '.join(sorted(unknown))}; known: {', '.join([*MODELS, *REAL])}")
    progress = Progress()
    with tempfile.TemporaryDirectory(prefix="modelfleet-bench-") as tmp:
        workdir = args.keep or Path(tmp)
        figures = {name: benchmark(name, workdir, progress) for name in models if name in MODELS}
        real = {name: benchmark_real(name, workdir, progress, args.edge) for name in models if name in REAL}
    for name, model_figures in figures.items():
        print_tables(name, model_figures)
    if "mobilenet" in figures:
        print(f"\nNOTE: {MOBILENET_NOTE}")
    targets = check_targets(figures)
    for name, model_figures in real.items():
        targets += print_real(name, model_figures)
    print("\nTARGETS")
    for t in targets:
        print(f"{'PASS' if t['passed'] else 'FAIL'}  {t['target']}: {t['measured']}")
    if args.json:
        args.json.write_text(json.dumps({"models": figures, "real": real, "targets": targets, "note": MOBILENET_NOTE},
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
