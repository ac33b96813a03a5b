"""kstatus, the status library Flux's health checks read (sigs.k8s.io/cli-utils/pkg/kstatus/status), run for
real (hack/kstatus.sh builds it) on CompressedModels whose status the operator's own decision code produced,
and on EdgeDevices. The Argo CD checks (deploy/argocd/health-*.lua) must say the same thing: InProgress is
Progressing, Failed is Degraded, Current is Healthy (or Suspended). The cluster tests do both on objects read
back from the API server, and check that the operator never writes a resource's spec or metadata."""

import copy
import json
import shutil
import subprocess
import time

import pytest
import yaml

from conftest import REPO, wait_until
from test_argocd_health import (
    BUILT, DEVICE_SCRIPT, DONE, MODEL_CASES, MODEL_SCRIPT, compressed_model, device, done, health, target,
)
from test_cluster_operator import claim, inputs  # noqa: F401  (fixtures of the cluster tests)

from modelfleet.api.compressedmodel import CompressedModelStatus
from modelfleet.domain.status import JobState, Observed, decide_failure, merge_conditions

NOW = "2026-01-01T00:00:00Z"
# What kstatus says for what Argo CD says (Suspended: a rollout paused by the spec, nothing left to do).
KSTATUS_OF = {"Progressing": "InProgress", "Degraded": "Failed", "Healthy": "Current", "Suspended": "Current"}


