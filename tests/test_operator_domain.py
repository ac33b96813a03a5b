"""The operator's pure decisions: Job planning, feasibility, status and conditions (table tests)."""

import copy
import json
from pathlib import Path

import pytest

from conftest import deep_update, digits_example

from modelfleet.api.compressedmodel import CompressedModel, CompressedModelStatus, Condition, EdgeBundleStatus
from modelfleet.api.publication import TritonPublication
from modelfleet.api.result import ResultManifest
from modelfleet.domain import feasibility
from modelfleet.domain.plan import (
    BUNDLE, COMPRESS, PERMANENT_EXIT_CODES, PUBLISH, OperatorSettings, job_image, job_name, pvc_claims, stage_hashes,
    worker_job,
)
from modelfleet.domain.choice import summary as chosen_line
from modelfleet.domain.lifecycle import FINALIZER, needs_reconcile, unhonoured_retry, with_finalizer, without_finalizer
from modelfleet.domain.pods import PodProblem, pod_problem, surfaces_in
from modelfleet.domain.requeue import backoff_seconds
from modelfleet.domain.status import (
    JobState, Observed, Wanted, container_failure, decide, decide_failure, event_type, merge_conditions, noteworthy,
    progress, recorded_outcome, worker_failure,
)

SETTINGS = OperatorSettings(worker_image="modelfleet/worker:test", artifacts="pvc://artifacts/results",
                            image_pull_policy="Never", triton_servers=("http://triton:8000",))
PVC_DATA = {"source": {"uri": "pvc://data/digits/digits.torchscript.pt"},
            "dataset": {"calibration": {"uri": "pvc://data/digits/calibration.npz"},
                        "evaluation": {"uri": "pvc://data/digits/evaluation.npz"}}}
TRITON = {"targets": {"triton": {"repository": "pvc://models/triton", "modelName": "digits",
                                 "serverUrl": "http://triton:8000"}}}


def model(changes: dict | None = None, generation: int = 1) -> CompressedModel:
    manifest = digits_example(Path("/data"), copy.deepcopy(PVC_DATA))
    deep_update(manifest["spec"], copy.deepcopy(changes or {}))
    manifest["metadata"].update(namespace="team-a", generation=generation)
    return CompressedModel.model_validate(manifest)


# --- planning -------------------------------------------------------------------------------------


