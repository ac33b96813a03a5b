"""A real pretrained CNN that another framework exported: PaddleOCR's text-direction classifier, as it ships in
the rapidocr-onnxruntime wheel (paddle2onnx, opset 11, dynamic height and width, node names such as `Softmax@0`,
squeeze-excite blocks), evaluated on rendered real text (examples/paddle-ocr-cls/prepare.py).

Each of these tripped the pipeline before: pnnx newer than the ncnn runtime wrote Reshape expressions ncnn could
not load, onnx2tf refused the `@` in a node name, its TFLite had no signature for int8 calibration, and ncnn's
int8 convolution misread the squeeze-excite vectors (accuracy 98% -> 50%)."""

import importlib.util
import json
import sys

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper

from modelfleet.cli import main
from modelfleet.pipeline import convert
from conftest import REPO

sys.path.insert(0, str(REPO / "examples" / "paddle-ocr-cls"))
import prepare  # noqa: E402  (the example's own data preparation)

ALL_ARTIFACTS = {"onnx-fp32", "onnx-fp16", "onnx-int8-dynamic", "onnx-int8-static",
                 "ncnn-fp32-arm-boards", "ncnn-fp16-arm-boards", "ncnn-int8-arm-boards",
                 "tflite-fp32-phones", "tflite-int8-phones"}
MAX_DROP_POINTS = 1.5


def test_node_names_are_made_safe_for_tensorflow(tmp_path):
    """Node names only: tensor names (the edges) and the graph's inputs and outputs stay as they are."""
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="Relu@0"),
             helper.make_node("Relu", ["a"], ["b"], name="Relu_0"),
             helper.make_node("Softmax", ["b"], ["save/out.tmp_1"], name="Softmax@0", axis=1),
             helper.make_node("Identity", ["save/out.tmp_1"], ["y"], name=""),
             helper.make_node("Identity", ["y"], ["z"], name="-lead")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "in.onnx")
    convert.write_tf_safe_copy(tmp_path / "in.onnx", tmp_path / "out.onnx")
    safe = onnx.load(tmp_path / "out.onnx")
    onnx.checker.check_model(safe)
    names = [n.name for n in safe.graph.node]
    assert names == ["Relu_0_1", "Relu_0", "Softmax_0", "Identity", "n-lead"]
    assert all(convert._TF_SCOPE.fullmatch(name) for name in names)
    assert [list(n.output) for n in safe.graph.node] == [list(n.output) for n in model.graph.node]


@pytest.fixture(scope="module")
def paddle_cls(tmp_path_factory):
    if importlib.util.find_spec("rapidocr_onnxruntime") is None:
        pytest.fail("rapidocr-onnxruntime is a test dependency (pip install -e '.[test]'): it ships the model")
    data = prepare.prepare(tmp_path_factory.mktemp("paddle-cls") / "data", evaluation=300, calibration=64)
    manifest = yaml.safe_load((REPO / "examples" / "paddle-ocr-cls" / "compressedmodel.yaml").read_text())
    manifest["spec"]["compression"]["calibrationSamples"] = 64
    manifest["spec"]["benchmark"] = {"threads": 1, "warmupRuns": 2, "runs": 20}
    manifest["spec"]["targets"].pop("triton")  # publishing is not under test here
    path = data.parent / "compressedmodel.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return path


@pytest.mark.slow
def test_paddle_ocr_classifier_builds_every_precision_and_edge_target(paddle_cls, ncnn_tools, onnx2tf,
                                                                       monkeypatch):
    monkeypatch.setenv(convert.NCNN_TOOLS_ENV, ncnn_tools)
    monkeypatch.setenv(convert.ONNX2TF_ENV, onnx2tf)
    out = paddle_cls.parent / "out"
    main(["run", "-q", "-f", str(paddle_cls), "-o", str(out)])
    result = json.loads((out / "result.json").read_text())
    assert result["failures"] == []
    artifacts = {a["name"]: a for a in result["artifacts"]}
    assert set(artifacts) == ALL_ARTIFACTS
    assert result["source"]["opset"] == 11 and result["baseline"]["opset"] == 17
    # A real pretrained model on real text: the fp32 accuracy means something, and every artifact keeps it.
    assert result["baseline"]["accuracy"] >= 95.0
    for name, a in artifacts.items():
        assert a["accuracyDropPoints"] <= MAX_DROP_POINTS, (name, a["accuracy"])
    assert artifacts["ncnn-int8-arm-boards"]["sizeBytes"] < 0.5 * artifacts["ncnn-fp32-arm-boards"]["sizeBytes"]
    assert artifacts["tflite-int8-phones"]["sizeBytes"] < 0.5 * artifacts["tflite-fp32-phones"]["sizeBytes"]
    chosen = {c["target"]: c["chosen"] for c in result["choices"]}
    assert chosen["arm-boards"].startswith("ncnn-") and chosen["phones"].startswith("tflite-")
    # The int8 TFLite runs through a signature that the fp32 conversion did not have.
    from ai_edge_litert.interpreter import Interpreter

    assert Interpreter(model_path=str(out / "tflite-fp32-phones" / "model.tflite")).get_signature_list()
    evaluation = np.load(paddle_cls.parent / "data" / "evaluation.npz")
    assert evaluation["inputs"].shape == (300, 3, 48, 192) and set(np.unique(evaluation["labels"])) == {0, 1}
