"""The real API server refuses bad CompressedModels at apply time, from the generated CRD alone
(OpenAPI schema: types, enums, patterns, bounds; x-kubernetes-validations CEL rules)."""

import copy
import json
from pathlib import Path

import pytest

from conftest import deep_update, digits_example

from modelfleet.api.compressedmodel import EDGE_PRECISION_RULE

pytestmark = pytest.mark.cluster

PVC_DATA = {"source": {"uri": "pvc://data/digits/digits.torchscript.pt"},
            "dataset": {"calibration": {"uri": "pvc://data/digits/calibration.npz"},
                        "evaluation": {"uri": "pvc://data/digits/evaluation.npz"}}}


def manifest(changes: dict | None = None) -> dict:
    body = digits_example(Path("/data"), copy.deepcopy(PVC_DATA))
    deep_update(body["spec"], copy.deepcopy(changes or {}))
    return body


def without(path: str) -> dict:
    body = manifest()
    *parents, last = path.split(".")
    node = body
    for key in parents:
        node = node[key]
    del node[last]
    return body


TRITON = {"repository": "pvc://models/triton", "modelName": "digits"}
BAD = [
    ("no spec", without("spec"), "spec: Required value"),
    ("no source", without("spec.source"), "spec.source: Required value"),
    ("no dataset", without("spec.dataset"), "spec.dataset: Required value"),
    ("no evaluation data", without("spec.dataset.evaluation"), "spec.dataset.evaluation: Required value"),
    ("source uri scheme", manifest({"source": {"uri": "ftp://host/model.pt"}}), "spec.source.uri in body should match"),
    ("source format", manifest({"source": {"format": "caffe"}}), 'spec.source.format: Unsupported value: "caffe"'),
    ("no inputs", manifest({"source": {"inputs": []}}), "spec.source.inputs in body should have at least 1 items"),
    ("zero dimension", manifest({"source": {"inputs": [{"name": "input", "shape": [-1, 0, 8, 8]}]}}),
     "batch dimension must be -1 (dynamic) or positive, other dimensions positive"),
    ("shape not a list", manifest({"source": {"inputs": [{"name": "input", "shape": "1x8x8"}]}}),
     'spec.source.inputs[0].shape: Invalid value: "string"'),
    ("input dtype", manifest({"source": {"inputs": [{"name": "input", "shape": [-1, 1, 8, 8], "dtype": "float8"}]}}),
     'Unsupported value: "float8"'),
    ("sha256", manifest({"source": {"sha256": "xyz"}}), "spec.source.sha256 in body should match"),
    ("metric", manifest({"dataset": {"metric": "top5"}}), 'spec.dataset.metric: Unsupported value: "top5"'),
    ("precision", manifest({"compression": {"precisions": ["int4"]}}), 'Unsupported value: "int4"'),
    ("calibration method", manifest({"compression": {"calibrationMethod": "kl"}}), 'Unsupported value: "kl"'),
    ("calibration samples", manifest({"compression": {"calibrationSamples": 0}}),
     "spec.compression.calibrationSamples in body should be greater than or equal to 1"),
    ("opset", manifest({"compression": {"opset": 5}}), "spec.compression.opset in body should be greater than or equal to"),
    ("edge runtime", manifest({"targets": {"edge": [{"name": "x", "runtime": "coreml"}]}}), 'Unsupported value: "coreml"'),
    ("duplicate edge names", manifest({"targets": {"edge": [{"name": "x", "runtime": "ncnn"},
                                                            {"name": "x", "runtime": "tflite"}]}}),
     "edge target names must be unique"),
    ("tflite fp16", manifest({"targets": {"edge": [{"name": "x", "runtime": "tflite", "precision": "fp16"}]}}),
     EDGE_PRECISION_RULE),
    ("triton precision not built", manifest({"compression": {"precisions": ["int8-static"]},
                                             "targets": {"triton": TRITON | {"precision": "fp16"}}}),
     "targets.triton.precision must be auto, fp32 or one of compression.precisions"),
    ("triton model name", manifest({"targets": {"triton": TRITON | {"modelName": "Bad_Name"}}}),
     "spec.targets.triton.modelName in body should match"),
    ("tensorrt on cpu", manifest({"targets": {"triton": TRITON | {"tensorrt": True}}}),
     "tensorrt needs instanceGroup.kind GPU"),
    ("triton repository https", manifest({"targets": {"triton": TRITON | {"repository": "https://x/models"}}}),
     "spec.targets.triton.repository in body should match"),
    ("negative accuracy drop", manifest({"slo": {"maxAccuracyDropPoints": -1}}),
     "spec.slo.maxAccuracyDropPoints in body should be greater than or equal to 0"),
    ("too few runs", manifest({"benchmark": {"runs": 5}}), "spec.benchmark.runs in body should be greater than or equal to 10"),
    ("artifact policy", manifest({"artifactPolicy": "Keep"}), 'spec.artifactPolicy: Unsupported value: "Keep"'),
    ("memory quantity", manifest({"worker": {"resources": {"requests": {"memory": "lots"}}}}),
     "spec.worker.resources.requests.memory in body should match"),
    ("unknown field", manifest({"colour": "blue"}), 'unknown field "spec.colour"'),
    ("source uri dot-dot", manifest({"source": {"uri": "pvc://data/../../etc/passwd"}}), "spec.source.uri in body should match"),
    ("calibration uri bad claim", manifest({"dataset": {"calibration": {"uri": "pvc://Data_1/c.npz"}}}),
     "spec.dataset.calibration.uri in body should match"),
    ("triton repository dot-dot", manifest({"targets": {"triton": TRITON | {"repository": "pvc://models/../x"}}}),
     "spec.targets.triton.repository in body should match"),
    ("name too long", manifest() | {"metadata": {"name": "n" * 41}}, "metadata.name must be at most 40 characters"),
]


@pytest.mark.parametrize("body, expected", [pytest.param(b, e, id=i) for i, b, e in BAD])
def test_bad_manifest_is_refused_at_apply_time(kube, namespace, body, expected):
    from kubernetes import client

    api = client.CustomObjectsApi(kube.api)
    with pytest.raises(client.exceptions.ApiException) as refused:
        api.create_namespaced_custom_object("modelfleet.io", "v1alpha1", namespace, "compressedmodels", body,
                                            field_validation="Strict")
    assert refused.value.status in (400, 422)  # 400: strict decoding (unknown field), 422: schema and CEL
    assert expected in json.loads(refused.value.body)["message"]


def test_the_valid_manifest_is_accepted_with_defaults(kube, namespace):
    from kubernetes import client

    api = client.CustomObjectsApi(kube.api)
    created = api.create_namespaced_custom_object("modelfleet.io", "v1alpha1", namespace, "compressedmodels",
                                                  manifest(), field_validation="Strict")
    assert created["spec"]["artifactPolicy"] == "Retain"  # a CRD default
    assert created["spec"]["compression"]["opset"] >= 17
