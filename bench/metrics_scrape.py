"""Scrape size of the operator's /metrics at many CompressedModels: series, bytes, scrape time over HTTP.

Fills a fresh `modelfleet.metrics.Metrics` with synthetic CompressedModels shaped like the digits example
with both edge targets on `precision: auto` (9 artifacts: onnx fp32, fp16, int8-dynamic, int8-static; ncnn
fp32, fp16, int8; TFLite fp32, int8; three targets chosen), each recorded the way a reconcile records it
(spec + result manifest, judged under the spec's SLOs), then serves it on a free local port and scrapes it
with urllib, as Prometheus would (plain and gzip). For comparison, it also times rendering the same
registry with prometheus_client's own `generate_latest`, which `/metrics` avoids (modelfleet.metrics).

Usage: python bench/metrics_scrape.py [--models 1000] [--scrapes 20]
"""

import argparse
import copy
import gzip
import random
import statistics
import sys
import time
import urllib.request
from pathlib import Path

import yaml
from prometheus_client import generate_latest

from modelfleet import metrics
from modelfleet.api.compressedmodel import CompressedModel
from modelfleet.api.result import ResultManifest

REPO = Path(__file__).resolve().parent.parent
VARIANTS = [  # (name, runtime, precision, target, role)
    ("onnx-fp32", "onnxruntime", "fp32", None, "baseline"),
    ("onnx-fp16", "onnxruntime", "fp16", None, "candidate"),
    ("onnx-int8-dynamic", "onnxruntime", "int8-dynamic", None, "candidate"),
    ("onnx-int8-static", "onnxruntime", "int8-static", None, "candidate"),
    ("ncnn-fp32-arm-boards", "ncnn", "fp32", "arm-boards", "candidate"),
    ("ncnn-fp16-arm-boards", "ncnn", "fp16", "arm-boards", "candidate"),
    ("ncnn-int8-arm-boards", "ncnn", "int8", "arm-boards", "candidate"),
    ("tflite-fp32-phones", "tflite", "fp32", "phones", "candidate"),
    ("tflite-int8-phones", "tflite", "int8", "phones", "candidate"),
]


def digits_spec():
    manifest = yaml.safe_load((REPO / "examples/digits/compressedmodel.yaml").read_text())
    spec = manifest["spec"]
    spec["source"]["uri"] = "pvc://data/digits/digits.torchscript.pt"
    spec["dataset"]["calibration"]["uri"] = "pvc://data/digits/calibration.npz"
    spec["dataset"]["evaluation"]["uri"] = "pvc://data/digits/evaluation.npz"
    spec["targets"]["edge"][1]["precision"] = "auto"  # phones: fp32 and int8, 9 artifacts in all
    return CompressedModel.model_validate(manifest).spec


def synthetic_result(rng: random.Random) -> ResultManifest:
    artifacts = []
    for name, runtime, precision, target, role in VARIANTS:
        drop = 0.0 if precision in ("fp32", "fp16") else round(rng.uniform(0, 0.5), 2)
        p95 = rng.uniform(0.02, 0.09)
        artifacts.append({
            "name": name, "runtime": runtime, "precision": precision, "target": target, "role": role,
            "files": [f"{name}/model"], "sha256": "a" * 64, "sizeBytes": rng.randint(40_000, 170_000),
            "accuracy": 99.63 - drop, "accuracyDropPoints": drop, "agreement": {"top1": 99.8, "maxAbsDiff": 0.01},
            "latency": {"p50Ms": p95 * 0.7, "p95Ms": p95, "runs": 200, "threads": 1, "batchSize": 1}})
    return ResultManifest.model_validate({
        "modelName": "digits", "source": {"uri": "pvc://x", "format": "torchscript", "sha256": "b" * 64},
        "baseline": {"artifact": "onnx-fp32", "accuracy": 99.63, "evaluatedSamples": 540},
        "artifacts": artifacts, "verdict": {"passed": True}, "durationSeconds": 60.0})


def scrape_figures(models: int = 1000, scrapes: int = 20, seed: int = 1) -> dict:
    rng = random.Random(seed)
    spec, m = digits_spec(), metrics.Metrics()
    results = [synthetic_result(rng) for _ in range(models)]
    started = time.perf_counter()
    for i, result in enumerate(results):
        m.record_model(f"team-{i % 20}", f"model-{i}", spec, result, "True")
    record_ms = (time.perf_counter() - started) * 1000 / models
    started = time.perf_counter()
    generate_latest(m.registry)
    registry_ms = (time.perf_counter() - started) * 1000
    server = metrics.serve(0, "127.0.0.1", m)
    url = f"http://127.0.0.1:{server.server_port}/metrics"
    try:
        times, zipped_times = [], []
        for _ in range(scrapes):
            started = time.perf_counter()
            with urllib.request.urlopen(url, timeout=60) as response:
                body = response.read()
            times.append(time.perf_counter() - started)
            request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
            started = time.perf_counter()
            with urllib.request.urlopen(request, timeout=60) as response:
                zipped = response.read()
            zipped_times.append(time.perf_counter() - started)
    finally:
        server.shutdown()
        server.server_close()
    text = body.decode()
    series = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
    return {"models": models, "artifacts_per_model": len(VARIANTS), "series": series,
            "series_per_model": round(series / models, 1), "bytes": len(body), "gzip_bytes": len(zipped),
            "gzip_ok": gzip.decompress(zipped) == body, "scrape_ms_median": round(statistics.median(times) * 1000, 1),
            "scrape_ms_max": round(max(times) * 1000, 1),
            "gzip_scrape_ms_median": round(statistics.median(zipped_times) * 1000, 1),
            "record_ms_per_model": round(record_ms, 3), "generate_latest_ms": round(registry_ms, 1),
            "scrapes": scrapes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--scrapes", type=int, default=20)
    args = parser.parse_args(argv)
    figures = scrape_figures(args.models, args.scrapes)
    width = max(map(len, figures))
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
