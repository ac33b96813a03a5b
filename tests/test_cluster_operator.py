"""The operator on a real single-node Kubernetes: worker Jobs in real pods from the worker image,
results through a hostPath-backed PersistentVolumeClaim, status and Events on the resource.

The operator runs as users install it: the Deployment of deploy/operator.yaml, from the operator
image, with in-cluster credentials of its own ServiceAccount (deploy/operator-rbac.yaml and nothing
else). Test namespaces enforce the `restricted` Pod Security Standard.
"""

import collections
import copy
import random
import shutil
import time
from pathlib import Path

import pytest
from kubernetes import client

from conftest import deep_update, digits_example, hostpath_claim, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

GROUP, VERSION, PLURAL = "modelfleet.io", "v1alpha1", "compressedmodels"
CLAIM = "modelfleet"
FAST = {"benchmark": {"threads": 1, "warmupRuns": 2, "runs": 20},
        "worker": {"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}}


@pytest.fixture(scope="session")
def inputs(digits_data, artifact_root) -> str:
    """The digits model and data on the claim; returns their pvc:// prefix."""
    target = artifact_root / CLAIM / "inputs" / "digits"
    target.mkdir(parents=True, exist_ok=True)
    for name in ("digits.torchscript.pt", "calibration.npz", "evaluation.npz"):
        shutil.copy(digits_data / name, target / name)
    return f"pvc://{CLAIM}/inputs/digits"


@pytest.fixture
def claim(kube, namespace, artifact_root) -> str:
    """A PersistentVolumeClaim in the test namespace bound to a hostPath volume on the node."""
    volume = hostpath_claim(kube, namespace, artifact_root)
    yield CLAIM
    client.CoreV1Api(kube.api).delete_persistent_volume(volume)


def resource(inputs: str, name: str = "digits", changes: dict | None = None) -> dict:
    on_claim = {"source": {"uri": f"{inputs}/digits.torchscript.pt"},
                "dataset": {"calibration": {"uri": f"{inputs}/calibration.npz"},
                            "evaluation": {"uri": f"{inputs}/evaluation.npz"}}}
    body = digits_example(Path("/unused"), deep_update(deep_update(copy.deepcopy(FAST), on_claim), changes or {}))
    body["metadata"]["name"] = name
    return body


def api(kube) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube.api)


def create(kube, namespace: str, body: dict) -> dict:
    return api(kube).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


def get(kube, namespace: str, name: str) -> dict:
    return api(kube).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def conditions(body: dict) -> dict[str, dict]:
    return {c["type"]: c for c in (body.get("status") or {}).get("conditions", [])}


def wait_for(kube, namespace: str, name: str, condition: str, status: str, timeout: float = 900,
             generation: int | None = None) -> dict:
    deadline = time.monotonic() + timeout
    body = {}
    while time.monotonic() < deadline:
        body = get(kube, namespace, name)
        found = conditions(body).get(condition)
        if found and found["status"] == status and (generation is None or found.get("observedGeneration") == generation):
            return body
        time.sleep(1)
    raise AssertionError(f"{condition} never became {status}; status: {body.get('status')}")


def jobs(kube, namespace: str) -> list:
    return client.BatchV1Api(kube.api).list_namespaced_job(namespace).items


def events(kube, namespace: str) -> list[tuple[str, str]]:
    items = client.CoreV1Api(kube.api).list_namespaced_event(namespace).items
    return [(e.reason, e.message) for e in sorted(items, key=lambda e: e.metadata.creation_timestamp)]


def wait_for_reconcile(operator, namespace: str, name: str, timeout: float = 120) -> None:
    """Until the operator's current pod logs that it reconciled the resource (the reconcile has acted)."""
    wait_until(lambda: f"reconciled {namespace}/{name} " in operator.logs(), timeout,
               f"the operator pod {operator.pod} to reconcile {namespace}/{name}")


def test_digits_becomes_ready_from_jobs_in_real_pods(kube, namespace, claim, inputs, operator, artifact_root):
    """Also: the edge targets' bundle Job runs without the namespace's signing Secret, and Bundled says so
    while Ready stays True (tests/test_cluster_fleet.py signs and rolls bundles out)."""
    created = create(kube, namespace, resource(inputs))
    wait_for(kube, namespace, "digits", "Ready", "True")
    body = wait_for(kube, namespace, "digits", "Bundled", "False", timeout=300)
    status = body["status"]
    assert status["observedGeneration"] == created["metadata"]["generation"]
    assert {t: c["status"] for t, c in conditions(body).items()} == {
        "SpecValid": "True", "Compressed": "True", "SLOMet": "True", "Bundled": "False", "Ready": "True",
        "Reconciling": "False", "Stalled": "True"}  # the bundles wait for someone to add the Secret
    assert conditions(body)["Bundled"]["reason"] == conditions(body)["Stalled"]["reason"] == "SigningKeyMissing"
    evaluation = status["evaluation"]
    assert evaluation["baselineAccuracy"] >= 95.0 and evaluation["int8AccuracyDropPoints"] <= 1.0
    assert {a["name"] for a in status["artifacts"]} >= {"onnx-fp32", "onnx-int8-static", "ncnn-fp16-arm-boards",
                                                        "tflite-fp32-phones"}
    by_stage = {j.metadata.labels["modelfleet.io/stage"]: j for j in jobs(kube, namespace)}
    assert sorted(by_stage) == ["bundle", "compress"]
    job = by_stage["compress"]
    assert job.status.succeeded == 1 and not job.status.failed
    pods = client.CoreV1Api(kube.api).list_namespaced_pod(namespace, label_selector=f"job-name={job.metadata.name}").items
    # A torch source compresses in the torch image; its bundle Job in the torch-free worker.
    assert [p.spec.containers[0].image for p in pods] == [operator.env["MODELFLEET_TORCH_WORKER_IMAGE"]]
    bundle_pods = client.CoreV1Api(kube.api).list_namespaced_pod(
        namespace, label_selector=f"job-name={by_stage['bundle'].metadata.name}").items
    assert {p.spec.containers[0].image for p in bundle_pods} == {operator.env["MODELFLEET_WORKER_IMAGE"]}
    assert pods[0].status.pod_ip.startswith("10.244.")  # a real pod on the node's bridge
    # The result is on the claim, where the worker wrote it.
    uri = next(a["uri"] for a in status["artifacts"] if a["name"] == "onnx-int8-static")
    assert (artifact_root / uri.removeprefix("pvc://") / "model.onnx").is_file()
    table = kube.kubectl("get", "compressedmodels", "-n", namespace).stdout.split("\n")
    assert table[0].split()[:5] == ["NAME", "READY", "REASON", "INT8DROP", "INT8SIZE"]
    row = table[1].split()
    assert row[:3] == ["digits", "True", "Ready"] and float(row[3]) <= 1.0 and int(row[4]) > 0
    reasons = [reason for reason, _ in events(kube, namespace)]
    assert "JobCreated" in reasons and "Compressed" in reasons and "Ready" in reasons


def test_triton_target_is_published_by_a_second_job_after_the_gate(kube, namespace, claim, inputs, operator,
                                                                   artifact_root):
    """Also: the operator gives the resource its serving-SLO PrometheusRule (prometheus-operator's CRDs are
    installed for the session), owned by it, and the garbage collector removes it with the resource."""
    # No Triton server is reachable from pods here; the repository write (the publish Job) is what
    # runs in the cluster, while loading and verifying on a real server is tests/test_triton_publish.py's.
    repository = f"pvc://{CLAIM}/triton/{namespace}"
    create(kube, namespace, resource(inputs, changes={"targets": {"edge": [], "triton": {
        "repository": repository, "modelName": "digits"}}, "slo": {"latencyP95Ms": {"triton": 20}}}))
    body = wait_for(kube, namespace, "digits", "Ready", "True")
    published = conditions(body)["Published"]
    assert (published["status"], published["reason"]) == ("True", "Written")
    model_dir = artifact_root / CLAIM / "triton" / namespace / "digits"
    assert (model_dir / "1" / "model.onnx").is_file() and (model_dir / "config.pbtxt").is_file()
    stages = sorted(j.metadata.labels["modelfleet.io/stage"] for j in jobs(kube, namespace))
    assert stages == ["compress", "publish"]

    rules = client.CustomObjectsApi(kube.api)
    rule = rules.get_namespaced_custom_object("monitoring.coreos.com", "v1", namespace, "prometheusrules",
                                              "digits-serving-slo")
    assert rule["metadata"]["ownerReferences"][0]["uid"] == body["metadata"]["uid"]
    assert "ModelfleetServingLatencyBudgetBurn" in str(rule["spec"]) and "20 ms" in str(rule["spec"])
    api(kube).delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "digits")
    wait_until(lambda: not rules.list_namespaced_custom_object("monitoring.coreos.com", "v1", namespace,
                                                               "prometheusrules")["items"],
               120, "the garbage collector to remove the PrometheusRule with its CompressedModel")


