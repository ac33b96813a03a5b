"""Argo CD's health checks (deploy/argocd/health-*.lua) run in Lua 5.1, the language of Argo CD's gopher-lua,
on statuses that the operator's own pure functions produce: `decide` and `merge_conditions` for
CompressedModels (with the resources of tests/test_operator_domain.py), the rollout's `resource_conditions`,
and `fleet_columns` for EdgeDevices. The cluster tests run the same scripts on statuses read back from the
API server."""

from dataclasses import replace

import pytest
import yaml

lua51 = pytest.importorskip("lupa.lua51", reason="the `test` extra installs lupa, a Lua runtime")

from conftest import REPO
from test_operator_domain import SETTINGS, TRITON, model, publication, result

from modelfleet.api.compressedmodel import CompressedModelStatus, EdgeBundleStatus
from modelfleet.api.edgedevice import EdgeDevice, EdgeDeviceStatus
from modelfleet.domain import feasibility, rollout
from modelfleet.domain.device import fleet_columns
from modelfleet.domain.status import IN_PROGRESS, JobState, Observed, Wanted, decide, merge_conditions, progress

ARGOCD = REPO / "deploy" / "argocd"
MODEL_SCRIPT = (ARGOCD / "health-compressedmodel.lua").read_text()
DEVICE_SCRIPT = (ARGOCD / "health-edgedevice.lua").read_text()
NOW = "2026-01-01T00:00:00Z"
SHA = "c" * 64


def health(script: str, resource: dict) -> tuple[str, str]:
    """(status, message) as Argo CD would get them: the script run with the resource as the global `obj`."""
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(resource, recursive=True)
    hs = lua.execute(script)
    return hs["status"], hs["message"]


def compressed_model(changes: dict, observed: Observed, extra: tuple[Wanted, ...] = (), generation: int = 1,
                     observed_generation: int | None = 1) -> dict:
    """The resource as the API server would hand it to Argo CD after the operator's reconcile."""
    spec = model(changes, generation)
    decision = decide(spec, feasibility.problems(spec, SETTINGS), observed, "pvc://artifacts/r")
    wanted = [*decision.conditions, *extra]
    conditions, _ = merge_conditions([], [*wanted, *progress(wanted)], generation, NOW)  # as the operator writes them
    status = CompressedModelStatus(observed_generation=observed_generation, conditions=conditions,
                                   artifacts=decision.artifacts or [], evaluation=decision.evaluation)
    body = spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    body["status"] = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    return body


DONE = Observed(compress=JobState("Succeeded"), result=result())
BUNDLES = (EdgeBundleStatus(target="arm-boards", version=1, source="h/ncnn-fp16-arm-boards",
                            artifact="ncnn-fp16-arm-boards"),)
BUILT = tuple(b.model_copy(update={"manifest_sha256": SHA}) for b in BUNDLES)


def done(**bundle) -> Observed:
    """A finished compression whose SLOs pass, with the bundle stage as given."""
    return replace(DONE, **bundle)


def verdicts(*actions: tuple[str, str]) -> tuple[Wanted, ...]:
    """RolledOut and RolloutHalted of the resource from one verdict per edge target."""
    targets = ("arm-boards", "phones")
    return tuple(rollout.resource_conditions({
        target: rollout.Verdict(action, reason, "2 of 5 devices updated", None)
        for target, (action, reason) in zip(targets, actions)}))


