"""int8 for the edge: TFLite full-integer (ai-edge-quantizer) and ncnn int8 (ncnn2table + ncnn2int8), from torch
and ONNX sources, on the real digits model and data, measured in their own runtimes."""

import json
import subprocess

import numpy as np
import pytest

from modelfleet.cli import main
from modelfleet.errors import UnsupportedModel
from modelfleet.pipeline import convert
from conftest import REPO, export_digits_onnx

pytestmark = pytest.mark.slow

EDGE_AUTO = {"compression": {"precisions": ["int8-static"]},
             "targets": {"edge": [{"name": "boards", "runtime": "ncnn"}, {"name": "phones", "runtime": "tflite"}]}}
MAX_DROP_POINTS = 3.0
# Weights alone shrink 4x; on a CNN this small (40 k parameters) the file keeps ~12 KiB of tensor names and
# per-channel scales and zero points, so digits measures 0.315x where a MobileNetV2-class model gets < 0.30x.
MAX_TFLITE_INT8_SIZE_RATIO = 0.33


def run_edge(manifest, out) -> dict:
    main(["run", "-q", "-f", str(manifest), "-o", str(out)])
    return json.loads((out / "result.json").read_text())


def check_int8_artifacts(result: dict, out) -> None:
    assert result["failures"] == []
    artifacts = {a["name"]: a for a in result["artifacts"]}
    assert {"ncnn-fp32-boards", "ncnn-int8-boards", "tflite-fp32-phones", "tflite-int8-phones"} <= set(artifacts)
    for name in ("ncnn-int8-boards", "tflite-int8-phones"):
        assert artifacts[name]["precision"] == "int8"
        assert artifacts[name]["accuracyDropPoints"] <= MAX_DROP_POINTS, name
        assert artifacts[name]["agreement"]["top1"] >= 95.0, name
    int8, fp32 = artifacts["tflite-int8-phones"], artifacts["tflite-fp32-phones"]
    assert int8["sizeBytes"] <= MAX_TFLITE_INT8_SIZE_RATIO * fp32["sizeBytes"]

    # Really int8: TFLite weights and activations are int8 tensors, every ncnn convolution and inner product
    # carries int8 scales (parameter 8, int8_scale_term).
    from ai_edge_litert.interpreter import Interpreter

    tensors = Interpreter(model_path=str(out / "tflite-int8-phones" / "model.tflite")).get_tensor_details()
    assert sum(t["dtype"] == np.int8 for t in tensors) > sum(t["dtype"] == np.float32 for t in tensors)
    layers = [line.split() for line in (out / "ncnn-int8-boards" / "model.ncnn.param").read_text().splitlines()[2:]]
    quantizable = [fields for fields in layers if fields[0] in ("Convolution", "InnerProduct")]
    assert quantizable and all(any(f.startswith("8=") and f != "8=0" for f in fields) for fields in quantizable)

    # int8 is one more candidate of precision auto: chosen, or listed with why it lost.
    choices = {c["target"]: c for c in result["choices"]}
    for target, name in (("boards", "ncnn-int8-boards"), ("phones", "tflite-int8-phones")):
        assert name == choices[target]["chosen"] or name in {lost["artifact"] for lost in choices[target]["losers"]}


def test_torch_source_builds_tflite_and_ncnn_int8(digits_manifest, ncnn_tools, monkeypatch, tmp_path):
    monkeypatch.setenv(convert.NCNN_TOOLS_ENV, ncnn_tools)
    check_int8_artifacts(run_edge(digits_manifest(EDGE_AUTO), tmp_path / "out"), tmp_path / "out")


def test_onnx_source_builds_tflite_and_ncnn_int8(digits_data, digits_manifest, ncnn_tools, onnx2tf, monkeypatch,
                                                 tmp_path):
    monkeypatch.setenv(convert.NCNN_TOOLS_ENV, ncnn_tools)
    monkeypatch.setenv(convert.ONNX2TF_ENV, onnx2tf)
    source = export_digits_onnx(digits_data, tmp_path / "digits.onnx")
    manifest = digits_manifest({**EDGE_AUTO, "source": {"uri": f"file://{source}", "format": "onnx"}})
    check_int8_artifacts(run_edge(manifest, tmp_path / "out"), tmp_path / "out")


def test_blank_calibration_fails_ncnn_int8_naming_the_layer(digits_data, digits_manifest, ncnn_tools, monkeypatch,
                                                            tmp_path):
    """Calibration samples that are all zero leave ncnn2table without a range for the first convolution: the
    int8 target fails with that reason instead of shipping infinite scales; fp32 still ships."""
    monkeypatch.setenv(convert.NCNN_TOOLS_ENV, ncnn_tools)
    blank = tmp_path / "blank.npz"
    np.savez(blank, inputs=np.zeros((64, 1, 8, 8), np.float32))
    manifest = digits_manifest({
        "compression": {"precisions": ["fp16"]},
        "dataset": {"calibration": {"uri": f"file://{blank}"}},
        "targets": {"edge": [{"name": "boards", "runtime": "ncnn"}]},
    })
    result = run_edge(manifest, tmp_path / "out")
    (failure,) = [f for f in result["failures"] if f["target"] == "ncnn-int8-boards"]
    assert failure["reason"] == "CalibrationFailed"
    assert "input is zero on every calibration sample" in failure["message"] and "layer conv" in failure["message"]
    assert {"ncnn-fp32-boards", "ncnn-fp16-boards"} <= {a["name"] for a in result["artifacts"]}


def test_ncnn_int8_without_the_tools_says_how_to_build_them(monkeypatch, tmp_path):
    monkeypatch.delenv(convert.NCNN_TOOLS_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # nothing in the default place
    calibration = np.zeros((1, 1, 8, 8), np.float32)
    with pytest.raises(UnsupportedModel) as raised:
        convert.to_ncnn_int8(tmp_path / "m.param", tmp_path / "m.bin", calibration, tmp_path / "work")
    assert raised.value.reason == "ConverterUnavailable"
    message = str(raised.value)
    assert f".cache/modelfleet/ncnn-tools-{convert.NCNN_TOOLS_RELEASE}/bin" in message
    assert "bash hack/ncnn-tools.sh" in message and convert.NCNN_TOOLS_ENV in message
    release = next(line for line in (REPO / "hack" / "ncnn-tools.sh").read_text().splitlines()
                   if line.startswith("release="))
    assert release == f"release={convert.NCNN_TOOLS_RELEASE}"  # the script builds what the worker looks for


def test_pnnx_ncnn_and_the_int8_tools_are_one_release():
    """A pnnx newer than the ncnn runtime writes Reshape expressions (`//(8,0n)`) that this ncnn cannot load."""
    from importlib.metadata import version

    assert version("pnnx") == convert.NCNN_TOOLS_RELEASE
    assert version("ncnn") == f"1.0.{convert.NCNN_TOOLS_RELEASE}"