@pytest.fixture(scope="session")
def kstatus_bin() -> str:
    """The kstatus command (hack/kstatus.sh builds it on first use, about a minute, and caches it)."""
    if shutil.which("go") is None:
        pytest.skip("building hack/kstatus needs Go")
    built = subprocess.run(["bash", str(REPO / "hack/kstatus.sh")], capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stderr
    return built.stdout.strip().splitlines()[-1]


def kstatus(binary: str, *objects: dict) -> list[tuple[str, str]]:
    """(status, message) per object, in order, from one run of kstatus on a List of them."""
    listed = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
    run = subprocess.run([binary], input=json.dumps(listed), capture_output=True, text=True, timeout=60, check=True)
    lines = run.stdout.splitlines()
    assert len(lines) == len(objects), run.stdout
    verdicts = []
    for line, obj in zip(lines, objects):
        name, status, *message = line.split(" ", 2)
        assert name == f"{obj['kind']}/{obj['metadata']['name']}"
        verdicts.append((status, message[0] if message else ""))
    return verdicts


# --- fast: statuses from the operator's decision code ---------------------------------------------------


def test_kstatus_agrees_with_argocd_on_every_status_the_operator_decides(kstatus_bin):
    bodies = [compressed_model(changes, observed, extra) for changes, observed, extra, _ in MODEL_CASES]
    got = kstatus(kstatus_bin, *bodies)
    for (changes, observed, extra, (argo, _)), (status, message), body in zip(MODEL_CASES, got, bodies):
        assert health(MODEL_SCRIPT, body)[0] == argo
        assert status == KSTATUS_OF[argo], (argo, status, message, body["status"]["conditions"])


@pytest.mark.parametrize("observed, expected", [
    (DONE, ("Current", "Resource is Ready")),  # no Reconciling or Stalled True: kstatus reads Ready
    (Observed(), ("InProgress", "compression in progress")),
    (Observed(compress=JobState("Running")), ("InProgress", "compression in progress")),
    (Observed(compress=JobState("Failed", "ChecksumMismatch", "sha256 differs")), ("Failed", "sha256 differs")),
    (done(bundles=BUILT), ("InProgress", "building and signing arm-boards version 1")),
])
def test_kstatus_reads_reconciling_and_stalled(kstatus_bin, observed, expected):
    assert kstatus(kstatus_bin, compressed_model({}, observed)) == [expected]


def test_without_reconciling_and_stalled_kstatus_would_wait_on_failures_and_miss_bundles(kstatus_bin):
    """kstatus falls back to Ready: False is InProgress (so a failure would hold Flux until its timeout), and
    True is Current (work after Ready, such as edge bundles, would go unnoticed)."""
    bodies = [compressed_model({"slo": {"maxAccuracyDropPoints": 0.1}}, DONE),
              compressed_model({}, done(bundles=BUILT))]
    assert [s for s, _ in kstatus(kstatus_bin, *bodies)] == ["Failed", "InProgress"]
    for body in bodies:
        body["status"]["conditions"] = [c for c in body["status"]["conditions"]
                                        if c["type"] not in ("Reconciling", "Stalled")]
    assert [s for s, _ in kstatus(kstatus_bin, *bodies)] == ["InProgress", "Current"]


def test_an_invalid_spec_is_failed(kstatus_bin):
    body = compressed_model({"source": {"uri": "file://m.pt"}}, Observed())
    [(status, message)] = kstatus(kstatus_bin, body)
    assert status == "Failed" and "relative" in message.lower(), message


def test_a_generation_ahead_of_the_status_is_in_progress_even_when_ready(kstatus_bin):
    ahead = compressed_model({}, DONE, generation=3, observed_generation=2)
    assert kstatus(kstatus_bin, ahead) == [
        ("InProgress", "CompressedModel generation is 3, but latest observed generation is 2")]
    assert kstatus(kstatus_bin, compressed_model({}, DONE, generation=3, observed_generation=3))[0][0] == "Current"


def test_a_failed_reconcile_being_retried_is_in_progress(kstatus_bin):
    """Reconciling=True while the operator retries (Flux's ProgressingWithRetry); Argo CD's check reads Ready
    instead: Healthy when the resource stays Ready, Degraded otherwise."""
    for observed, argo in ((DONE, "Healthy"), (Observed(compress=JobState("Running")), "Degraded")):
        body = compressed_model({}, observed)
        status = CompressedModelStatus.model_validate(body["status"])
        failure = decide_failure(status, "TooManyRequests", "429 (failed once; retrying in 4 s)")
        merged, _ = merge_conditions(status.conditions, failure, 1, NOW, keep_others=True)
        body["status"]["conditions"] = [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in merged]
        assert kstatus(kstatus_bin, body) == [("InProgress", "429 (failed once; retrying in 4 s)")]
        assert health(MODEL_SCRIPT, body)[0] == argo


def test_a_resource_without_a_status_is_current_to_kstatus(kstatus_bin):
    """kstatus' own rule, a gap the operator cannot close: before its first status write (usually within a
    second of the create), kstatus has neither observedGeneration nor a condition to go by."""
    body = compressed_model({}, DONE)
    del body["status"]
    assert kstatus(kstatus_bin, body)[0][0] == "Current"
    assert health(MODEL_SCRIPT, body)[0] == "Progressing"


@pytest.mark.parametrize("targets, report", [
    ((target("pis", "Healthy"),), True),
    ((target("pis", "Failed", None, {"reason": "SmokeTestFailed", "message": "agreement 0.42"}),), True),
    ((), False),
])
def test_edge_devices_are_current_whatever_their_health(kstatus_bin, targets, report):
    """An EdgeDevice is a report, not something the operator reconciles: no observedGeneration, no conditions,
    so kstatus calls it Current. Argo CD's check reads status.health (Degraded, Progressing) instead."""
    body = device(*targets, report=report)
    body["metadata"]["generation"] = 1
    assert kstatus(kstatus_bin, body) == [("Current", "Resource is current")]


def test_kstatus_reads_a_yaml_stream_too(kstatus_bin):
    documents = [compressed_model({}, DONE), compressed_model({}, Observed())]
    documents[1]["metadata"]["name"] = "other"
    run = subprocess.run([kstatus_bin], input=yaml.safe_dump_all(documents), capture_output=True, text=True,
                         check=True, timeout=60)
    assert [line.split(" ")[:2] for line in run.stdout.splitlines()] == [
        ["CompressedModel/digits", "Current"], ["CompressedModel/other", "InProgress"]]


# --- on the test cluster: real objects from the API server ----------------------------------------------


def read_back(kube, namespace: str, kind: str, name: str) -> dict:
    return json.loads(kube.kubectl("get", kind, name, "-n", namespace, "-o", "json", "--show-managed-fields").stdout)


def verdicts(kstatus_bin: str, body: dict) -> tuple[str, str]:
    """(kstatus' status, Argo CD's health status) of one object."""
    script = MODEL_SCRIPT if body["kind"] == "CompressedModel" else DEVICE_SCRIPT
    return kstatus(kstatus_bin, body)[0][0], health(script, body)[0]


@pytest.mark.cluster
@pytest.mark.slow
def test_a_real_model_is_in_progress_while_its_jobs_run_then_current_and_its_spec_is_never_written(
        kube, namespace, claim, inputs, operator, kstatus_bin):
    from test_cluster_operator import conditions, create, resource, wait_for

    applied = resource(inputs, changes={"targets": {"edge": []}})  # no bundles: Ready after the compress Job
    created = create(kube, namespace, copy.deepcopy(applied))

    def compressing():
        body = read_back(kube, namespace, "compressedmodel", "digits")
        found = conditions(body).get("Compressed")
        return body if found and found["status"] == "Unknown" else None

    running = wait_until(compressing, 60, "the operator to report the compress Job")
    assert conditions(running)["Reconciling"]["status"] == "True"
    assert verdicts(kstatus_bin, running) == ("InProgress", "Progressing")

    wait_for(kube, namespace, "digits", "Ready", "True", timeout=600)
    ready = read_back(kube, namespace, "compressedmodel", "digits")
    assert {t: (c["status"], c["reason"]) for t, c in conditions(ready).items() if t in ("Reconciling", "Stalled")} \
        == {"Reconciling": ("False", "Current"), "Stalled": ("False", "Current")}
    assert verdicts(kstatus_bin, ready) == ("Current", "Healthy")

    # The operator writes status and its finalizer, nothing else: the spec and every other metadata field
    # are what the create left (the API server's own bookkeeping aside), and the generation never moved.
    time.sleep(2)  # a write that followed Ready would show now
    final = read_back(kube, namespace, "compressedmodel", "digits")
    assert final["metadata"]["generation"] == created["metadata"]["generation"] == 1
    assert final["spec"] == created["spec"]
    assert final["metadata"]["finalizers"] == ["modelfleet.io/cleanup"]
    server_managed = {"resourceVersion", "managedFields", "finalizers"}
    assert {k: v for k, v in final["metadata"].items() if k not in server_managed} == \
        {k: v for k, v in created["metadata"].items() if k not in server_managed}
    # Field ownership says the same: outside the status subresource, the operator owns the finalizer at most.
    [creation] = created["metadata"]["managedFields"]
    for entry in final["metadata"]["managedFields"]:
        if entry.get("subresource") == "status":
            continue
        fields = copy.deepcopy(entry.get("fieldsV1", {}))
        fields.get("f:metadata", {}).pop("f:finalizers", None)
        if not fields.get("f:metadata", True):
            del fields["f:metadata"]
        # The operator's client may write under the creator's manager name: then the entry is the creation's.
        assert fields in ({}, creation["fieldsV1"]) if entry["manager"] == creation["manager"] else fields == {}, entry


@pytest.mark.cluster
@pytest.mark.slow
def test_a_spec_the_operator_refuses_is_failed_and_a_device_without_report_current(
        kube, namespace, operator, kstatus_bin):
    """A relative file:// path passes the CRD's schema; the operator's feasibility check refuses it
    (SpecValid=False, RelativePath) and runs no Job."""
    from test_cluster_operator import conditions, create, jobs, wait_for

    body = yaml.safe_load((REPO / "examples/digits/compressedmodel.yaml").read_text())
    body["metadata"]["name"] = "refused"
    create(kube, namespace, body)
    wait_for(kube, namespace, "refused", "SpecValid", "False", timeout=60)
    refused = read_back(kube, namespace, "compressedmodel", "refused")
    assert (conditions(refused)["Stalled"]["status"], conditions(refused)["Stalled"]["reason"]) == \
        ("True", "RelativePath")
    assert verdicts(kstatus_bin, refused) == ("Failed", "Degraded")
    assert jobs(kube, namespace) == []

    example = yaml.safe_load((REPO / "examples/edge/edgedevice.yaml").read_text())
    example["metadata"]["namespace"] = namespace
    kube.kubectl("apply", "-f", "-", input=json.dumps(example))  # the status goes: the gateway writes it
    device_body = read_back(kube, namespace, "edgedevice", example["metadata"]["name"])
    assert verdicts(kstatus_bin, device_body) == ("Current", "Progressing")  # enrolled, no report yet
