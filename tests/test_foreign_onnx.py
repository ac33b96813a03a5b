"""Sources as users bring them: ONNX files exported at old opsets, and torch models ONNX cannot express."""

import json

import numpy as np
import onnx
import pytest
import torch

from conftest import export_digits_onnx

from modelfleet.api.compressedmodel import Source
from modelfleet.cli import main
from modelfleet.errors import UnsupportedModel
from modelfleet.pipeline import convert, source

pytestmark = pytest.mark.slow

ALL_PRECISIONS = ["fp32", "fp16", "int8-dynamic", "int8-static"]
# Every edge runtime and precision, one target each.
EDGE = {"edge": [{"name": "arm32", "runtime": "ncnn", "precision": "fp32"},
                 {"name": "arm16", "runtime": "ncnn", "precision": "fp16"},
                 {"name": "phones", "runtime": "tflite", "precision": "fp32"}]}
EDGE_ARTIFACTS = {"ncnn-fp32-arm32", "ncnn-fp16-arm16", "tflite-fp32-phones"}
# Not about speed: latency budgets a busy test machine cannot miss.
ANY_LATENCY = {"latencyP95Ms": {"onnxruntime": 1000, "ncnn": 1000, "tflite": 1000}}


def torch_accuracy(digits_data, module) -> float:
    evaluation = np.load(digits_data / "evaluation.npz")
    with torch.no_grad():
        predicted = module(torch.from_numpy(evaluation["inputs"])).argmax(1).numpy()
    return round(float(np.mean(predicted == evaluation["labels"]) * 100), 4)