MODEL_CASES = [
    # work under way
    ({}, Observed(), (), ("Progressing", "Compressing: compression in progress")),
    ({}, Observed(compress=JobState("Running")), (), ("Progressing", "Compressing: compression in progress")),
    (TRITON, Observed(compress=JobState("Succeeded"), result=result()), (),
     ("Progressing", "Publishing: publishing to Triton")),
    (TRITON, Observed(compress=JobState("Succeeded"), result=result(), previous_publish_stopping=True), (),
     ("Progressing", "Publishing: publishing to Triton")),
    # failures
    ({}, Observed(compress=JobState("Failed", "ChecksumMismatch", "sha256 differs")), (),
     ("Degraded", "ChecksumMismatch: sha256 differs")),
    ({}, Observed(compress=JobState("Running", "ImagePullBackOff", "pod x: image not found")), (),
     ("Degraded", "ImagePullBackOff: pod x: image not found")),
    ({}, Observed(compress=JobState("Succeeded")), (), ("Degraded", "ResultMissing")),
    ({"slo": {"maxAccuracyDropPoints": 0.1}}, DONE, (), ("Degraded", "SLONotMet")),
    ({"source": {"uri": "file://m.pt"}}, Observed(), (), ("Degraded", "RelativePath")),
    (TRITON, Observed(compress=JobState("Succeeded"), result=result(), publish=JobState("Failed", "LoadFailed", "x")),
     (), ("Degraded", "LoadFailed: x")),
    # ready
    ({}, DONE, (), ("Healthy", "Ready")),
    (TRITON, Observed(compress=JobState("Succeeded"), result=result(), publish=JobState("Succeeded"),
                      publication=publication("Served", "Served")), (), ("Healthy", "Ready")),
    # edge bundles and rollouts, with Ready=True
    ({}, done(bundles=BUNDLES), (), ("Progressing", "Bundling: building and signing arm-boards version 1")),
    ({}, done(bundles=BUNDLES, bundle=JobState("Running", "Unschedulable", "0/1 nodes")), (),
     ("Degraded", "Edge bundles: Unschedulable: 0/1 nodes")),
    ({}, done(bundles=BUNDLES, bundle=JobState("Failed", "", "signing key missing")), (),
     ("Degraded", "Edge bundles: BundleFailed: signing key missing")),
    ({}, done(bundles=BUNDLES, bundle=JobState("Succeeded")), (), ("Degraded", "Edge bundles: BundleMissing")),
    ({}, done(bundles=BUILT, bundle=JobState("Succeeded")),
     verdicts((rollout.ADVANCE, rollout.WAVE_OPENED), (rollout.COMPLETE, rollout.COMPLETED)),
     ("Progressing", "Edge rollout: WaveOpened: arm-boards: 2 of 5 devices updated")),
    ({}, done(bundles=BUILT, bundle=JobState("Succeeded")),
     verdicts((rollout.HOLD, rollout.WAVE_BAKING), (rollout.HOLD, rollout.AWAITING_DEVICES)),
     ("Progressing", "Edge rollout: WaveBaking: arm-boards: 2 of 5 devices updated; phones: 2 of 5")),
    ({}, done(bundles=BUILT, bundle=JobState("Succeeded")),
     verdicts((rollout.HOLD, rollout.PAUSED), (rollout.COMPLETE, rollout.COMPLETED)),
     ("Suspended", "Edge rollout paused: Paused")),
    ({}, done(bundles=BUILT, bundle=JobState("Succeeded")),
     verdicts((rollout.HALT, rollout.FAILURE_THRESHOLD), (rollout.HOLD, rollout.PAUSED)),
     ("Degraded", "Edge rollout halted: FailureThreshold: arm-boards: 2 of 5 devices updated")),
    ({}, done(bundles=BUILT, bundle=JobState("Succeeded")),
     verdicts((rollout.HOLD, rollout.NO_DEVICES), (rollout.COMPLETE, rollout.COMPLETED)), ("Healthy", "Ready")),
    ({}, done(bundles=BUILT, bundle=JobState("Succeeded")),
     verdicts((rollout.COMPLETE, rollout.COMPLETED), (rollout.COMPLETE, rollout.COMPLETED)), ("Healthy", "Ready")),
]


@pytest.mark.parametrize("changes, observed, extra, expected", MODEL_CASES,
                         ids=[f"{status}-{message.split(':')[0]}" for *_, (status, message) in MODEL_CASES])
def test_compressed_model_health(changes, observed, extra, expected):
    status, message = health(MODEL_SCRIPT, compressed_model(changes, observed, extra))
    assert status == expected[0]
    assert message.startswith(expected[1]), message


def test_every_reason_of_work_in_progress_is_progressing_and_any_other_is_degraded():
    for reason in sorted(IN_PROGRESS):
        body = compressed_model({}, Observed(compress=JobState("Running", reason, "under way")))
        assert health(MODEL_SCRIPT, body)[0] == "Progressing", reason
    body = compressed_model({}, Observed(compress=JobState("Running", "CreateContainerConfigError", "no Secret")))
    assert health(MODEL_SCRIPT, body)[0] == "Degraded"


