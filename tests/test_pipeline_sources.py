"""Source formats and partial failures, on the real digits model and data."""

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from conftest import export_digits_onnx

from modelfleet.api.compressedmodel import SourceFormat, TensorSpec
from modelfleet.cli import main
from modelfleet.errors import UnsupportedModel
from modelfleet.pipeline import convert
from modelfleet.pipeline.source import LoadedSource
from modelfleet.progress import Progress

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
DIGITS_INPUT = TensorSpec(name="input", shape=[-1, 1, 8, 8], dtype="float32")
QUIET = Progress(enabled=False)

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


def test_onnx_source_passes_through_and_converts_to_ncnn_and_tflite(digits_data, digits_manifest, onnx2tf,
                                                                    monkeypatch, tmp_path):
    monkeypatch.setenv(convert.ONNX2TF_ENV, onnx2tf)
    onnx_model = export_digits_onnx(digits_data, tmp_path / "digits.onnx")
    manifest = digits_manifest({
        "compression": {"precisions": ["int8-static"]},
        "source": {"uri": f"file://{onnx_model}", "format": "onnx"},
        "targets": {"edge": [{"name": "boards", "runtime": "ncnn", "precision": "fp32"},
                             {"name": "phones", "runtime": "tflite"}]},
    })
    assert main(["run", "-q", "-f", str(manifest), "-o", str(tmp_path / "out")]) == 0
    result = result_of(tmp_path / "out")
    assert result["failures"] == []
    artifacts = {a["name"]: a for a in result["artifacts"]}
    # phones is auto (the default): TFLite fp32 and int8 are its candidates
    assert set(artifacts) == {"onnx-fp32", "onnx-int8-static", "ncnn-fp32-boards", "tflite-fp32-phones",
                              "tflite-int8-phones"}
    assert [c["chosen"] for c in result["choices"] if c["target"] == "phones"] in (
        [["tflite-fp32-phones"], ["tflite-int8-phones"]])
    assert result["baseline"]["accuracy"] >= 95.0
    # fp32 ncnn and fp32 TFLite (onnx2tf) reproduce the fp32 ONNX outputs.
    for name in ("ncnn-fp32-boards", "tflite-fp32-phones"):
        assert artifacts[name]["agreement"]["maxAbsDiff"] < 1e-3, name
        assert artifacts[name]["accuracy"] == result["baseline"]["accuracy"], name
    # onnx2tf kept the ONNX model's NCHW input (batch fixed to 1) rather than its usual NHWC.
    from ai_edge_litert.interpreter import Interpreter

    tflite = Interpreter(model_path=str(tmp_path / "out" / "tflite-fp32-phones" / "model.tflite"))
    assert tflite.get_input_details()[0]["shape"].tolist() == [1, 1, 8, 8]


def test_onnx_to_tflite_without_onnx2tf_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.delenv(convert.ONNX2TF_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no venv in the default place
    source = LoadedSource(SourceFormat.onnx, tmp_path / "model.onnx", "-")
    with pytest.raises(UnsupportedModel) as raised:
        convert.to_tflite(source, DIGITS_INPUT, tmp_path / "model.tflite", tmp_path / "convert.log", QUIET)
    assert raised.value.reason == "ConverterUnavailable"
    # The default path the worker looks in is the one the install script creates.
    version = re.search(r"^version=(\S+)$", (REPO / "hack" / "onnx2tf-venv.sh").read_text(), re.M).group(1)
    message = str(raised.value)
    assert f".cache/modelfleet/onnx2tf-{version}/bin/onnx2tf does not exist" in message
    assert "bash hack/onnx2tf-venv.sh" in message and convert.ONNX2TF_ENV in message

    monkeypatch.setenv(convert.ONNX2TF_ENV, str(tmp_path / "missing" / "onnx2tf"))
    with pytest.raises(UnsupportedModel, match=f"{convert.ONNX2TF_ENV}=.*/missing/onnx2tf is not an executable"):
        convert.to_tflite(source, DIGITS_INPUT, tmp_path / "model.tflite", tmp_path / "convert.log", QUIET)


def test_onnx2tf_failure_reports_the_end_of_its_output(monkeypatch, tmp_path):
    fake = tmp_path / "bin" / "onnx2tf"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'loading model.onnx'\n"
                    "printf '\\033[31mERROR:\\033[0m Conv: kernel shape mismatch\\n' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv(convert.ONNX2TF_ENV, str(fake))
    relu = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["input"], ["output"])], "relu",
                                  [onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 64])],
                                  [onnx.helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, [1, 64])])
    onnx.save(onnx.helper.make_model(relu), tmp_path / "model.onnx")
    with pytest.raises(UnsupportedModel) as raised:
        convert.to_tflite(LoadedSource(SourceFormat.onnx, tmp_path / "model.onnx", "-"), DIGITS_INPUT,
                          tmp_path / "model.tflite", tmp_path / "convert.log", QUIET)
    assert raised.value.reason == "ConversionFailed"
    assert str(raised.value) == ("onnx2tf failed (exit 3): loading model.onnx | "
                                 "ERROR: Conv: kernel shape mismatch")


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


@pytest.mark.parametrize(("fmt", "batch"), [("onnx", 1), ("onnx", 7), ("torchscript", 1)])
def test_a_fixed_batch_is_fed_exactly_and_scores_like_the_dynamic_batch(fmt, batch, digits_data, digits_result,
                                                                        digits_manifest, tmp_path):
    # 540 evaluation samples: batches of 7 leave a last batch of 1, filled up with copies and dropped again.
    source = (f"file://{export_digits_onnx(digits_data, tmp_path / 'fixed.onnx', fixed_batch=batch)}" if fmt == "onnx"
              else f"file://{digits_data / 'digits.torchscript.pt'}")
    manifest = digits_manifest({**ONNX_ONLY, "source": {"uri": source, "format": fmt,
                                                        "inputs": [{"name": "input", "shape": [batch, 1, 8, 8]}]}})
    assert main(["run", "-q", "-f", str(manifest), "-o", str(tmp_path / "out")]) == 0

    fixed, dynamic = result_of(tmp_path / "out"), result_of(digits_result)
    assert fixed["failures"] == []
    assert fixed["baseline"]["accuracy"] == dynamic["baseline"]["accuracy"] >= 95.0
    artifacts = {a["name"]: a for a in fixed["artifacts"]}
    reference = {a["name"]: a for a in dynamic["artifacts"]}
    assert artifacts["onnx-int8-static"]["accuracy"] == reference["onnx-int8-static"]["accuracy"]
    for artifact in artifacts.values():  # the graph keeps the batch, and every call fed exactly that many
        assert artifact["signature"]["inputs"][0]["shape"] == [batch, 1, 8, 8]
        assert artifact["latency"]["batchSize"] == batch
        smoke = np.load(tmp_path / "out" / artifact["smoke"])
        assert smoke["inputs"].shape == (batch, 1, 8, 8) and smoke["outputs"].shape == (batch, 10)