def test_compress_job_is_deterministic_labelled_owned_and_fails_fast_on_permanent_codes():
    job = worker_job(model(), "uid-1", COMPRESS, SETTINGS)
    digest = stage_hashes(model())[COMPRESS]
    assert job == worker_job(model(), "uid-1", COMPRESS, SETTINGS)
    assert job["metadata"]["name"] == f"digits-compress-{digest}"
    assert job["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "modelfleet",
                                         "modelfleet.io/compressedmodel": "digits",
                                         "modelfleet.io/spec-hash": digest, "modelfleet.io/stage": "compress"}
    [owner] = job["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("CompressedModel", "uid-1", True)
    spec = job["spec"]
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"], spec["ttlSecondsAfterFinished"]) == (2, 3600, 86400)
    fail_fast, ignore_disruption, fail_oom = spec["podFailurePolicy"]["rules"]
    assert fail_fast["action"] == "FailJob" and fail_fast["onExitCodes"]["values"] == PERMANENT_EXIT_CODES
    assert PERMANENT_EXIT_CODES[0] == 1 and PERMANENT_EXIT_CODES[-1] == 127 and 128 not in PERMANENT_EXIT_CODES
    assert ignore_disruption["action"] == "Ignore"
    assert fail_oom["action"] == "FailJob" and fail_oom["onExitCodes"]["values"] == [137]
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["securityContext"]["runAsNonRoot"]
    [container] = pod["containers"]
    assert container["args"] == ["worker", "compress", "-f", "env:MODELFLEET_MANIFEST",
                                 "-o", f"pvc://artifacts/results/team-a/digits/{digest}"]
    assert container["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "8Gi"}}
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/tmp", "/mnt/pvc/artifacts", "/mnt/pvc/data"]
    assert container["imagePullPolicy"] == "Never"


SPLIT_IMAGES = OperatorSettings(worker_image="worker", artifacts="pvc://artifacts/results",
                                torch_worker_image="worker-torch", tflite_worker_image="worker-tflite")
ONNX_SOURCE = {"source": {"uri": "pvc://data/digits/digits.onnx", "format": "onnx"}}
NCNN_ONLY = {"targets": {"edge": [{"name": "arm", "runtime": "ncnn", "precision": "fp32",
                                  "deviceSelector": {"modelfleet.io/class": "arm-board"}}]}}
TRITON_ONLY = {"targets": {**TRITON["targets"], "edge": []}}


@pytest.mark.parametrize("changes, stage, settings, image", [
    # torch sources compress in the torch image, and only their compress Job
    ({}, COMPRESS, SPLIT_IMAGES, "worker-torch"),
    (TRITON, PUBLISH, SPLIT_IMAGES, "worker"),
    ({}, BUNDLE, SPLIT_IMAGES, "worker"),
    # ONNX sources: the worker, unless a TFLite target needs onnx2tf
    ({**ONNX_SOURCE}, COMPRESS, SPLIT_IMAGES, "worker-tflite"),
    ({**ONNX_SOURCE, **NCNN_ONLY}, COMPRESS, SPLIT_IMAGES, "worker"),
    ({**ONNX_SOURCE, **TRITON_ONLY}, COMPRESS, SPLIT_IMAGES, "worker"),
    ({**NCNN_ONLY}, COMPRESS, SPLIT_IMAGES, "worker-torch"),
    # one image for everything when the others are not set
    ({}, COMPRESS, SETTINGS, "modelfleet/worker:test"),
    ({**ONNX_SOURCE}, COMPRESS, SETTINGS, "modelfleet/worker:test"),
])
def test_each_job_runs_the_image_that_carries_what_it_runs(changes, stage, settings, image):
    wanted = model(changes)
    assert job_image(wanted, stage, settings) == image
    assert worker_job(wanted, "uid-1", stage, settings)["spec"]["template"]["spec"]["containers"][0]["image"] == image


@pytest.mark.parametrize("stage", [COMPRESS, PUBLISH])
def test_worker_pods_meet_the_restricted_pod_security_standard(stage):
    pod = worker_job(model(TRITON), "uid-1", stage, SETTINGS)["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] and pod["automountServiceAccountToken"] is False
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                            "readOnlyRootFilesystem": True}
    # the root filesystem is read-only: scratch space (TMPDIR, HOME, the working directory) is an emptyDir
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["TMPDIR"] == env["HOME"] == container["workingDir"] == "/tmp"
    assert {"name": "scratch", "emptyDir": {}} in pod["volumes"]


def test_publish_jobs_carry_the_operators_triton_allow_list():
    env = lambda stage: {e["name"]: e["value"] for e in  # noqa: E731
                         worker_job(model(TRITON), "u", stage, SETTINGS)["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env(PUBLISH)["MODELFLEET_TRITON_SERVERS"] == "http://triton:8000"
    assert "MODELFLEET_TRITON_SERVERS" not in env(COMPRESS)


def test_a_retried_stage_gets_a_job_of_its_own_with_the_same_labels():
    first = worker_job(model(TRITON), "uid-1", PUBLISH, SETTINGS)
    retry = worker_job(model(TRITON), "uid-1", PUBLISH, SETTINGS, attempt="2026-12-01")
    assert retry["metadata"]["name"] != first["metadata"]["name"]
    assert retry == worker_job(model(TRITON), "uid-1", PUBLISH, SETTINGS, attempt="2026-12-01")
    assert retry["metadata"]["labels"] == first["metadata"]["labels"]
    assert retry["metadata"]["annotations"]["modelfleet.io/retry"] == "2026-12-01"
    assert len(retry["metadata"]["name"]) <= 63


def test_manifest_in_the_job_round_trips_to_the_same_spec():
    job = worker_job(model(), "uid-1", COMPRESS, SETTINGS)
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert CompressedModel.model_validate(json.loads(env["MODELFLEET_MANIFEST"])).spec == model().spec


def test_publish_job_and_claims_for_a_triton_target():
    job = worker_job(model(TRITON), "uid-1", PUBLISH, SETTINGS)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:4] == ["publish", "triton", "-f", "env:MODELFLEET_MANIFEST"]
    assert pvc_claims(model(TRITON), SETTINGS) == ["artifacts", "data", "models"]
    assert "envFrom" not in container


def test_s3_credentials_reach_only_the_publish_job():
    with_secret = model({"targets": {"triton": TRITON["targets"]["triton"] | {"repository": "s3://models/triton",
                                                                              "credentialsSecret": "s3-creds"}}})
    publish = worker_job(with_secret, "uid-1", PUBLISH, SETTINGS)["spec"]["template"]["spec"]["containers"][0]
    compress = worker_job(with_secret, "uid-1", COMPRESS, SETTINGS)["spec"]["template"]["spec"]["containers"][0]
    assert publish["envFrom"] == [{"secretRef": {"name": "s3-creds"}}] and "envFrom" not in compress


S3_TRITON = {"targets": {"triton": TRITON["targets"]["triton"] | {"repository": "s3://models/triton"}}}
S3_TRITON_SECRET = {"targets": {"triton": S3_TRITON["targets"]["triton"] | {"credentialsSecret": "triton-creds"}}}
S3_SOURCE = {"source": {"uri": "s3://data/digits.pt"}}


@pytest.mark.parametrize("artifacts, secret, changes, compress_env, publish_env", [
    # pvc:// everywhere: no credentials, whatever the operator has
    ("pvc://artifacts/results", "store-creds", TRITON, None, None),
    # an s3:// artifact store: both stages read or write it
    ("s3://results/modelfleet", "store-creds", TRITON, ["store-creds"], ["store-creds"]),
    # s3:// artifacts but no secret configured: the worker uses whatever its service account gives it
    ("s3://results/modelfleet", None, TRITON, None, None),
    # an s3:// input: compress reads it; publish touches pvc:// only
    ("pvc://artifacts/results", "store-creds", TRITON | S3_SOURCE, ["store-creds"], None),
    # an s3:// Triton repository without its own secret: the store's secret is the fallback
    ("pvc://artifacts/results", "store-creds", S3_TRITON, None, ["store-creds"]),
    # both: the Triton target's secret comes last, so its keys win on the publish Job
    ("s3://results/modelfleet", "store-creds", S3_TRITON_SECRET, ["store-creds"], ["store-creds", "triton-creds"]),
    ("pvc://artifacts/results", None, S3_TRITON_SECRET, None, ["triton-creds"]),
    ("s3://results/modelfleet", "same-creds", {"targets": {"triton": S3_TRITON_SECRET["targets"]["triton"]
                                                           | {"credentialsSecret": "same-creds"}}},
     ["same-creds"], ["same-creds"]),
])
def test_s3_credentials_reach_the_jobs_that_touch_s3(artifacts, secret, changes, compress_env, publish_env):
    settings = OperatorSettings(worker_image="w", artifacts=artifacts, artifacts_secret=secret)
    for stage, expected in ((COMPRESS, compress_env), (PUBLISH, publish_env)):
        container = worker_job(model(changes), "uid-1", stage, settings)["spec"]["template"]["spec"]["containers"][0]
        got = [ref["secretRef"]["name"] for ref in container["envFrom"]] if "envFrom" in container else None
        assert got == expected, stage


def test_an_s3_artifact_store_mounts_no_claim_and_passes_the_uri():
    settings = OperatorSettings(worker_image="w", artifacts="s3://results/modelfleet", artifacts_secret="creds")
    job = worker_job(model(), "uid-1", COMPRESS, settings)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][-2:] == ["-o", f"s3://results/modelfleet/team-a/digits/{stage_hashes(model())[COMPRESS]}"]
    assert pvc_claims(model(), settings) == ["data"]


@pytest.mark.parametrize("changes, recompress, republish", [
    ({}, False, False),
    # what changes the artifacts
    ({"compression": {"calibrationMethod": "entropy"}}, True, True),
    ({"source": {"uri": "pvc://data/other.pt"}}, True, True),
    ({"benchmark": {"runs": 500}}, True, True),
    ({"targets": {"edge": []}}, True, True),
    # what only changes what is published
    ({"targets": {"triton": TRITON["targets"]["triton"] | {"modelName": "digits-v2"}}}, False, True),
    ({"targets": {"triton": TRITON["targets"]["triton"] | {"verification": {"latencyRequests": 500}}}}, False, True),
    ({"slo": {"latencyP95Ms": {"triton": 50}}}, False, True),
    # with precision auto (the default) the SLOs decide which artifact is published, except the edge budgets
    ({"slo": {"maxAccuracyDropPoints": 0.5}}, False, True),
    ({"slo": {"latencyP95Ms": {"onnxruntime": 1}}}, False, True),
    ({"slo": {"latencyP95Ms": {"ncnn": 1}}}, False, False),
    # what changes neither: how Jobs run, what happens on deletion
    ({"worker": {"resources": {"requests": {"cpu": "2"}}, "ttlSecondsAfterFinished": 60, "backoffLimit": 5}}, False, False),
    ({"artifactPolicy": "Delete"}, False, False),
])
def test_stage_hashes_follow_what_each_stage_depends_on(changes, recompress, republish):
    before, after = stage_hashes(model(TRITON)), stage_hashes(model(deep_update(copy.deepcopy(TRITON), changes), 7))
    assert (before[COMPRESS] != after[COMPRESS], before[PUBLISH] != after[PUBLISH]) == (recompress, republish)


def test_with_a_requested_triton_precision_the_slos_only_gate_what_is_published():
    requested = deep_update(copy.deepcopy(TRITON), {"targets": {"triton": {"precision": "int8-static"}}})
    before = stage_hashes(model(requested))
    after = stage_hashes(model(deep_update(copy.deepcopy(requested), {"slo": {"maxAccuracyDropPoints": 0.5}}), 7))
    assert before == after


def test_job_names_fit_kubernetes_limits():
    longest = "m" * 40  # MAX_NAME_LENGTH: the CRD refuses longer names
    assert len(job_name(longest, "compress", "0123456789", attempt="any retry value")) <= 63
    assert job_name("a-b", "publish", "0123456789") == "a-b-publish-0123456789"


# --- feasibility ------------------------------------------------------------------------------------


@pytest.mark.parametrize("changes, reason", [
    ({"dataset": {"evaluation": {"uri": "file://relative/eval.npz"}}}, "RelativePath"),
    ({"dataset": {"evaluation": {"uri": "pvc://data/digits/calibration.npz"}}}, "EvaluationOnCalibrationData"),
    ({"slo": {"latencyP95Ms": {"triton": 5}}}, "NoTritonTarget"),
    ({"source": {"inputs": [{"name": "a", "shape": [-1, 4]}, {"name": "b", "shape": [-1, 4]}]}}, "MultiInputUnsupported"),
])
def test_impossible_specs_are_named(changes, reason):
    assert [r for r, _ in feasibility.problems(model(changes), SETTINGS)] == [reason]


def test_a_feasible_spec_has_no_problems():
    assert feasibility.problems(model(TRITON), SETTINGS) == []


def test_s3_inputs_are_feasible():
    s3_inputs = {"source": {"uri": "s3://data/digits.pt"}, "dataset": {"calibration": {"uri": "s3://data/cal.npz"},
                                                                        "evaluation": {"uri": "s3://data/eval.npz"}}}
    assert feasibility.problems(model(s3_inputs), SETTINGS) == []


S3_STORE = OperatorSettings(worker_image="w", artifacts="s3://results/modelfleet")


@pytest.mark.parametrize("uri, refused", [
    ("s3://results/modelfleet/team-a/digits/0123456789/onnx-fp32/model.onnx", False),  # its own namespace's results
    ("s3://results/modelfleet/team-b/digits/0123456789/onnx-fp32/model.onnx", True),   # another tenant's
    ("s3://results/modelfleet/x.pt", True),                                             # the store's root
    ("s3://results/modelfleet-other/x.pt", False),                                      # another prefix, not the store
    ("s3://data/team-b/x.pt", False),                                                   # outside the store
])
def test_a_source_in_another_namespaces_part_of_the_store_is_refused(uri, refused):
    problems = feasibility.problems(model({"source": {"uri": uri}}), S3_STORE)
    assert ([r for r, _ in problems] == ["OtherNamespace"]) is refused
    assert problems == [] or "team-a" in problems[0][1]


@pytest.mark.parametrize("url, allowed", [
    ("http://triton:8000", True),
    ("http://triton:8000/v2", True),            # the path is not what the allow-list guards
    ("http://TRITON:8000", True),
    ("http://triton:8001", False),
    ("https://triton:8000", False),
    ("http://triton.evil:8000", False),
    ("http://169.254.169.254:80", False),       # cloud metadata, the classic target
    ("http://triton:8000@169.254.169.254", False),
])
def test_a_triton_server_outside_the_operators_allow_list_is_refused(url, allowed):
    triton = {"targets": {"triton": TRITON["targets"]["triton"] | {"serverUrl": url}}}
    reasons = [r for r, _ in feasibility.problems(model(triton), SETTINGS)]
    assert reasons == ([] if allowed else ["ServerNotAllowed"])


def test_without_an_allow_list_no_triton_server_is_reachable():
    problems = feasibility.problems(model(TRITON), OperatorSettings(worker_image="w", artifacts="pvc://a/r"))
    assert [r for r, _ in problems] == ["ServerNotAllowed"] and "MODELFLEET_TRITON_SERVERS" in problems[0][1]


# --- status -------------------------------------------------------------------------------------------


def result(passed_drop: float = 0.19) -> ResultManifest:
    artifact = {"runtime": "onnxruntime", "files": ["x/model.onnx"], "sha256": "a" * 64, "sizeBytes": 1000,
                "accuracy": 99.0, "agreement": {"top1": 99.0, "maxAbsDiff": 0.1},
                "latency": {"p50Ms": 0.1, "p95Ms": 0.2, "runs": 10, "threads": 1, "batchSize": 1}}
    return ResultManifest.model_validate({
        "modelName": "digits", "source": {"uri": "pvc://x", "format": "torchscript", "sha256": "b" * 64},
        "baseline": {"artifact": "onnx-fp32", "accuracy": 99.2, "evaluatedSamples": 540},
        "artifacts": [artifact | {"name": "onnx-fp32", "precision": "fp32", "role": "baseline", "accuracyDropPoints": 0},
                      artifact | {"name": "onnx-int8-static", "precision": "int8-static", "role": "candidate",
                                  "accuracyDropPoints": passed_drop, "sizeBytes": 300},
                      *(artifact | {"name": f"{runtime}-{precision}-{target}", "runtime": runtime, "precision": precision,
                                    "target": target, "role": "candidate", "accuracyDropPoints": 0,
                                    "latency": artifact["latency"] | {"p95Ms": p95}}
                        for runtime, precision, target, p95 in (("ncnn", "fp32", "arm-boards", 0.5),
                                                                ("ncnn", "fp16", "arm-boards", 0.3),
                                                                ("tflite", "fp32", "phones", 0.4)))],
        "verdict": {"passed": True}, "durationSeconds": 9.0})


def publication(state: str, reason: str) -> TritonPublication:
    return TritonPublication(model_name="digits", repository="pvc://models/triton", artifact="onnx-int8-static",
                             version=3, state=state, reason=reason, message=f"{reason} text")


def summary(decision) -> dict:
    return {c.type: (c.status, c.reason) for c in decision.conditions} | {"create": decision.create}


@pytest.mark.parametrize("changes, observed, expected", [
    ({}, Observed(), {"SpecValid": ("True", "Valid"), "Compressed": ("Unknown", "Compressing"),
                      "SLOMet": ("Unknown", "AwaitingResult"), "Ready": ("False", "Compressing"), "create": [COMPRESS]}),
    ({}, Observed(compress=JobState("Running")), {"Compressed": ("Unknown", "Compressing"), "create": []}),
    ({}, Observed(compress=JobState("Failed", "ChecksumMismatch", "sha256 differs")),
     {"Compressed": ("False", "ChecksumMismatch"), "Ready": ("False", "ChecksumMismatch"), "create": []}),
    ({}, Observed(compress=JobState("Succeeded")), {"Compressed": ("False", "ResultMissing")}),
    ({}, Observed(compress=JobState("Succeeded"), result=result()),
     {"Compressed": ("True", "Compressed"), "SLOMet": ("True", "SLOMet"), "Ready": ("True", "Ready"), "create": []}),
    ({"slo": {"maxAccuracyDropPoints": 0.1}}, Observed(compress=JobState("Succeeded"), result=result()),
     {"SLOMet": ("False", "SLONotMet"), "Ready": ("False", "SLONotMet")}),
    (TRITON, Observed(compress=JobState("Running")), {"Published": ("Unknown", "AwaitingGate")}),
    (TRITON, Observed(compress=JobState("Succeeded"), result=result()),
     {"Published": ("Unknown", "Publishing"), "Ready": ("False", "Publishing"), "create": [PUBLISH]}),
    (TRITON, Observed(compress=JobState("Succeeded"), result=result(), publish=JobState("Succeeded"),
                      publication=publication("Served", "Served")),
     {"Published": ("True", "Served"), "Ready": ("True", "Ready"), "create": []}),
    (TRITON, Observed(compress=JobState("Succeeded"), result=result(), publish=JobState("Failed", "LoadFailed", "x")),
     {"Published": ("False", "LoadFailed"), "Ready": ("False", "LoadFailed")}),
    # the publication beside the result is an earlier attempt's: the failed Job's own reason counts
    (TRITON, Observed(compress=JobState("Succeeded"), result=result(), publish=JobState("Failed", "Retryable", "killed"),
                      publication=publication("Served", "Served")),
     {"Published": ("False", "Retryable"), "Ready": ("False", "Retryable")}),
    (TRITON, Observed(compress=JobState("Succeeded"), result=result(), publish=JobState("Succeeded")),
     {"Published": ("False", "PublicationMissing")}),
    # the previous spec's publish still stops (and rolls back): the new one waits, never overlapping it
    (TRITON, Observed(compress=JobState("Succeeded"), result=result(), previous_publish_stopping=True),
     {"Published": ("Unknown", "AwaitingPreviousPublish"), "Ready": ("False", "Publishing"), "create": []}),
    (TRITON, Observed(compress=JobState("Succeeded"), result=result(), publish=JobState("Failed", "Retryable", "dead")),
     {"Published": ("False", "Retryable"), "Ready": ("False", "Retryable")}),
    ({"source": {"uri": "file://m.pt"}}, Observed(), {"SpecValid": ("False", "RelativePath"),
                                                      "Ready": ("False", "RelativePath"), "create": []}),
    ({"source": {"uri": "s3://b/m.pt"}}, Observed(), {"SpecValid": ("True", "Valid"), "create": [COMPRESS]}),
])
def test_decide(changes, observed, expected):
    decision = decide(model(changes), feasibility.problems(model(changes), SETTINGS), observed, "pvc://artifacts/r")
    got = summary(decision)
    assert {k: got.get(k) for k in expected} == expected


DONE = Observed(compress=JobState("Succeeded"), result=result())
BUNDLE_STATUS = EdgeBundleStatus(target="arm-boards", version=1, source="h/ncnn-fp16-arm-boards",
                                 artifact="ncnn-fp16-arm-boards")


def rolled_out(status: str, reason: str) -> tuple[Wanted, ...]:
    halted = ("True", "FailureThreshold") if reason == "Halted" else ("False", "NoBreach")
    return Wanted("RolledOut", status, reason, "2 of 5 devices updated"), Wanted("RolloutHalted", *halted, "x")


CURRENT = {"Reconciling": ("False", "Current"), "Stalled": ("False", "Current")}


def in_flight(reason: str) -> dict:
    return {"Reconciling": ("True", reason), "Stalled": ("False", "Progressing")}


def stalled(reason: str) -> dict:
    return {"Reconciling": ("False", "Stalled"), "Stalled": ("True", reason)}


@pytest.mark.parametrize("changes, observed, extra, expected", [
    # work the operator carries on by itself
    ({}, Observed(), (), in_flight("Compressing")),
    ({}, Observed(compress=JobState("Running")), (), in_flight("Compressing")),
    (TRITON, DONE, (), in_flight("Publishing")),
    (TRITON, Observed(compress=JobState("Succeeded"), result=result(), previous_publish_stopping=True), (),
     in_flight("Publishing")),
    ({}, Observed(compress=JobState("Failed", "Retryable", "store down"), retry="1"), (), in_flight("Compressing")),
    ({}, Observed(compress=JobState("Succeeded"), result=result(), bundles=(BUNDLE_STATUS,)), (),
     in_flight("Bundling")),
    ({}, DONE, rolled_out("False", "WaveBaking"), in_flight("WaveBaking")),
    ({}, DONE, rolled_out("False", "AwaitingDevices"), in_flight("AwaitingDevices")),
    # nothing more happens without someone's change
    ({"source": {"uri": "file://m.pt"}}, Observed(), (), stalled("RelativePath")),
    ({}, Observed(compress=JobState("Failed", "ChecksumMismatch", "sha256 differs")), (), stalled("ChecksumMismatch")),
    ({}, Observed(compress=JobState("Failed", "Retryable", "store down")), (), stalled("Retryable")),
    ({}, Observed(compress=JobState("Succeeded")), (), stalled("ResultMissing")),
    ({"slo": {"maxAccuracyDropPoints": 0.1}}, DONE, (), stalled("SLONotMet")),
    ({}, Observed(compress=JobState("Running", "ImagePullBackOff", "pod x: image not found")), (),
     stalled("ImagePullBackOff")),
    (TRITON, Observed(compress=JobState("Succeeded"), result=result(), publish=JobState("Failed", "LoadFailed", "x")),
     (), stalled("LoadFailed")),
    ({}, Observed(compress=JobState("Succeeded"), result=result(), bundle=JobState("Failed", "SigningFailed", "no key"),
                  bundles=(BUNDLE_STATUS,)), (), stalled("SigningFailed")),
    ({}, DONE, rolled_out("False", "Halted"), stalled("FailureThreshold")),
    # done for this generation
    ({}, DONE, (), CURRENT),
    (TRITON, Observed(compress=JobState("Succeeded"), result=result(), publish=JobState("Succeeded"),
                      publication=publication("Served", "Served")), (), CURRENT),
    ({}, DONE, rolled_out("True", "Completed"), CURRENT),
    ({}, DONE, rolled_out("False", "Paused"), CURRENT),     # paused by the spec: Argo CD's Suspended
    ({}, DONE, rolled_out("False", "NoDevices"), CURRENT),  # the first device to enrol starts it
])
def test_reconciling_and_stalled_follow_the_other_conditions(changes, observed, extra, expected):
    decision = decide(model(changes), feasibility.problems(model(changes), SETTINGS), observed, "pvc://artifacts/r")
    got = {w.type: (w.status, w.reason) for w in progress([*decision.conditions, *extra])}
    assert got == expected


def test_reconciling_and_stalled_carry_the_message_that_explains_them():
    conditions = decide(model({"slo": {"maxAccuracyDropPoints": 0.1}}), [], DONE, "r").conditions
    reconciling, stalled_ = progress(conditions)
    assert stalled_.message == next(c.message for c in conditions if c.type == "Ready") != ""
    assert reconciling.message == ""
    assert not noteworthy(stalled_) and not noteworthy(reconciling)  # the Ready change posts the Event


def test_decide_reports_artifacts_and_the_int8_columns():
    decision = decide(model(), [], Observed(compress=JobState("Succeeded"), result=result()), "pvc://artifacts/r")
    assert [a.uri for a in decision.artifacts][:2] == ["pvc://artifacts/r/onnx-fp32", "pvc://artifacts/r/onnx-int8-static"]
    assert (decision.evaluation.int8_accuracy_drop_points, decision.evaluation.int8_size_bytes) == (0.19, 300)
    assert decide(model(), [], Observed(), "x").artifacts is None  # while compressing, status keeps what it had


EDGE_CHOICE = "arm-boards=ncnn-fp16-arm-boards phones=tflite-fp32-phones"


@pytest.mark.parametrize("changes, chosen, slo_met", [
    # equal p95s: the smaller int8 ships; ncnn fp16 is faster than fp32; phones asked for fp32
    ({}, f"triton=onnx-int8-static {EDGE_CHOICE}", "True"),
    # int8 misses a tighter drop SLO: Triton gets fp32, and what ships meets the SLOs
    ({"slo": {"maxAccuracyDropPoints": 0.1}}, f"triton=onnx-fp32 {EDGE_CHOICE}", "True"),
    # a requested int8 is held to that SLO
    ({"targets": {"triton": {"precision": "int8-static"}}, "slo": {"maxAccuracyDropPoints": 0.1}},
     f"triton=onnx-int8-static {EDGE_CHOICE}", "False"),
    # an ncnn budget neither ncnn artifact meets: arm-boards is left without one
    ({"slo": {"latencyP95Ms": {"ncnn": 0.1}}}, "triton=onnx-int8-static arm-boards=none phones=tflite-fp32-phones",
     "False"),
])
def test_the_status_names_the_choice_per_target_under_the_current_slos(changes, chosen, slo_met):
    spec = model(deep_update(copy.deepcopy(TRITON), changes))
    decision = decide(spec, [], Observed(compress=JobState("Succeeded"), result=result()), "pvc://artifacts/r")
    assert chosen_line(decision.choices) == chosen
    assert summary(decision)["SLOMet"][0] == slo_met
    if slo_met == "True":
        assert summary(decision)["create"] == [PUBLISH]  # the publish Job reads the same choice from the result


def test_the_losers_say_why_in_the_status():
    decision = decide(model(TRITON), [], Observed(compress=JobState("Succeeded"), result=result()), "pvc://artifacts/r")
    boards = next(c for c in decision.choices if c.target == "arm-boards")
    assert [(lost.artifact, lost.reason) for lost in boards.losers] == [
        ("ncnn-fp32-arm-boards", "median 0.500 ms: ncnn-fp16-arm-boards is 1.67x [1.67, 1.67] faster")]
    triton = decision.choices[0]
    assert [(lost.artifact, lost.reason) for lost in triton.losers] == [
        ("onnx-fp32", "larger than onnx-int8-static (1000 B > 300 B) and not shown faster than it (1.00x [1.00, 1.00])")]
    slo_met = next(c for c in decision.conditions if c.type == "SLOMet")
    assert slo_met.message.endswith(f"ships triton=onnx-int8-static {EDGE_CHOICE}")


def test_merge_conditions_moves_transition_time_only_on_status_change():
    old = [Condition(type="Ready", status="False", reason="Compressing", last_transition_time="t0"),
           Condition(type="Compressed", status="Unknown", reason="Compressing", last_transition_time="t0")]
    wanted = [Wanted("Compressed", "Unknown", "Compressing"), Wanted("Ready", "False", "SLONotMet", "too slow")]
    merged, changed = merge_conditions(old, wanted, 4, "t1")
    assert [(c.type, c.last_transition_time, c.observed_generation) for c in merged] == [
        ("Compressed", "t0", 4), ("Ready", "t0", 4)]
    assert [c.type for c in changed] == ["Ready"]  # same status, new reason: an Event, no transition
    merged, changed = merge_conditions(merged, [Wanted("Ready", "True", "Ready")], 4, "t2")
    assert [(c.type, c.last_transition_time) for c in merged] == [("Ready", "t2")] and len(changed) == 1


@pytest.mark.parametrize("wanted, kind", [
    (Wanted("Ready", "False", "Compressing"), "Normal"),
    (Wanted("Ready", "False", "SLONotMet"), "Warning"),
    (Wanted("Compressed", "False", "InvalidSource"), "Warning"),
    (Wanted("Ready", "True", "Ready"), "Normal"),
    (Wanted("SLOMet", "Unknown", "AwaitingResult"), "Normal"),
])
def test_event_type(wanted, kind):
    assert event_type(wanted) == kind


@pytest.mark.parametrize("wanted, posted", [
    (Wanted("SpecValid", "True", "Valid"), False),
    (Wanted("Compressed", "Unknown", "Compressing"), False),
    (Wanted("Ready", "False", "Compressing"), False),
    (Wanted("Compressed", "True", "Compressed"), True),
    (Wanted("SpecValid", "False", "RelativePath"), True),
    (Wanted("Ready", "True", "Ready"), True),
])
def test_noteworthy_changes_get_events(wanted, posted):
    assert noteworthy(wanted) is posted


def condition(type_: str, status: str, reason: str, generation: int) -> Condition:
    return Condition(type=type_, status=status, reason=reason, message=f"{reason} text", last_transition_time="t0",
                     observed_generation=generation)


def status(*conditions: Condition, compress: str = "c1", publish: str = "p1") -> CompressedModelStatus:
    return CompressedModelStatus(conditions=list(conditions), spec_hashes={COMPRESS: compress, PUBLISH: publish})


@pytest.mark.parametrize("recorded, stage, condition_type, expected", [
    (status(), COMPRESS, "Compressed", JobState("Missing")),
    (status(condition("Compressed", "Unknown", "Compressing", 2)), COMPRESS, "Compressed", JobState("Missing")),
    (status(condition("Compressed", "True", "Compressed", 2)), COMPRESS, "Compressed", JobState("Succeeded")),
    (status(condition("Compressed", "False", "InvalidSource", 2)), COMPRESS, "Compressed",
     JobState("Failed", "InvalidSource", "InvalidSource text")),
    # recorded for another compress hash: an earlier spec's outcome
    (status(condition("Compressed", "True", "Compressed", 2), compress="c0"), COMPRESS, "Compressed", JobState("Missing")),
    # a later generation whose change left the stage alone (an SLO, the TTL): still this stage's outcome
    (status(condition("Compressed", "True", "Compressed", 1)), COMPRESS, "Compressed", JobState("Succeeded")),
    (status(condition("Compressed", "True", "Compressed", 2), condition("Published", "False", "LoadFailed", 2)),
     PUBLISH, "Published", JobState("Failed", "LoadFailed", "LoadFailed text")),
    (status(condition("Published", "True", "Served", 2), publish="p0"), PUBLISH, "Published", JobState("Missing")),
])
def test_a_removed_job_stands_for_the_outcome_the_status_recorded(recorded, stage, condition_type, expected):
    digest = {COMPRESS: "c1", PUBLISH: "p1"}[stage]
    assert recorded_outcome(recorded, stage, digest, condition_type) == expected


def test_a_job_removed_after_its_ttl_is_not_run_again():
    recorded = status(condition("Compressed", "True", "Compressed", 1), condition("Published", "True", "Served", 1))
    observed = Observed(compress=recorded_outcome(recorded, COMPRESS, "c1", "Compressed"), result=result(),
                        publish=recorded_outcome(recorded, PUBLISH, "p1", "Published"),
                        publication=publication("Served", "Served"))
    assert summary(decide(model(TRITON), [], observed, "pvc://artifacts/r")) == {
        "SpecValid": ("True", "Valid"), "Compressed": ("True", "Compressed"), "SLOMet": ("True", "SLOMet"),
        "Published": ("True", "Served"), "Ready": ("True", "Ready"), "create": []}


# --- retries, stuck pods, failed reconciles ---------------------------------------------------------


@pytest.mark.parametrize("observed, expected, attempt", [
    # a publish that failed is run again, without recompressing
    (Observed(compress=JobState("Succeeded"), result=result(), publish=JobState("Failed", "Retryable", "dead"),
              publication=publication("Failed", "NotReady"), retry="1"),
     {"Compressed": ("True", "Compressed"), "Published": ("Unknown", "Publishing"), "create": [PUBLISH]}, "1"),
    # a failed compress runs again
    (Observed(compress=JobState("Failed", "Retryable", "store down"), retry="1"),
     {"Compressed": ("Unknown", "Compressing"), "create": [COMPRESS]}, "1"),
    # nothing failed: nothing to run again
    (Observed(compress=JobState("Running"), retry="1"), {"Compressed": ("Unknown", "Compressing"), "create": []}, None),
    (Observed(compress=JobState("Succeeded"), result=result(), publish=JobState("Succeeded"),
              publication=publication("Served", "Served"), retry="1"), {"Ready": ("True", "Ready"), "create": []}, None),
    # no retry asked for (or honoured already): the failure stands
    (Observed(compress=JobState("Succeeded"), result=result(), publish=JobState("Failed", "Retryable", "dead")),
     {"Published": ("False", "Retryable"), "create": []}, None),
])
def test_a_retry_runs_the_failed_stage_again_once(observed, expected, attempt):
    decision = decide(model(TRITON), [], observed, "pvc://artifacts/r")
    got = summary(decision)
    assert {k: got.get(k) for k in expected} == expected and decision.attempt == attempt


@pytest.mark.parametrize("annotations, recorded, expected", [
    ({}, None, None),
    ({"modelfleet.io/retry": "1"}, None, "1"),
    ({"modelfleet.io/retry": "1"}, "1", None),   # honoured once
    ({"modelfleet.io/retry": "2"}, "1", "2"),    # a new value asks again
    ({"modelfleet.io/retry": ""}, None, ""),
])
def test_a_retry_annotation_is_honoured_once_per_value(annotations, recorded, expected):
    resource = {"metadata": {"annotations": annotations}, "status": {"retry": recorded} if recorded else {}}
    assert unhonoured_retry(resource) == expected


def test_a_stuck_pod_shows_in_the_conditions_while_the_job_runs():
    observed = Observed(compress=JobState("Running", "ImagePullBackOff", "pod x: image not found"))
    got = summary(decide(model(), [], observed, "r"))
    assert got["Compressed"] == ("Unknown", "ImagePullBackOff") and got["Ready"] == ("False", "ImagePullBackOff")
    assert got["create"] == []
    stuck = Wanted("Compressed", "Unknown", "ImagePullBackOff", "pod x: image not found")
    assert noteworthy(stuck) and event_type(stuck) == "Warning"


def pod(conditions=(), waiting: tuple[str, str] | None = None) -> dict:
    statuses = [{"name": "worker", "state": {"waiting": {"reason": waiting[0], "message": waiting[1]}}}] if waiting else []
    return {"metadata": {"name": "digits-compress-x-abcde"},
            "status": {"conditions": list(conditions), "containerStatuses": statuses}}


UNSCHEDULABLE = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "lastTransitionTime": "2026-12-01T09:30:00Z",
                 "message": "0/1 nodes are available: persistentvolumeclaim \"models\" not found."}


@pytest.mark.parametrize("resource, expected", [
    (pod(), None),
    (pod([{"type": "PodScheduled", "status": "True"}]), None),
    (pod(waiting=("ContainerCreating", "")), None),  # merely starting
    (pod([UNSCHEDULABLE]), ("Unschedulable", 'persistentvolumeclaim "models" not found')),
    (pod(waiting=("ErrImageNeverPull", "image modelfleet/worker:x is not present")), ("ErrImageNeverPull", "not present")),
    (pod(waiting=("ImagePullBackOff", "Back-off pulling image")), ("ImagePullBackOff", "Back-off")),
    (pod(waiting=("CreateContainerConfigError", 'secret "s3-creds" not found')),
     ("CreateContainerConfigError", 'secret "s3-creds" not found')),
])
def test_pod_problems_name_why_a_pod_cannot_start(resource, expected):
    problem = pod_problem(resource)
    if expected is None:
        assert problem is None
    else:
        assert problem.reason == expected[0] and expected[1] in problem.message
        assert "digits-compress-x-abcde" in problem.message


UNSCHEDULABLE_SINCE = 1796117400.0  # 2026-12-01T09:30:00Z


@pytest.mark.parametrize("problem, now, grace, expected", [
    (PodProblem("ImagePullBackOff", "m"), UNSCHEDULABLE_SINCE, 20, 0.0),  # a stuck container: at once
    (PodProblem("Unschedulable", "m", UNSCHEDULABLE_SINCE), UNSCHEDULABLE_SINCE + 5, 20, 15.0),
    (PodProblem("Unschedulable", "m", UNSCHEDULABLE_SINCE), UNSCHEDULABLE_SINCE + 20, 20, 0.0),
    (PodProblem("Unschedulable", "m", UNSCHEDULABLE_SINCE), UNSCHEDULABLE_SINCE + 300, 20, 0.0),
    (PodProblem("Unschedulable", "m", UNSCHEDULABLE_SINCE), UNSCHEDULABLE_SINCE, 0, 0.0),  # grace switched off
    (PodProblem("Unschedulable", "m", None), UNSCHEDULABLE_SINCE, 20, 0.0),  # no transition time: at once
])
def test_an_unschedulable_pod_surfaces_after_its_grace_period(problem, now, grace, expected):
    assert surfaces_in(problem, now, grace) == pytest.approx(expected)


def test_the_unschedulable_transition_time_is_read_from_the_pod():
    assert pod_problem(pod([UNSCHEDULABLE])).since == UNSCHEDULABLE_SINCE
    assert pod_problem(pod([{**UNSCHEDULABLE, "lastTransitionTime": "not a time"}])).since is None


@pytest.mark.parametrize("text, code, reason, message", [
    ("InvalidSource: no such file (x.pt)", 4, "InvalidSource", "no such file (x.pt) (exit code 4)"),
    ("Traceback (most recent call last):\n  File x", 1, "", "worker exited 1: Traceback"),
    ("snake_case: not a reason", 2, "", "worker exited 2: snake_case"),     # would fail the status' schema
    ("Foo bar: x", 2, "", "worker exited 2: Foo bar"),
    ("X" * 100 + ": too long a word", 2, "", "worker exited 2"),
    ("", 137, "", "worker exited 137"),
    ("Retryable: ", 128, "", "worker exited 128"),
])
def test_a_termination_message_gives_a_reason_only_when_it_is_a_camel_case_word(text, code, reason, message):
    got_reason, got_message = worker_failure(text, code)
    assert got_reason == reason and got_message.startswith(message)


def pod_failure_action(job: dict, exit_code: int, conditions: tuple[str, ...] = ()) -> str:
    """What the Job controller does with a failed pod under the Job's podFailurePolicy: the first matching rule's
    action, or Count (the failure counts against backoffLimit, and a new pod runs while that allows)."""
    for rule in job["spec"]["podFailurePolicy"]["rules"]:
        codes = rule.get("onExitCodes")
        if codes and (exit_code in codes["values"]) == (codes["operator"] == "In"):
            return rule["action"]
        if any(c["type"] in conditions for c in rule.get("onPodConditions", [])):
            return rule["action"]
    return "Count"


@pytest.mark.parametrize("exit_code, conditions, action", [
    (4, (), "FailJob"),                      # the worker's own permanent reason
    (137, (), "FailJob"),                    # OOM-killed: a retry under the same limit is killed again
    (137, ("DisruptionTarget",), "Ignore"),  # killed by a preemption, an eviction, a node shutdown: runs again
    (143, (), "Count"),                      # SIGTERM: retried up to backoffLimit
    (128, (), "Count"),                      # the worker's Retryable
])
def test_an_oom_killed_worker_fails_its_job_at_once_and_a_disrupted_one_runs_again(exit_code, conditions, action):
    for stage, spec in ((COMPRESS, {}), (PUBLISH, TRITON)):
        assert pod_failure_action(worker_job(model(spec), "uid-1", stage, SETTINGS), exit_code, conditions) == action


# A worker container the kernel killed at its memory limit: its termination message is the log tail
# (terminationMessagePolicy FallbackToLogsOnError), which says nothing about why.
OOM_KILLED = {"reason": "OOMKilled", "exitCode": 137, "message": "calibrating onnx-int8-static\n"}


@pytest.mark.parametrize("stage, changes, terminated, reason, parts", [
    (COMPRESS, {}, OOM_KILLED, "WorkerOOMKilled",
     ["the compress worker of pvc://data/digits/digits.torchscript.pt", "killed by the kernel for running out of memory",
      "memory limit of 8Gi (spec.worker.resources.limits.memory)", "modelfleet.io/retry", "(exit code 137)"]),
    (COMPRESS, {"worker": {"resources": {"limits": {"memory": "512Mi"}}}}, OOM_KILLED, "WorkerOOMKilled",
     ["memory limit of 512Mi"]),
    (COMPRESS, {"worker": {"resources": {"limits": {"memory": None}}}}, OOM_KILLED, "WorkerOOMKilled",
     ["no memory limit, so its node ran out of memory", "set spec.worker.resources.limits.memory"]),
    (PUBLISH, TRITON, OOM_KILLED, "WorkerOOMKilled", ["the publish worker of pvc://data/digits/", "limit of 8Gi"]),
    # not the OOM killer's: what the worker wrote decides
    (COMPRESS, {}, {"reason": "Error", "exitCode": 4, "message": "InvalidSource: no such file"}, "InvalidSource",
     ["no such file (exit code 4)"]),
    (COMPRESS, {}, {"reason": "Error", "exitCode": 137, "message": ""}, "", ["worker exited 137"]),
])
def test_an_oom_killed_worker_is_named_with_its_memory_limit_and_model(stage, changes, terminated, reason, parts):
    job = worker_job(model(changes), "uid-1", stage, SETTINGS)
    got_reason, message = container_failure(terminated, job)
    assert got_reason == reason
    assert all(part in message for part in parts), message


def test_an_oom_kill_in_a_job_made_elsewhere_is_still_named():
    reason, message = container_failure(OOM_KILLED, {"metadata": {"name": "x"}, "spec": {}})
    assert reason == "WorkerOOMKilled" and "the ? worker of ?" in message and "no memory limit" in message


def test_an_oom_killed_compression_ends_stalled_without_a_new_job():
    oom = Wanted("Compressed", "False", *container_failure(OOM_KILLED, worker_job(model(), "uid-1", COMPRESS, SETTINGS)))
    decision = decide(model(), [], Observed(compress=JobState("Failed", oom.reason, oom.message)), "pvc://artifacts/r")
    got = summary(decision)
    assert got["Compressed"] == ("False", "WorkerOOMKilled") and got["Ready"] == ("False", "WorkerOOMKilled")
    assert got["create"] == [] and decision.attempt is None
    ready = next(c for c in decision.conditions if c.type == "Ready")
    assert "memory limit of 8Gi" in ready.message
    assert {w.type: (w.status, w.reason) for w in progress(decision.conditions)} == stalled("WorkerOOMKilled")
    assert noteworthy(oom) and event_type(oom) == "Warning"
    # the failure is kept once Kubernetes removed the Job: it is not run again under the same spec
    recorded = status(Condition(type="Compressed", status="False", reason=oom.reason, message=oom.message,
                                last_transition_time="t0", observed_generation=1), compress="c1")
    assert recorded_outcome(recorded, COMPRESS, "c1", "Compressed") == JobState("Failed", oom.reason, oom.message)


RETRYING = {"Reconciling": ("True", "Forbidden"), "Stalled": ("False", "Progressing")}  # retried by the operator


@pytest.mark.parametrize("ready, expected", [
    (None, {"Reconciled": ("False", "Forbidden"), "Ready": ("False", "Forbidden"), **RETRYING}),
    ("False", {"Reconciled": ("False", "Forbidden"), "Ready": ("False", "Forbidden"), **RETRYING}),
    ("True", {"Reconciled": ("False", "Forbidden"), **RETRYING}),  # what is served stays in service: Ready stays
])
def test_a_failed_reconcile_is_named_in_the_conditions(ready, expected):
    recorded = status(*([condition("Ready", ready, "Ready" if ready == "True" else "Compressing", 1)] if ready else []))
    wanted = decide_failure(recorded, "Forbidden", "create job: 403 Forbidden: exceeded quota")
    assert {w.type: (w.status, w.reason) for w in wanted} == expected
    assert all(w.message == "create job: 403 Forbidden: exceeded quota" for w in wanted if w.status != "False"
               or w.type != "Stalled")


def test_a_partial_merge_keeps_the_other_conditions():
    old = [condition("Compressed", "True", "Compressed", 1), condition("Ready", "True", "Ready", 1)]
    merged, changed = merge_conditions(old, [Wanted("Reconciled", "False", "ApiServerError", "500")], 1, "t1",
                                       keep_others=True)
    assert [(c.type, c.status) for c in merged] == [("Compressed", "True"), ("Ready", "True"), ("Reconciled", "False")]
    assert [c.type for c in changed] == ["Reconciled"]


@pytest.mark.parametrize("failures, expected", [(0, 0), (1, 1), (2, 2), (3, 4), (6, 32), (9, 256), (10, 300), (500, 300)])
def test_backoff_doubles_from_the_base_up_to_the_cap(failures, expected):
    assert backoff_seconds(failures, 1.0, 300.0) == expected


# --- lifecycle ------------------------------------------------------------------------------------


def body(generation: int = 1, observed: int | None = None, finalizers=(FINALIZER,), deleting: bool = False) -> dict:
    meta = {"name": "digits", "generation": generation, "finalizers": list(finalizers)}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-26T00:00:00Z"
    return {"metadata": meta, "status": {} if observed is None else {"observedGeneration": observed}}


@pytest.mark.parametrize("event, resource, expected", [
    (None, body(observed=1), True),  # the initial listing: a restart looks at everything
    ("ADDED", body(finalizers=()), True),  # new
    ("MODIFIED", body(observed=1), False),  # our own status write coming back
    ("MODIFIED", body(generation=2, observed=1), True),  # a spec change
    ("MODIFIED", body(observed=1, finalizers=()), True),  # the finalizer was removed by hand
    ("MODIFIED", body(observed=1, deleting=True), True),  # deletion our finalizer holds
    ("MODIFIED", body(observed=1, finalizers=("other",), deleting=True), False),  # another's finalizer holds it
    ("DELETED", body(observed=1), False),
    ("MODIFIED", body(observed=1) | {"metadata": {"generation": 1, "finalizers": [FINALIZER],
                                                   "annotations": {"modelfleet.io/retry": "now"}}}, True),
])
def test_needs_reconcile(event, resource, expected):
    assert needs_reconcile(event, resource) is expected


@pytest.mark.parametrize("finalizers, added, removed", [
    (None, [FINALIZER], None),
    (["other"], ["other", FINALIZER], None),
    ([FINALIZER], None, []),
    (["other", FINALIZER], None, ["other"]),
])
def test_finalizer_lists(finalizers, added, removed):
    assert with_finalizer(finalizers) == added
    assert without_finalizer(finalizers) == removed
