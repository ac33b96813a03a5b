"""The s3:// artifact store from inside the cluster: worker Jobs in real pods write their results to a
real MinIO (hack/minio.sh, listening on the node IP so pods reach it), with credentials from a Secret
named by MODELFLEET_ARTIFACTS_SECRET; the operator reads result.json back from S3 with its own.

Each test runs its own operator Deployment (deploy/operator.yaml), watching only the test's namespace,
with MODELFLEET_ARTIFACTS=s3://...; the session's clusterwide pvc:// operator (conftest's `operator`)
is scaled to zero meanwhile, or it would race ours for the same resources.
"""

import hashlib
import json
import time

import pytest
from kubernetes import client

import test_cluster_operator
from conftest import OperatorDeployment, delete_models
from test_cluster_operator import GROUP, PLURAL, VERSION, api, conditions, create, jobs, resource, wait_for

claim, inputs = test_cluster_operator.claim, test_cluster_operator.inputs  # fixtures: a claim, digits on it

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

SECRET = "modelfleet-s3"
PREFIX = "results"
FAST = {"targets": {"edge": []}}


@pytest.fixture(scope="module")
def sole_operator(request):
    """Stop the session's clusterwide operator for this module; start it again afterwards."""
    shared = request.getfixturevalue("operator")  # also applies deploy/operator-rbac.yaml and the store's claim
    if shared.alive():
        shared.kill(15)
    yield
    shared.start()


@pytest.fixture(scope="module")
def s3_inputs(cluster_minio, digits_data) -> str:
    """The digits model and data in MinIO; returns their s3:// prefix."""
    for name in ("digits.torchscript.pt", "calibration.npz", "evaluation.npz"):
        cluster_minio.client().upload_file(str(digits_data / name), cluster_minio.bucket, f"inputs/digits/{name}")
    return f"s3://{cluster_minio.bucket}/inputs/digits"


@pytest.fixture
def s3_secret(kube, namespace, cluster_minio) -> str:
    """The Secret worker Jobs get their S3 endpoint and credentials from (envFrom)."""
    client.CoreV1Api(kube.api).create_namespaced_secret(namespace, {
        "metadata": {"name": SECRET}, "type": "Opaque", "stringData": cluster_minio.env})
    return SECRET


@pytest.fixture
def s3_operator(kube, namespace, s3_secret, operator_image, worker_images, cluster_minio, sole_operator):
    deployment = OperatorDeployment(
        kube, operator_image,
        {**worker_images,
         "MODELFLEET_ARTIFACTS": f"s3://{cluster_minio.bucket}/{PREFIX}",
         "MODELFLEET_ARTIFACTS_SECRET": s3_secret, "MODELFLEET_IMAGE_PULL_POLICY": "Never",
         **cluster_minio.env},  # the operator's own S3 access (it reads result.json)
        name="modelfleet-operator-s3", namespaces=(namespace,))  # other namespaces' resources stay untouched
    deployment.apply()
    yield deployment
    delete_models(kube, namespace)  # while our operator still runs: it releases the finalizers
    deployment.delete()


def keys(minio, prefix: str) -> dict[str, dict]:
    pages = minio.client().get_paginator("list_objects_v2").paginate(Bucket=minio.bucket, Prefix=prefix)
    return {item["Key"]: item for page in pages for item in page.get("Contents", [])}


def body(minio, key: str) -> bytes:
    return minio.client().get_object(Bucket=minio.bucket, Key=key)["Body"].read()


def test_results_go_to_s3_and_the_operator_reads_them_back(kube, namespace, s3_inputs, s3_operator, cluster_minio):
    created = create(kube, namespace, resource(s3_inputs, changes={**FAST, "artifactPolicy": "Delete"}))
    status = wait_for(kube, namespace, "digits", "Ready", "True", timeout=600)["status"]
    assert status["observedGeneration"] == created["metadata"]["generation"]
    assert {t: c["status"] for t, c in conditions({"status": status}).items()} == {
        "SpecValid": "True", "Compressed": "True", "SLOMet": "True", "Ready": "True", "Reconciling": "False",
        "Stalled": "False"}
    assert status["evaluation"]["int8AccuracyDropPoints"] <= 1.0

    # The worker got the Secret, and nothing else to reach S3: no claim, only its scratch emptyDir.
    [job] = jobs(kube, namespace)
    assert job.status.succeeded == 1 and not job.status.failed
    pod = job.spec.template.spec
    assert [e.secret_ref.name for e in pod.containers[0].env_from] == [SECRET]
    assert [v.empty_dir is not None and v.persistent_volume_claim is None for v in pod.volumes] == [True]
    output = job.metadata.annotations["modelfleet.io/result"]
    root = f"s3://{cluster_minio.bucket}/"
    assert output.startswith(f"{root}{PREFIX}/{namespace}/digits/")
    prefix = output.removeprefix(root)

    # result.json and every file it names are in MinIO, under the result URI the status points at.
    stored = keys(cluster_minio, f"{prefix}/")
    result = json.loads(body(cluster_minio, f"{prefix}/result.json"))
    assert result["source"]["uri"] == f"{s3_inputs}/digits.torchscript.pt"
    assert {a["name"] for a in status["artifacts"]} == {a["name"] for a in result["artifacts"]} >= {
        "onnx-fp32", "onnx-int8-static"}
    for artifact in status["artifacts"]:
        assert artifact["uri"].startswith(f"{output}/"), artifact
    for artifact in result["artifacts"]:
        files = [f"{prefix}/{f}" for f in (*artifact["files"], artifact.get("smoke")) if f]
        assert set(files) <= set(stored), artifact["name"]
        if len(artifact["files"]) == 1:
            assert hashlib.sha256(body(cluster_minio, files[0])).hexdigest() == artifact["sha256"]
    assert all(stored[f"{prefix}/result.json"]["LastModified"] >= item["LastModified"] for item in stored.values())

    # artifactPolicy Delete: the operator removes the resource's prefix from S3.
    api(kube).delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "digits")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and keys(cluster_minio, f"{PREFIX}/{namespace}/"):
        time.sleep(0.5)
    assert keys(cluster_minio, f"{PREFIX}/{namespace}/") == {}


def test_wrong_credentials_in_the_secret_fail_the_job_once_with_s3s_refusal(kube, namespace, claim, inputs,
                                                                            s3_operator, cluster_minio):
    # Inputs on the claim: the worker's first step, a write check on the store, is refused.
    client.CoreV1Api(kube.api).patch_namespaced_secret(SECRET, namespace, {
        "stringData": {"AWS_SECRET_ACCESS_KEY": "not-the-secret"}})
    create(kube, namespace, resource(inputs, changes={**FAST, "worker": {"backoffLimit": 3}}))
    status = wait_for(kube, namespace, "digits", "Compressed", "False", timeout=600)
    compressed = conditions(status)["Compressed"]
    assert f"s3://{cluster_minio.bucket}/{PREFIX}/{namespace}/digits/" in compressed["message"], compressed
    assert compressed["reason"] == "AccessDenied" and "S3 denied access" in compressed["message"], compressed
    assert "exit code 2" in compressed["message"], compressed
    assert conditions(status)["Ready"]["status"] == "False"
    [job] = jobs(kube, namespace)
    assert job.status.failed == 1 and not job.status.succeeded  # permanent: no retry despite backoffLimit 3
    assert keys(cluster_minio, f"{PREFIX}/{namespace}/") == {}
