"""Metric fidelity end to end: a denoiser (not a classifier, outputs of dynamic spatial size) trained on
scikit-learn's digits, judged without labels against its own fp32 outputs, in every runtime."""

import json

import pytest
import yaml

from modelfleet.api.compressedmodel import SLO
from modelfleet.api.result import ResultManifest
from modelfleet.cli import main
from modelfleet.gate import evaluate_slo
from modelfleet.pipeline import convert

pytestmark = pytest.mark.slow


def denoiser_manifest(directory, changes: dict) -> dict:
    spec = {
        "source": {"uri": f"file://{directory / 'denoiser.onnx'}", "format": "onnx",
                   "inputs": [{"name": "noisy", "shape": [-1, 1, 8, 8]}]},
        "dataset": {"calibration": {"uri": f"file://{directory / 'calibration.npz'}"},
                    "evaluation": {"uri": f"file://{directory / 'evaluation.npz'}"}, "metric": "fidelity"},
        "compression": {"precisions": ["fp16", "int8-static"], "calibrationSamples": 256},
        # Bounds with a measured margin: int8-static lands at 19 to 22 dB SNR and cosine >= 0.995 on the machines
        # seen so far, fp16 far above. What gates is tested against bounds that must fail (below), not these.
        "slo": {"minFidelityCosine": 0.98, "minFidelitySnrDb": 10.0},
        "benchmark": {"threads": 1, "warmupRuns": 2, "runs": 10},
        **changes,
    }
    return {"apiVersion": "modelfleet.io/v1alpha1", "kind": "CompressedModel", "metadata": {"name": "denoiser"},
            "spec": spec}


@pytest.fixture(scope="module")
def denoiser_run(digits_denoiser, onnx2tf, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("denoiser-run")
    manifest = denoiser_manifest(digits_denoiser, {"targets": {"edge": [
        {"name": "arm32", "runtime": "ncnn", "precision": "fp32"}, {"name": "arm16", "runtime": "ncnn", "precision": "fp16"},
        {"name": "phones", "runtime": "tflite", "precision": "fp32"}]}})
    (workdir / "m.yaml").write_text(yaml.safe_dump(manifest))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(convert.ONNX2TF_ENV, onnx2tf)
        code = main(["run", "-q", "-f", str(workdir / "m.yaml"), "-o", str(workdir / "out")])
    return code, json.loads((workdir / "out" / "result.json").read_text())


def test_unlabelled_denoiser_is_gated_on_fidelity_in_every_runtime(denoiser_run):
    code, result = denoiser_run
    assert result["failures"] == [] and code == 0
    assert result["baseline"]["metric"] == "fidelity" and "accuracy" not in result["baseline"]
    artifacts = {a["name"]: a for a in result["artifacts"]}
    assert set(artifacts) == {"onnx-fp32", "onnx-fp16", "onnx-int8-static", "ncnn-fp32-arm32", "ncnn-fp16-arm16",
                              "tflite-fp32-phones"}
    for name, a in artifacts.items():
        assert "accuracy" not in a and "accuracyDropPoints" not in a, name
        assert a["fidelity"]["minCosine"] <= a["fidelity"]["cosine"], name
        assert 0 <= a["fidelity"]["minSnrSample"] < result["baseline"]["evaluatedSamples"] == 540
    # The baseline is its own reference; fp32 in other runtimes follows it to float rounding; quantizing
    # costs measurable fidelity, int8 more than fp16.
    assert artifacts["onnx-fp32"]["fidelity"]["snrDb"] == 200.0
    for name in ("onnx-fp16", "onnx-int8-static", "ncnn-fp16-arm16"):
        assert artifacts[name]["fidelity"]["cosine"] >= 0.995, artifacts[name]["fidelity"]
    for name in ("ncnn-fp32-arm32", "tflite-fp32-phones"):
        assert artifacts[name]["fidelity"]["snrDb"] > 80.0, artifacts[name]["fidelity"]
    assert 10.0 < artifacts["onnx-int8-static"]["fidelity"]["snrDb"] < artifacts["onnx-fp16"]["fidelity"]["snrDb"]
    # Outputs keep the dynamic spatial size of the fully convolutional graph.
    assert artifacts["onnx-fp32"]["signature"]["outputs"][0]["shape"] == [-1, 1, -1, -1]


def test_symbolic_shape_inference_failure_falls_back_and_says_so(denoiser_run):
    # Pooling then upsampling a dynamic height gives 2*floor(h/2), which symbolic shape inference cannot add
    # to h: onnxruntime's pre-processing fails on the graph, and the plain one is used.
    _, result = denoiser_run
    notes = next(a for a in result["artifacts"] if a["name"] == "onnx-int8-static")["notes"]
    assert "quantization pre-processing without symbolic shape inference, which failed: Exception: Incomplete " \
           "symbolic shape inference" in notes


def test_fidelity_bounds_decide_the_gate(denoiser_run):
    _, result = denoiser_run
    manifest = ResultManifest.model_validate(result)
    strict = SLO.model_validate({"minFidelitySnrDb": 150.0})  # only fp32 outputs come this close
    verdict = evaluate_slo(manifest.artifacts, manifest.failures, strict, manifest.baseline.metric)
    missed = {v.artifact for v in verdict.violations}
    assert {"onnx-fp16", "onnx-int8-static"} <= missed
    assert {v.slo for v in verdict.violations} == {"fidelitySnr"}