def test_a_generation_the_operator_has_not_seen_is_progressing_even_when_ready():
    assert health(MODEL_SCRIPT, compressed_model({}, DONE, generation=3, observed_generation=2)) == (
        "Progressing", "Waiting for the operator to observe generation 3")
    assert health(MODEL_SCRIPT, compressed_model({}, DONE, generation=3, observed_generation=None))[0] == "Progressing"
    assert health(MODEL_SCRIPT, compressed_model({}, DONE, generation=3, observed_generation=3))[0] == "Healthy"


def test_a_resource_the_operator_has_not_touched_is_progressing():
    body = compressed_model({}, DONE)
    del body["status"]
    assert health(MODEL_SCRIPT, body)[0] == "Progressing"
    body["status"] = {"observedGeneration": 1, "conditions": []}
    assert health(MODEL_SCRIPT, body) == ("Progressing", "Waiting for the Ready condition")


def test_a_failed_reconcile_of_a_ready_resource_stays_healthy():
    """Reconciled=False alone: what the resource serves stays in service while the operator retries."""
    body = compressed_model({}, DONE, extra=(Wanted("Reconciled", "False", "TooManyRequests", "429, retry in 4 s"),))
    assert health(MODEL_SCRIPT, body)[0] == "Healthy"


# --- EdgeDevice ---------------------------------------------------------------------------------------------


def device(*targets: dict, report: bool = True) -> dict:
    body = {"apiVersion": "modelfleet.io/v1alpha1", "kind": "EdgeDevice",
            "metadata": {"name": "pi-kitchen-01", "namespace": "ml", "labels": {"modelfleet.io/class": "rpi4"}}}
    if report:
        status = fleet_columns(EdgeDeviceStatus.model_validate(
            {"agentVersion": "0.1.0", "lastSeen": NOW, "targets": list(targets)}))
        body["status"] = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    return EdgeDevice.model_validate(body).model_dump(by_alias=True, exclude_none=True, mode="json")


def target(name: str, health: str, version: int | None = 3, error: dict | None = None) -> dict:
    out = {"model": "digits", "target": name, "health": health}
    if version:
        out["installed"] = {"artifact": f"ncnn-fp16-{name}", "version": version, "bundleSha256": SHA, "since": NOW}
    if error:
        out["lastError"] = {"at": NOW, "version": 4, **error}
    return out


@pytest.mark.parametrize("targets, expected", [
    ((target("pis", "Healthy"),), ("Healthy", "digits/pis=3")),
    ((target("pis", "Healthy"), target("phones", "Degraded")), ("Degraded", "Degraded (digits/phones=3 digits/pis=3)")),
    ((target("pis", "Failed", None, {"reason": "SmokeTestFailed", "message": "agreement 0.42"}),),
     ("Degraded", "Failed (nothing installed); digits/pis: SmokeTestFailed: agreement 0.42")),
    ((target("pis", "Healthy", 3, {"reason": "DownloadFailed", "transient": True}), target("phones", "Failed")),
     ("Degraded", "Failed (digits/phones=3 digits/pis=3); digits/pis: DownloadFailed")),
    ((target("pis", "Unknown", None),), ("Progressing", "Health Unknown (nothing installed)")),
    ((), ("Progressing", "Health Unknown (nothing installed)")),
])
def test_edge_device_health(targets, expected):
    assert health(DEVICE_SCRIPT, device(*targets)) == expected


def test_an_enrolled_device_without_a_report_is_progressing():
    assert health(DEVICE_SCRIPT, device(report=False)) == ("Progressing", "Waiting for the device's first report")


def test_the_example_device_is_healthy():
    example = yaml.safe_load((REPO / "examples/edge/edgedevice.yaml").read_text())
    assert health(DEVICE_SCRIPT, example)[0] == "Healthy"


def test_argocd_cm_installs_exactly_these_scripts():
    data = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())["data"]
    assert data == {"resource.customizations.health.modelfleet.io_CompressedModel": MODEL_SCRIPT,
                    "resource.customizations.health.modelfleet.io_EdgeDevice": DEVICE_SCRIPT}
