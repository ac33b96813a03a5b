"""API models: defaults, camelCase on the wire, and the result manifest round trip."""

import json

import pytest
import yaml

from modelfleet.api import CompressedModel, ResultManifest
from modelfleet.errors import InvalidManifest
from modelfleet.manifest import load_manifest

from conftest import DIGITS_MANIFEST


def test_example_manifest_round_trips_in_camel_case():
    raw = yaml.safe_load(DIGITS_MANIFEST.read_text())
    model = CompressedModel.model_validate(raw)
    assert model.spec.compression.calibration_method == "minmax"
    wire = model.to_wire()
    assert wire["spec"]["compression"]["calibrationSamples"] == 256
    assert wire["spec"]["slo"]["latencyP95Ms"]["onnxruntime"] == 5
    assert CompressedModel.model_validate(wire) == model


def test_minimal_spec_gets_documented_defaults():
    model = CompressedModel.model_validate({
        "apiVersion": "modelfleet.io/v1alpha1", "kind": "CompressedModel", "metadata": {"name": "m"},
        "spec": {
            "source": {"uri": "file:///m.onnx", "format": "onnx", "inputs": [{"name": "x", "shape": [-1, 4]}]},
            "dataset": {"calibration": {"uri": "file:///c.npz"}, "evaluation": {"uri": "file:///e.npz"}},
        },
    })
    spec = model.spec
    assert spec.compression.precisions == ["int8-static"]
    assert spec.compression.per_channel is True
    assert spec.compression.opset == 17
    assert spec.slo.max_accuracy_drop_points == 1.0
    assert spec.benchmark.runs == 100
    assert spec.source.inputs[0].dtype == "float32"


def test_result_manifest_schema_round_trip(tmp_path):
    manifest = {
        "apiVersion": "modelfleet.io/v1alpha1", "kind": "CompressionResult", "modelName": "digits",
        "source": {"uri": "file:///m.pt", "format": "torchscript", "sha256": "a" * 64},
        "baseline": {"artifact": "onnx-fp32", "accuracy": 99.0, "evaluatedSamples": 10},
        "artifacts": [], "verdict": {"passed": True}, "durationSeconds": 1.5,
    }
    result = ResultManifest.model_validate_json(json.dumps(manifest))
    assert json.loads(result.model_dump_json(by_alias=True, exclude_none=True)) == manifest | {"failures": [],
                                                                                                "verdict": {"passed": True, "violations": []}}


def test_manifest_loader_names_the_bad_field(tmp_path):
    raw = yaml.safe_load(DIGITS_MANIFEST.read_text())
    raw["spec"]["compression"]["precisions"] = ["int4"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(InvalidManifest, match=r"spec\.compression\.precisions\.0"):
        load_manifest(path)