def test_impossible_spec_gets_spec_valid_false_and_no_job(kube, namespace, claim, inputs, operator):
    body = resource(inputs, changes={"dataset": {"evaluation": {"uri": f"{inputs}/calibration.npz"}}})
    create(kube, namespace, body)
    status = wait_for(kube, namespace, "digits", "SpecValid", "False", timeout=60)
    assert conditions(status)["SpecValid"]["reason"] == "EvaluationOnCalibrationData"
    wait_for_reconcile(operator, namespace, "digits")  # a Job would have been created before this line
    assert jobs(kube, namespace) == []


def test_corrupt_model_fails_fast_with_the_workers_message(kube, namespace, claim, inputs, operator, artifact_root):
    corrupt = artifact_root / CLAIM / "inputs" / f"{namespace}-corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 definitely not a TorchScript archive" * 100)
    body = resource(inputs, changes={"source": {"uri": f"pvc://{CLAIM}/inputs/{corrupt.name}"}})
    create(kube, namespace, body)
    status = wait_for(kube, namespace, "digits", "Compressed", "False", timeout=600)
    compressed = conditions(status)["Compressed"]
    assert compressed["reason"] == "InvalidSource"
    assert "exit code 4" in compressed["message"] and corrupt.name in compressed["message"]
    [job] = jobs(kube, namespace)
    assert job.status.failed == 1  # a permanent exit code fails the Job at once: no retries