@pytest.mark.parametrize("opset", [11, 13])
def test_old_opset_source_is_converted_and_builds_every_precision_and_edge_target(
        opset, digits_data, digits_manifest, onnx2tf, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(convert.ONNX2TF_ENV, onnx2tf)
    model = export_digits_onnx(digits_data, tmp_path / f"digits-opset{opset}.onnx", opset=opset)
    assert source.onnx_opset(onnx.load(str(model))) == opset
    manifest = digits_manifest({"compression": {"precisions": ALL_PRECISIONS}, "slo": ANY_LATENCY,
                                "source": {"uri": f"file://{model}", "format": "onnx"}, "targets": EDGE})
    code = main(["run", "-f", str(manifest), "-o", str(tmp_path / "out")])
    log = capsys.readouterr().err
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["failures"] == [] and code == 0

    assert f"source opset {opset} -> 17 (onnx version converter)" in log
    assert result["notes"] == [f"source opset {opset} -> 17 (onnx version converter)"]
    assert (result["source"]["opset"], result["baseline"]["opset"]) == (opset, 17)
    artifacts = {a["name"]: a for a in result["artifacts"]}
    assert set(artifacts) == {f"onnx-{p}" for p in ALL_PRECISIONS} | EDGE_ARTIFACTS
    for name in artifacts:  # per-channel QDQ (opset 13) included: every ONNX artifact is at opset 17
        if name.startswith("onnx-"):
            graph = onnx.load(str(tmp_path / "out" / name / "model.onnx"))
            assert source.onnx_opset(graph) == 17, name
    # The conversion changes no number: the baseline scores exactly what the torch model does.
    cnn = torch.jit.load(str(digits_data / "digits.torchscript.pt"))
    assert result["baseline"]["accuracy"] == torch_accuracy(digits_data, cnn) >= 95.0
    assert artifacts["onnx-int8-static"]["accuracyDropPoints"] <= 1.0


def test_source_above_the_opset_is_kept(digits_data, tmp_path):
    model = export_digits_onnx(digits_data, tmp_path / "digits-opset18.onnx", opset=18)
    spec = Source(uri=f"file://{model}", format="onnx", inputs=[{"name": "input", "shape": [-1, 1, 8, 8]}])
    loaded = source.load(spec, model)
    assert source.export_onnx(spec, loaded, tmp_path / "out.onnx", 17, tmp_path / "export.log") == 18
    assert source.onnx_opset(onnx.load(str(tmp_path / "out.onnx"))) == 18


class DigitsThroughFold(torch.nn.Module):
    """The trained digits CNN fed through unfold and fold (im2col, col2im), which give back the image exactly:
    torch's ONNX exporter has no col2im at opset 17, pnnx (ncnn's Fold) and litert-torch do."""

    def __init__(self, cnn):
        super().__init__()
        self.cnn = cnn

    def forward(self, x):
        patches = torch.nn.functional.unfold(x, 2, stride=2)
        return self.cnn(torch.nn.functional.fold(patches, (8, 8), 2, stride=2))


def test_torch_op_without_onnx_export_fails_onnx_and_triton_but_still_tries_the_edge_targets(
        digits_data, digits_manifest, tmp_path):
    cnn = torch.jit.load(str(digits_data / "digits.torchscript.pt"))
    model = tmp_path / "fold.pt"
    torch.jit.trace(DigitsThroughFold(cnn), torch.rand(2, 1, 8, 8)).save(str(model))
    manifest = digits_manifest({
        "compression": {"precisions": ["fp16", "int8-static"]}, "source": {"uri": f"file://{model}"}, "slo": ANY_LATENCY,
        "targets": {**EDGE, "triton": {"repository": f"file://{tmp_path / 'triton'}", "modelName": "digits"}},
    })
    assert main(["run", "-q", "-f", str(manifest), "-o", str(tmp_path / "out")]) == 10  # ONNX and Triton missed
    result = json.loads((tmp_path / "out" / "result.json").read_text())

    failures = {f["target"]: f for f in result["failures"]}
    onnx_targets = {"onnx-fp32", "onnx-fp16", "onnx-int8-static", "triton"}
    assert onnx_targets <= set(failures)
    for name in onnx_targets:
        assert (failures[name]["stage"], failures[name]["reason"]) == ("export", "ExportFailed")
        assert failures[name]["message"].startswith(
            "export to ONNX failed: Exporting the operator 'aten::col2im' to ONNX opset version 17 is not supported")
    # The source, run in torch, is the reference the edge artifacts are measured against.
    assert result["baseline"]["artifact"] == "source"
    assert result["baseline"]["accuracy"] == torch_accuracy(digits_data, cnn) >= 95.0
    artifacts = {a["name"]: a for a in result["artifacts"]}
    # pnnx read the TorchScript (ncnn's Fold). pnnx 20260526, the release of the ncnn runtime and int8 tools,
    # writes a Fold graph whose output has the wrong shape: the evaluation catches it and names it, and nothing
    # wrong ships (pnnx 20261020 converts it right, but needs ncnn 20261020: a later upgrade of all three).
    for name in ("ncnn-fp32-arm32", "ncnn-fp16-arm16"):
        if name in artifacts:
            assert artifacts[name]["accuracy"] == result["baseline"]["accuracy"], name
        else:
            assert (failures[name]["stage"], failures[name]["reason"]) == ("evaluate", "EvaluationFailed"), name
    # TFLite was tried from the torch module: litert-torch lowers fold to a scatter LiteRT cannot run yet.
    assert "tflite-fp32-phones" in artifacts or failures["tflite-fp32-phones"]["reason"] != "ExportFailed"
    assert not (tmp_path / "triton").exists()


def test_an_operator_the_version_converter_cannot_carry_stops_the_run_naming_it(digits_manifest, tmp_path, capsys):
    # Batch normalization in training mode (is_test=0), as early exporters wrote it at opset 6: opset 7 dropped
    # is_test, and onnx's converter refuses to guess.
    from onnx import TensorProto, helper

    stats = [helper.make_tensor(name, TensorProto.FLOAT, [1], [1.0]) for name in ("scale", "bias", "mean", "var")]
    graph = helper.make_graph(
        [helper.make_node("Relu", ["input"], ["relu"]),
         helper.make_node("BatchNormalization", ["relu", "scale", "bias", "mean", "var"], ["output"], is_test=0)],
        "old", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 1, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", 1, 8, 8])], stats)
    model = tmp_path / "opset6.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)]), str(model))
    manifest = digits_manifest({"source": {"uri": f"file://{model}", "format": "onnx"}, "targets": {"edge": []}})

    assert main(["run", "-q", "-f", str(manifest), "-o", str(tmp_path / "out")]) == UnsupportedModel.exit_code
    error = capsys.readouterr().err
    assert (f"file://{model}: the source's opset 6 cannot be converted to compression.opset 17: operator "
            "BatchNormalization failed to convert from opset 6 to 7: ") in error
    assert "Attribute is_test must not have value 0" in error and "[OpsetConversionFailed]" in error
    assert not (tmp_path / "out" / "result.json").exists()
