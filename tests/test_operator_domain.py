"""The operator's pure decisions: Job planning, feasibility, status and conditions (table tests)."""

import copy
import json
from pathlib import Path

import pytest

from conftest import deep_update, digits_example

from modelfleet.api.compressedmodel import CompressedModel, Condition
from modelfleet.api.publication import TritonPublication
from modelfleet.api.result import ResultManifest
from modelfleet.domain import feasibility
from modelfleet.domain.plan import (
    COMPRESS, PERMANENT_EXIT_CODES, PUBLISH, OperatorSettings, job_name, pvc_claims, spec_hash, worker_job,
)
from modelfleet.domain.lifecycle import FINALIZER, needs_reconcile, with_finalizer, without_finalizer
from modelfleet.domain.status import (
    JobState, Observed, Wanted, decide, event_type, merge_conditions, noteworthy, recorded_outcome,
)

SETTINGS = OperatorSettings(worker_image="modelfleet/worker:test", artifacts="pvc://artifacts/results",
                            image_pull_policy="Never")
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
    digest = spec_hash(model())
    assert job == worker_job(model(), "uid-1", COMPRESS, SETTINGS)
    assert job["metadata"]["name"] == f"digits-compress-{digest}"
    assert job["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "modelfleet",
                                         "modelfleet.io/compressedmodel": "digits",
                                         "modelfleet.io/spec-hash": digest, "modelfleet.io/stage": "compress"}
    [owner] = job["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("CompressedModel", "uid-1", True)
    spec = job["spec"]
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"], spec["ttlSecondsAfterFinished"]) == (2, 3600, 86400)
    fail_fast, ignore_disruption = spec["podFailurePolicy"]["rules"]
    assert fail_fast["action"] == "FailJob" and fail_fast["onExitCodes"]["values"] == PERMANENT_EXIT_CODES
    assert PERMANENT_EXIT_CODES[0] == 1 and PERMANENT_EXIT_CODES[-1] == 127 and 128 not in PERMANENT_EXIT_CODES
    assert ignore_disruption["action"] == "Ignore"
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["securityContext"]["runAsNonRoot"]
    [container] = pod["containers"]
    assert container["args"] == ["worker", "compress", "-f", "env:MODELFLEET_MANIFEST",
                                 "-o", f"pvc://artifacts/results/team-a/digits/{digest}"]
    assert container["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "8Gi"}}
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/mnt/pvc/artifacts", "/mnt/pvc/data"]
    assert container["imagePullPolicy"] == "Never"


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
    assert container["args"][-2:] == ["-o", f"s3://results/modelfleet/team-a/digits/{spec_hash(model())}"]
    assert pvc_claims(model(), settings) == ["data"]


@pytest.mark.parametrize("changes, same", [
    ({}, True),
    ({"slo": {"maxAccuracyDropPoints": 0.5}}, False),
    ({"compression": {"calibrationMethod": "entropy"}}, False),
])
def test_spec_hash_follows_the_spec_only(changes, same):
    assert (spec_hash(model(changes, generation=7)) == spec_hash(model())) is same


def test_job_names_fit_kubernetes_limits():
    assert len(job_name("m" * 63, "compress", "0123456789")) <= 63
    assert job_name("a-" * 30 + "b", "publish", "0123456789").endswith("-publish-0123456789")


# --- feasibility ------------------------------------------------------------------------------------


@pytest.mark.parametrize("changes, reason", [
    ({"dataset": {"evaluation": {"uri": "file://relative/eval.npz"}}}, "RelativePath"),
    ({"dataset": {"evaluation": {"uri": "pvc://data/digits/calibration.npz"}}}, "EvaluationOnCalibrationData"),
    ({"slo": {"latencyP95Ms": {"triton": 5}}}, "NoTritonTarget"),
    ({"source": {"inputs": [{"name": "a", "shape": [-1, 4]}, {"name": "b", "shape": [-1, 4]}]}}, "MultiInputUnsupported"),
])
def test_impossible_specs_are_named(changes, reason):
    assert [r for r, _ in feasibility.problems(model(changes).spec)] == [reason]


def test_a_feasible_spec_has_no_problems():
    assert feasibility.problems(model(TRITON).spec) == []


def test_s3_inputs_are_feasible():
    s3_inputs = {"source": {"uri": "s3://data/digits.pt"}, "dataset": {"calibration": {"uri": "s3://data/cal.npz"},
                                                                        "evaluation": {"uri": "s3://data/eval.npz"}}}
    assert feasibility.problems(model(s3_inputs).spec) == []


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
                                  "accuracyDropPoints": passed_drop, "sizeBytes": 300}],
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
    (TRITON, Observed(compress=JobState("Succeeded"), result=result(), publish=JobState("Failed", "PublishFailed"),
                      publication=publication("Failed", "LoadFailed")),
     {"Published": ("False", "LoadFailed"), "Ready": ("False", "LoadFailed")}),
    (TRITON, Observed(compress=JobState("Succeeded"), result=result(), publish=JobState("Failed", "Retryable", "dead")),
     {"Published": ("False", "Retryable"), "Ready": ("False", "Retryable")}),
    ({"source": {"uri": "file://m.pt"}}, Observed(), {"SpecValid": ("False", "RelativePath"),
                                                      "Ready": ("False", "RelativePath"), "create": []}),
    ({"source": {"uri": "s3://b/m.pt"}}, Observed(), {"SpecValid": ("True", "Valid"), "create": [COMPRESS]}),
])
def test_decide(changes, observed, expected):
    decision = decide(model(changes), feasibility.problems(model(changes).spec), observed, "pvc://artifacts/r")
    got = summary(decision)
    assert {k: got.get(k) for k in expected} == expected