def test_retryable_failure_is_retried_up_to_the_limit(kube, namespace, claim, inputs, operator):
    body = resource(inputs, changes={"source": {"uri": "https://127.0.0.1:9/digits.pt"},
                                     "worker": {"backoffLimit": 1}})
    create(kube, namespace, body)
    status = wait_for(kube, namespace, "digits", "Compressed", "False", timeout=600)
    assert conditions(status)["Compressed"]["reason"] == "Retryable"
    [job] = jobs(kube, namespace)
    assert job.status.failed == 2  # the first try and one retry


def test_spec_change_runs_the_new_generation_and_removes_the_old_jobs(kube, namespace, claim, inputs, operator):
    create(kube, namespace, resource(inputs, changes={"targets": {"edge": []}}))
    wait_for(kube, namespace, "digits", "Ready", "True")
    [first] = jobs(kube, namespace)
    patched = api(kube).patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "digits",
                                                       {"spec": {"benchmark": {"runs": 25}}})  # changes the artifacts' figures
    body = wait_for(kube, namespace, "digits", "Ready", "True", generation=patched["metadata"]["generation"])
    assert body["status"]["observedGeneration"] == patched["metadata"]["generation"] == 2
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and first.metadata.name in [j.metadata.name for j in jobs(kube, namespace)]:
        time.sleep(1)
    [second] = jobs(kube, namespace)
    assert second.metadata.name != first.metadata.name


@pytest.mark.parametrize("policy, kept", [("Retain", True), ("Delete", False)])
def test_deletion_removes_jobs_and_honours_the_artifact_policy(kube, namespace, claim, inputs, operator,
                                                               artifact_root, policy, kept):
    create(kube, namespace, resource(inputs, changes={"targets": {"edge": []}, "artifactPolicy": policy}))
    body = wait_for(kube, namespace, "digits", "Ready", "True")
    stored = artifact_root / CLAIM / "results" / namespace / "digits"
    assert stored.is_dir()
    api(kube).delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "digits")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            get(kube, namespace, "digits")
            time.sleep(0.5)
        except client.exceptions.ApiException as e:
            assert e.status == 404
            break
    else:
        raise AssertionError(f"still present: {get(kube, namespace, 'digits')['metadata']}")
    # The operator's clean-up ran (the garbage collector alone would also remove the Jobs, not the results).
    wait_until(lambda: "CleanedUp" in [reason for reason, _ in events(kube, namespace)], 30, "the CleanedUp Event")
    assert jobs(kube, namespace) == [] or all(j.metadata.deletion_timestamp for j in jobs(kube, namespace))
    assert stored.is_dir() is kept
    assert body["metadata"]["finalizers"] == ["modelfleet.io/cleanup"]


