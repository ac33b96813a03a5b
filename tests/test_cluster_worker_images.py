"""Each Job runs in the image that carries what it runs (hack/images.sh), on the real test cluster: an ONNX
source compresses in the torch-free worker (pnnx's binary for ncnn, onnxruntime's quantizer), and with a
TFLite target in worker-tflite (the worker plus onnx2tf), so TFLite from ONNX works in-cluster without a host
venv. The torch image's own path is test_cluster_operator.py's digits model.
"""

import subprocess

import pytest
from kubernetes import client

from conftest import export_digits_onnx
from test_cluster_operator import CLAIM, claim, conditions, create, inputs, jobs, resource, wait_for  # noqa: F401

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

NCNN_ONLY = [{"name": "arm-boards", "runtime": "ncnn", "precision": "fp16",
              "deviceSelector": {"modelfleet.io/class": "arm-board"}}]


@pytest.fixture(scope="module")
def onnx_source(digits_data, artifact_root, inputs) -> str:  # noqa: F811
    """The digits CNN exported to ONNX on the host, beside the other inputs on the claim."""
    path = artifact_root / CLAIM / "inputs" / "digits" / "digits.onnx"
    export_digits_onnx(digits_data, path)
    return f"{inputs}/digits.onnx"


def image_of_compress_pod(kube, namespace: str, name: str) -> str:
    [job] = [j for j in jobs(kube, namespace) if j.metadata.labels["modelfleet.io/compressedmodel"] == name
             and j.metadata.labels["modelfleet.io/stage"] == "compress"]
    [pod] = client.CoreV1Api(kube.api).list_namespaced_pod(
        namespace, label_selector=f"job-name={job.metadata.name}").items
    return pod.spec.containers[0].image


def image_has(image: str, module: str) -> bool:
    """Whether `module` imports in the image (on this host's docker, where hack/images.sh built it)."""
    done = subprocess.run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "python3", image,
                           "-c", f"import {module}"], capture_output=True, timeout=120)
    return done.returncode == 0


def test_onnx_sources_compress_without_torch_and_to_tflite_in_cluster(kube, namespace, claim, inputs,  # noqa: F811
                                                                      onnx_source, operator):
    source = {"source": {"uri": onnx_source, "format": "onnx"}}
    create(kube, namespace, resource(inputs, "ncnn-only", {**source, "targets": {"edge": NCNN_ONLY}}))
    create(kube, namespace, resource(inputs, "with-tflite", source))  # the example's targets: ncnn and tflite

    ncnn_only = wait_for(kube, namespace, "ncnn-only", "Compressed", "True")
    with_tflite = wait_for(kube, namespace, "with-tflite", "Compressed", "True")
    for body in (ncnn_only, with_tflite):
        assert conditions(body)["SLOMet"]["status"] == "True", body["status"]

    worker, tflite = operator.env["MODELFLEET_WORKER_IMAGE"], operator.env["MODELFLEET_TFLITE_WORKER_IMAGE"]
    assert image_of_compress_pod(kube, namespace, "ncnn-only") == worker
    assert image_of_compress_pod(kube, namespace, "with-tflite") == tflite
    assert not image_has(worker, "torch") and not image_has(tflite, "torch")

    artifacts = {a["name"]: a for a in ncnn_only["status"]["artifacts"]}
    assert {"onnx-fp32", "onnx-int8-static", "ncnn-fp16-arm-boards"} <= set(artifacts)
    assert not any(name.startswith("tflite") for name in artifacts)
    assert "tflite-fp32-phones" in {a["name"] for a in with_tflite["status"]["artifacts"]}
    # measured in the Job like every artifact: LiteRT's interpreter ran the converted model on the evaluation set
    figures = {a["name"]: a for a in with_tflite["status"]["evaluation"]["artifacts"]}
    assert figures["tflite-fp32-phones"]["accuracy"] >= 90.0