def test_decide_reports_artifacts_and_the_int8_columns():
    decision = decide(model(), [], Observed(compress=JobState("Succeeded"), result=result()), "pvc://artifacts/r")
    assert [a.uri for a in decision.artifacts] == ["pvc://artifacts/r/onnx-fp32", "pvc://artifacts/r/onnx-int8-static"]
    assert (decision.evaluation.int8_accuracy_drop_points, decision.evaluation.int8_size_bytes) == (0.19, 300)
    assert decide(model(), [], Observed(), "x").artifacts is None  # while compressing, status keeps what it had


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


@pytest.mark.parametrize("conditions, stage, expected", [
    ([], "Compressed", JobState("Missing")),
    ([condition("Compressed", "Unknown", "Compressing", 2)], "Compressed", JobState("Missing")),
    ([condition("Compressed", "True", "Compressed", 2)], "Compressed", JobState("Succeeded")),
    ([condition("Compressed", "False", "InvalidSource", 2)], "Compressed",
     JobState("Failed", "InvalidSource", "InvalidSource text")),
    ([condition("Compressed", "True", "Compressed", 1)], "Compressed", JobState("Missing")),  # an earlier spec's
    ([condition("Compressed", "True", "Compressed", 2), condition("Published", "False", "LoadFailed", 2)],
     "Published", JobState("Failed", "LoadFailed", "LoadFailed text")),
])
def test_a_removed_job_stands_for_the_outcome_the_status_recorded(conditions, stage, expected):
    assert recorded_outcome(conditions, 2, stage) == expected


def test_a_job_removed_after_its_ttl_is_not_run_again():
    status = [condition("Compressed", "True", "Compressed", 1), condition("Published", "True", "Served", 1)]
    observed = Observed(compress=recorded_outcome(status, 1, "Compressed"), result=result(),
                        publish=recorded_outcome(status, 1, "Published"), publication=publication("Served", "Served"))
    assert summary(decide(model(TRITON), [], observed, "pvc://artifacts/r")) == {
        "SpecValid": ("True", "Valid"), "Compressed": ("True", "Compressed"), "SLOMet": ("True", "SLOMet"),
        "Published": ("True", "Served"), "Ready": ("True", "Ready"), "create": []}


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
