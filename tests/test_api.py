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
    # what the model adds: the defaults of what this manifest leaves out
    assert json.loads(result.model_dump_json(by_alias=True, exclude_none=True)) == manifest | {
        "failures": [], "verdict": {"passed": True, "violations": []}, "notes": [], "choices": [],
        "baseline": manifest["baseline"] | {"metric": "top1"}}


def test_manifest_loader_names_the_bad_field(tmp_path):
    raw = yaml.safe_load(DIGITS_MANIFEST.read_text())
    raw["spec"]["compression"]["precisions"] = ["int4"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(InvalidManifest, match=r"spec\.compression\.precisions\.0"):
        load_manifest(path)


# --- paths a manifest or a result may name ---------------------------------------------------------

URIS = [
    # uri, accepted for inputs
    ("file://data/digits.pt", True), ("file:///data/digits.pt", True), ("file:///data/.cache/m.pt", True),
    ("file:///data/...", True), ("file:///data/..m", True), ("pvc://models/digits/m.pt", True),
    ("pvc://models.v2/m.pt", True), ("pvc://models/dir/", True), ("s3://bucket", True), ("s3://bucket/", True),
    ("s3://bucket/runs/digits", True), ("https://host:8443/m.pt?sig=a%2Fb", True),
    ("file://../m.pt", False), ("file:///a/../m.pt", False), ("file:///a/./m.pt", False), ("file:///a//m.pt", False),
    ("file://", False), ("file:///", False), ("pvc://models", False), ("pvc://models/", False),
    ("pvc://models/../m.pt", False), ("pvc://models//m.pt", False), ("pvc://Models/m.pt", False),
    ("pvc://-models/m.pt", False), ("pvc://models-/m.pt", False), ("pvc://mo_dels/m.pt", False),
    ("pvc://../m.pt", False), ("pvc://models/a\\b", False), ("pvc://models/a\x00b", False),
    ("s3://../m.pt", False), ("s3://bucket/a/../b", False), ("s3://bucket//b", False), ("https://h/a/../b", False),
    ("ftp://host/m.pt", False), ("/data/m.pt", False), ("pvc:/models/m.pt", False),
]


@pytest.mark.parametrize(("uri", "accepted"), URIS)
def test_the_uri_check_and_the_crd_pattern_agree(uri, accepted):
    import re

    from modelfleet.api.paths import INPUT_URI_PATTERN, uri_problem

    assert (uri_problem(uri) is None) is accepted
    assert bool(re.fullmatch(INPUT_URI_PATTERN, uri)) is accepted  # what the API server checks (RE2 syntax)


def test_a_triton_repository_cannot_be_https():
    from modelfleet.api.paths import REPOSITORY_SCHEMES, uri_problem

    assert uri_problem("https://host/triton", REPOSITORY_SCHEMES) == "must start with file://, s3://, pvc://"
    assert uri_problem("pvc://models/triton", REPOSITORY_SCHEMES) is None


def _result_with(files: list[str], smoke: str | None = None) -> str:
    artifact = {"name": "onnx-fp32", "runtime": "onnxruntime", "precision": "fp32", "role": "baseline",
                "files": files, "sha256": "a" * 64, "sizeBytes": 1, "accuracy": 99.0, "accuracyDropPoints": 0.0,
                "agreement": {"top1": 100.0, "maxAbsDiff": 0.0},
                "latency": {"p50Ms": 1.0, "p95Ms": 1.0, "runs": 10, "threads": 1, "batchSize": 1}}
    if smoke:
        artifact["smoke"] = smoke
    return json.dumps({"modelName": "digits", "source": {"uri": "file:///m.pt", "format": "torchscript", "sha256": "a" * 64},
                       "baseline": {"artifact": "onnx-fp32", "accuracy": 99.0, "evaluatedSamples": 10},
                       "artifacts": [artifact], "verdict": {"passed": True}, "durationSeconds": 1.0})


@pytest.mark.parametrize(("files", "smoke", "message"), [
    (["../../etc/passwd"], None, "'..', '.' and empty segments are refused"),
    (["onnx-fp32/../../x"], None, "'..', '.' and empty segments are refused"),
    (["/etc/passwd"], None, "is absolute"),
    (["onnx-fp32//model.onnx"], None, "'..', '.' and empty segments are refused"),
    (["onnx-fp32\\model.onnx"], None, "NUL character or a backslash"),
    ([""], None, "the path is empty"),
    ([], None, "at least 1 item"),
    (["onnx-fp32/model.onnx"], "../smoke.npz", "'..', '.' and empty segments are refused"),
])
def test_a_result_cannot_name_files_outside_its_directory(files, smoke, message):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        ResultManifest.model_validate_json(_result_with(files, smoke))


def test_a_result_with_relative_files_is_valid():
    result = ResultManifest.model_validate_json(_result_with(["onnx-fp32/model.onnx"], "onnx-fp32/smoke.npz"))
    assert result.artifacts[0].files == ["onnx-fp32/model.onnx"]


@pytest.mark.parametrize(("name", "valid"), [("n" * 40, True), ("n" * 41, False), ("n" * 63, False)])
def test_names_leave_room_for_the_job_names(name, valid):
    from pydantic import ValidationError

    from modelfleet.api.compressedmodel import MAX_NAME_LENGTH

    raw = yaml.safe_load(DIGITS_MANIFEST.read_text())
    raw["metadata"]["name"] = name
    if valid:
        assert CompressedModel.model_validate(raw).metadata.name == name
    else:
        with pytest.raises(ValidationError, match=f"metadata.name must be at most {MAX_NAME_LENGTH} characters"):
            CompressedModel.model_validate(raw)
