"""Source formats and partial failures, on the real digits model and data."""

import json

import pytest
import torch

from modelfleet.cli import main

pytestmark = pytest.mark.slow

ONNX_ONLY = {"compression": {"precisions": ["int8-static"]}, "targets": {"edge": []}}


def result_of(out) -> dict:
    return json.loads((out / "result.json").read_text())


def test_exported_program_source_matches_torchscript(digits_data, digits_manifest, tmp_path):
    runs = {}
    for fmt, file in (("torchscript", "digits.torchscript.pt"), ("exported-program", "digits.pt2")):
        manifest = digits_manifest({**ONNX_ONLY, "source": {"uri": f"file://{digits_data / file}", "format": fmt}},
                                   name=f"{fmt}.yaml")
        assert main(["run", "-q", "-f", str(manifest), "-o", str(tmp_path / fmt)]) == 0
        runs[fmt] = result_of(tmp_path / fmt)
    assert runs["exported-program"]["baseline"]["accuracy"] == runs["torchscript"]["baseline"]["accuracy"] >= 95.0


def test_onnx_source_passes_through_and_tflite_from_onnx_is_reported_not_fatal(digits_data, digits_manifest, tmp_path):
    onnx_model = tmp_path / "digits.onnx"
    module = torch.jit.load(str(digits_data / "digits.torchscript.pt"))
    torch.onnx.export(module, (torch.zeros(2, 1, 8, 8),), str(onnx_model), input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}},
                      opset_version=17, dynamo=False)
    manifest = digits_manifest({
        "compression": {"precisions": ["int8-static"]},
        "source": {"uri": f"file://{onnx_model}", "format": "onnx"},
        "targets": {"edge": [{"name": "boards", "runtime": "ncnn", "precision": "fp32"},
                             {"name": "phones", "runtime": "tflite"}]},
    })
    # The tflite target cannot be built from ONNX here, so the gate fails: exit code 10, SLO missed.
    assert main(["run", "-q", "-f", str(manifest), "-o", str(tmp_path / "out")]) == 10
    result = result_of(tmp_path / "out")
    assert {a["name"] for a in result["artifacts"]} == {"onnx-fp32", "onnx-int8-static", "ncnn-fp32-boards"}
    (failure,) = result["failures"]
    assert (failure["target"], failure["reason"]) == ("tflite/phones", "ConverterUnavailable")
    ncnn = next(a for a in result["artifacts"] if a["runtime"] == "ncnn")
    assert ncnn["agreement"]["maxAbsDiff"] < 1e-3  # fp32 ncnn reproduces the fp32 ONNX outputs
    assert result["baseline"]["accuracy"] >= 95.0


class DigitsWithDeterminant(torch.nn.Module):
    """The trained digits CNN plus a tiny determinant term: ncnn has no Det layer."""

    def __init__(self, cnn):
        super().__init__()
        self.cnn = cnn

    def forward(self, x):
        return self.cnn(x) + 1e-6 * torch.linalg.det(x[:, 0, :2, :2]).unsqueeze(1)


def test_operator_ncnn_cannot_express_fails_only_that_target(digits_data, digits_manifest, tmp_path):
    cnn = torch.jit.load(str(digits_data / "digits.torchscript.pt"))
    model = tmp_path / "det.pt"
    torch.jit.trace(DigitsWithDeterminant(cnn), torch.rand(2, 1, 8, 8)).save(str(model))
    manifest = digits_manifest({
        "compression": {"precisions": ["int8-static"]},
        "source": {"uri": f"file://{model}"},
        "targets": {"edge": [{"name": "boards", "runtime": "ncnn", "precision": "fp16"}]},
    })
    assert main(["run", "-q", "-f", str(manifest), "-o", str(tmp_path / "out")]) == 10
    result = result_of(tmp_path / "out")
    (failure,) = result["failures"]
    assert failure["reason"] == "UnsupportedOperator" and failure["operator"] == "Det"
    assert "ncnn cannot express operator(s) Det" in failure["message"]
    assert {a["name"] for a in result["artifacts"]} == {"onnx-fp32", "onnx-int8-static"}
    assert [v["slo"] for v in result["verdict"]["violations"]] == ["target"]


def test_int8_dynamic_on_a_model_without_matmul_is_reported(digits_manifest, tmp_path):
    # Unlike the digits CNN, a conv-only model has nothing int8-dynamic may quantize.
    model = tmp_path / "conv.pt"
    conv = torch.nn.Sequential(torch.nn.Conv2d(1, 10, 8), torch.nn.Flatten()).eval()
    torch.jit.trace(conv, torch.rand(2, 1, 8, 8)).save(str(model))
    manifest = digits_manifest({"compression": {"precisions": ["int8-dynamic"]}, "targets": {"edge": []},
                                "source": {"uri": f"file://{model}"}})
    assert main(["run", "-q", "-f", str(manifest), "-o", str(tmp_path / "out")]) == 10
    (failure,) = result_of(tmp_path / "out")["failures"]
    assert (failure["target"], failure["reason"]) == ("onnx-int8-dynamic", "NothingToQuantize")