def test_a_running_job_deleted_by_hand_is_created_again(kube, namespace, claim, inputs, operator):
    create(kube, namespace, resource(inputs, changes={"targets": {"edge": []}}))
    deadline = time.monotonic() + 60
    while not jobs(kube, namespace) and time.monotonic() < deadline:
        time.sleep(0.5)
    [first] = jobs(kube, namespace)
    client.BatchV1Api(kube.api).delete_namespaced_job(first.metadata.name, namespace, propagation_policy="Foreground")
    body = wait_for(kube, namespace, "digits", "Ready", "True")
    [second] = jobs(kube, namespace)
    assert second.metadata.name == first.metadata.name and second.metadata.uid != first.metadata.uid
    assert second.status.succeeded == 1
    assert conditions(body)["Compressed"]["status"] == "True"


def test_a_job_removed_after_its_ttl_is_not_run_again_even_after_a_restart(kube, namespace, claim, inputs,
                                                                             operator):
    create(kube, namespace, resource(inputs, changes={"targets": {"edge": []}, "worker": {"ttlSecondsAfterFinished": 0}}))
    body = wait_for(kube, namespace, "digits", "Ready", "True")
    deadline = time.monotonic() + 60
    while jobs(kube, namespace) and time.monotonic() < deadline:  # Kubernetes' TTL controller removes it
        time.sleep(1)
    assert jobs(kube, namespace) == []
    operator.kill(15)  # a restart reconciles everything again (kopf's initial listing)
    operator.start()
    wait_for_reconcile(operator, namespace, "digits")
    assert jobs(kube, namespace) == []
    assert len([m for reason, m in events(kube, namespace) if reason == "JobCreated"]) == 1
    after = get(kube, namespace, "digits")
    assert conditions(after)["Ready"]["status"] == "True"
    assert after["status"]["evaluation"] == body["status"]["evaluation"]
    # Level-based handlers: kopf keeps nothing of its own on the resource, only our finalizer.
    assert after["metadata"]["finalizers"] == ["modelfleet.io/cleanup"]
    assert not [a for a in after["metadata"].get("annotations", {}) if "kopf" in a or a.startswith("modelfleet.io/")]


@pytest.mark.parametrize("trial", range(3))
def test_operator_killed_at_a_random_point_resumes_and_runs_each_stage_once(kube, namespace, claim, inputs,
                                                                             operator, artifact_root, trial):
    name = f"digits-{trial}"
    create(kube, namespace, resource(inputs, name=name, changes={"targets": {"edge": [], "triton": {
        "repository": f"pvc://{CLAIM}/triton/{namespace}", "modelName": "digits"}}}))
    time.sleep(random.Random(trial).uniform(0.0, 20.0))  # the kill point: compress takes ~15 s, publish a few more
    operator.kill(9)
    operator.start()
    body = wait_for(kube, namespace, name, "Ready", "True")
    stage_of = "modelfleet.io/stage"
    all_jobs = jobs(kube, namespace)
    assert sorted(j.metadata.labels[stage_of] for j in all_jobs) == ["compress", "publish"]  # one Job per stage
    assert all(j.status.succeeded == 1 and not j.status.failed for j in all_jobs)
    # One pod per stage: no Job ran twice, none was deleted and created again.
    pods = client.CoreV1Api(kube.api).list_namespaced_pod(namespace).items
    assert sorted(p.metadata.labels[stage_of] for p in pods) == ["compress", "publish"], [p.metadata.name for p in pods]
    # A second publish would have written version 2.
    assert [p.name for p in (artifact_root / CLAIM / "triton" / namespace / "digits").iterdir() if p.name.isdigit()] == ["1"]
    # At most one JobCreated per stage: a second create finds the Job (409) and posts nothing. (A kill
    # between the create and its Event loses that Event; the Job itself is what counts.)
    created = collections.Counter(m.split()[0] for reason, m in events(kube, namespace) if reason == "JobCreated")
    assert set(created) <= {"compress", "publish"} and max(created.values(), default=0) <= 1, created
    assert conditions(body)["Ready"]["observedGeneration"] == body["metadata"]["generation"]
