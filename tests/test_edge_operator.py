"""The operator's edge decisions: bundle versions, the bundle Job, the Bundled condition, rollouts from devices."""

from datetime import datetime, timedelta, timezone

import pytest

from test_operator_domain import SETTINGS, TRITON, model, result, summary

from modelfleet import signing
from modelfleet.api.bundle import BundleManifest
from modelfleet.api.compressedmodel import EdgeBundleStatus, EdgeRolloutStatus
from modelfleet.api.edgedevice import EdgeDevice
from modelfleet.controller import read_manifest_digest
from modelfleet.domain.edge import device_reports, next_rollouts, rollout_salt, selects, wanted_bundles
from modelfleet.domain.plan import BUNDLE, BUNDLE_SIGNING_DIR, bundle_digest, stage_hashes, worker_job
from modelfleet.domain.rollout import wave_of
from modelfleet.domain.status import JobState, Observed, decide

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
SHA = "c" * 64


def choices(changes: dict | None = None):
    spec = model(changes).spec
    return decide(model(changes), [], Observed(compress=JobState("Succeeded"), result=result()), "r").choices, spec


def bundle(target: str, version: int, artifact: str, source_hash: str = "h1", sha: str | None = None):
    return EdgeBundleStatus(target=target, version=version, source=f"{source_hash}/{artifact}", artifact=artifact,
                            manifest_sha256=sha)


# --- versions ------------------------------------------------------------------------------------------


def test_first_bundles_are_version_one_per_target_with_a_chosen_artifact():
    chosen, spec = choices()
    assert wanted_bundles(spec.targets.edge, chosen, "h1", [], []) == [
        bundle("arm-boards", 1, "ncnn-fp16-arm-boards"), bundle("phones", 1, "tflite-fp32-phones")]


def test_an_unchanged_source_keeps_its_version_and_manifest():
    chosen, spec = choices()
    recorded = [bundle("arm-boards", 4, "ncnn-fp16-arm-boards", sha=SHA), bundle("phones", 2, "tflite-fp32-phones")]
    assert wanted_bundles(spec.targets.edge, chosen, "h1", recorded, []) == recorded


@pytest.mark.parametrize("recorded_version, rolled_out_version, expected", [
    (4, None, 5),  # a new compress result: the next version
    (4, 7, 8),  # never below a version a rollout carries
    (None, 3, 4),  # a status that lost its bundles still does not reuse a rolled-out version
])
def test_a_changed_source_gets_a_version_above_every_earlier_one(recorded_version, rolled_out_version, expected):
    chosen, spec = choices()
    recorded = [bundle("arm-boards", recorded_version, "ncnn-fp16-arm-boards", sha=SHA)] if recorded_version else []
    rollouts = ([EdgeRolloutStatus(target="arm-boards", version=rolled_out_version, salt="s")]
                if rolled_out_version else [])
    [boards, _] = wanted_bundles(spec.targets.edge, chosen, "h2", recorded, rollouts)
    assert (boards.version, boards.source, boards.manifest_sha256) == (expected, "h2/ncnn-fp16-arm-boards", None)


def test_a_target_without_a_chosen_artifact_gets_no_bundle():
    chosen, spec = choices({"slo": {"latencyP95Ms": {"ncnn": 0.1}}})
    assert [b.target for b in wanted_bundles(spec.targets.edge, chosen, "h1", [], [])] == ["phones"]


# --- the bundle Job ------------------------------------------------------------------------------------


def test_the_bundle_job_signs_with_the_namespaces_key_and_is_named_by_its_versions():
    bundles = (bundle("arm-boards", 3, "ncnn-fp16-arm-boards"), bundle("phones", 1, "tflite-fp32-phones"))
    job = worker_job(model(), "uid-1", BUNDLE, SETTINGS, bundles=bundles)
    digest = bundle_digest(stage_hashes(model())["compress"], bundles)
    assert job["metadata"]["name"] == f"digits-bundle-{digest}"
    assert job["metadata"]["labels"]["modelfleet.io/stage"] == "bundle"
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    root = "pvc://artifacts/results/team-a/digits"
    assert container["args"] == [
        "worker", "bundle", "-f", "env:MODELFLEET_MANIFEST", "-r", f"{root}/{stage_hashes(model())['compress']}",
        "-o", f"{root}/bundles", "--key", f"{BUNDLE_SIGNING_DIR}/signing-key.pem",
        "--version", "arm-boards=3", "--version", "phones=1"]
    assert {"name": "bundle-signing", "mountPath": BUNDLE_SIGNING_DIR, "readOnly": True} in container["volumeMounts"]
    secret = next(v for v in pod["volumes"] if v["name"] == "bundle-signing")["secret"]
    assert (secret["secretName"], secret["optional"]) == ("modelfleet-bundle-signing", True)
    # only the bundle Job sees the key; another version is another Job
    assert "bundle-signing" not in str(worker_job(model(), "uid-1", "compress", SETTINGS))
    other = worker_job(model(), "uid-1", BUNDLE, SETTINGS, bundles=(bundle("arm-boards", 4, "ncnn-fp16-arm-boards"),))
    assert other["metadata"]["name"] != job["metadata"]["name"]


WANTED = (bundle("arm-boards", 1, "ncnn-fp16-arm-boards"), bundle("phones", 1, "tflite-fp32-phones"))
BUILT = tuple(b.model_copy(update={"manifest_sha256": SHA}) for b in WANTED)


@pytest.mark.parametrize("observed, expected", [
    (Observed(bundles=WANTED), {"Bundled": ("Unknown", "Bundling"), "create": [BUNDLE]}),
    (Observed(bundle=JobState("Running"), bundles=WANTED), {"Bundled": ("Unknown", "Bundling"), "create": []}),
    (Observed(bundle=JobState("Running", "CreateContainerConfigError", 'secret "modelfleet-bundle-signing" not found'),
              bundles=WANTED), {"Bundled": ("Unknown", "CreateContainerConfigError")}),
    (Observed(bundle=JobState("Succeeded"), bundles=BUILT), {"Bundled": ("True", "Bundled"), "create": []}),
    (Observed(bundle=JobState("Succeeded"), bundles=WANTED), {"Bundled": ("False", "BundleMissing")}),
    (Observed(bundle=JobState("Failed", "InvalidSigningKey", "not a key"), bundles=WANTED),
     {"Bundled": ("False", "InvalidSigningKey"), "create": []}),
    (Observed(bundle=JobState("Failed", "InvalidSigningKey", "not a key"), bundles=WANTED, retry="1"),
     {"Bundled": ("Unknown", "Bundling"), "create": [BUNDLE]}),
    (Observed(), {"Bundled": None}),  # nothing chosen for the edge (or no edge target): no condition
])
def test_bundled_follows_the_bundle_job_and_ready_does_not_wait_for_it(observed, expected):
    observed = Observed(**{**observed.__dict__, "compress": JobState("Succeeded"), "result": result()})
    got = summary(decide(model(), [], observed, "r"))
    assert {k: got.get(k) for k in expected} == expected
    assert got["Ready"] == ("True", "Ready")


def test_with_triton_the_bundle_and_publish_jobs_start_together():
    observed = Observed(compress=JobState("Succeeded"), result=result(), bundles=WANTED)
    assert summary(decide(model(TRITON), [], observed, "r"))["create"] == [BUNDLE, "publish"]


def test_no_bundle_while_the_gate_fails():
    observed = Observed(compress=JobState("Succeeded"), result=result(), bundles=WANTED)
    changes = {"targets": {"triton": {**TRITON["targets"]["triton"], "precision": "int8-static"}},
               "slo": {"maxAccuracyDropPoints": 0.1}}
    got = summary(decide(model(changes), [], observed, "r"))
    assert got["SLOMet"][0] == "False" and "Bundled" not in got and BUNDLE not in got["create"]


# --- the signed manifest's digest ----------------------------------------------------------------------


def test_the_operator_reads_the_digest_the_desired_state_pins(tmp_path):
    key = signing.generate_private_key()
    manifest = BundleManifest.model_validate({
        "namespace": "team-a", "model": "digits", "target": "phones", "version": 1, "runtime": "tflite",
        "precision": "fp32", "signature": {"inputs": [{"name": "x", "dtype": "float32", "shape": [1, 64]}],
                                           "outputs": [{"name": "y", "dtype": "float32", "shape": [1, 10]}]},
        "modelFiles": ["model.tflite"], "files": [{"path": "model.tflite", "sha256": SHA, "sizeBytes": 3},
                                                  {"path": "smoke.npz", "sha256": SHA, "sizeBytes": 3}],
        "smoke": {"minCosine": 0.99}, "created": "2026-12-01T00:00:00Z", "expires": "2027-03-01T00:00:00Z"})
    envelope = signing.sign(manifest, key)
    (tmp_path / "manifest.json").write_bytes(envelope)
    digest = read_manifest_digest(tmp_path.as_uri())
    assert digest == signing.verify(envelope, signing.KeySet([key.public_key()]), BundleManifest).payload_sha256
    (tmp_path / "manifest.json").write_text("{not json")
    assert read_manifest_digest(tmp_path.as_uri()) is None
    assert read_manifest_digest((tmp_path / "absent").as_uri()) is None


# --- rollouts from the devices' reports ----------------------------------------------------------------


def device(name: str, labels: dict, installed: int | None = None, health: str = "Healthy", p95: float = 1.0,
           error: dict | None = None, seen: datetime = NOW, target: str = "phones") -> EdgeDevice:
    entry = {"model": "digits", "target": target, "health": health, "latency": {"p50Ms": p95 / 2, "p95Ms": p95},
             "lastSmoke": {"agreement": 0.999, "passed": True}}
    if installed:
        entry["installed"] = {"artifact": "tflite-fp32-phones", "version": installed, "bundleSha256": SHA,
                              "since": "2026-12-01T11:00:00Z"}
    if error:
        entry["lastError"] = error
    return EdgeDevice.model_validate({
        "apiVersion": "modelfleet.io/v1alpha1", "kind": "EdgeDevice",
        "metadata": {"name": name, "namespace": "team-a", "labels": labels,
                     "creationTimestamp": "2026-12-01T10:00:00Z"},
        "status": {"lastSeen": seen.strftime("%Y-%m-%dT%H:%M:%SZ"), "targets": [entry]}})


def test_selectors_match_every_pair():
    assert selects({}, {"a": "1"}) and selects({"a": "1"}, {"a": "1", "b": "2"})
    assert not selects({"a": "1"}, {"a": "2"}) and not selects({"a": "1"}, {})


def test_reports_come_from_the_selected_devices_status():
    spec = model({"targets": {"edge": [{"name": "phones", "runtime": "tflite", "deviceSelector": {"class": "phone"}}]}}).spec
    devices = [device("p1", {"class": "phone"}, installed=2, p95=3.0,
                      error={"reason": "DownloadFailed", "at": "2026-12-01T11:00:00Z", "version": 3, "attempts": 2,
                             "transient": True}),
               device("p2", {"class": "phone"}, error={"reason": "TamperedFile", "at": "2026-12-01T11:00:00Z",
                                                       "version": 2}),
               device("b1", {"class": "board"}, installed=2)]
    p1, p2 = device_reports(devices, "digits", spec.targets.edge[0], version=3)
    assert (p1.name, p1.version, p1.p95_ms, p1.error, p1.transient, p1.attempts) == ("p1", 2, 3.0, "DownloadFailed",
                                                                                     True, 2)
    assert p1.enrolled_at == datetime(2026, 12, 1, 10, tzinfo=timezone.utc) and p1.reported_at == NOW
    assert (p2.name, p2.error) == ("p2", None)  # an error about another version does not count against this one


PHONES = {"targets": {"edge": [{"name": "phones", "runtime": "tflite", "precision": "fp32",
                                "rollout": {"canary": {"count": 1}, "waves": [100], "bakeSeconds": 60,
                                            "gates": {"maxP95Ms": 5}}}]}}


def test_a_built_bundle_opens_its_canary_and_the_gateway_learns_when():
    spec = model(PHONES).spec
    devices = [device(f"d{i}", {}) for i in range(5)]
    outcome = next_rollouts("team-a", "digits", spec.targets.edge, spec.slo, [bundle("phones", 1, "x", sha=SHA)], [],
                            devices, NOW)
    [entry] = outcome.rollouts
    assert (entry.version, entry.current_wave, entry.changed_at) == (1, 0, "2026-12-01T12:00:00.000Z")
    assert entry.salt == rollout_salt("team-a", "digits", "phones")
    canary = min(devices, key=lambda d: wave_of(d.metadata.name, entry.salt)).metadata.name
    assert entry.message == "opened the canary: 1 device(s) get version 1"
    assert {(c.type, c.status, c.reason) for c in outcome.conditions} == {("RolledOut", "False", "WaveOpened"),
                                                                          ("RolloutHalted", "False", "NoBreach")}
    assert outcome.next_look == NOW + timedelta(seconds=60)
    # A bundle that is still being built starts nothing; an unchanged state keeps its changedAt.
    assert next_rollouts("team-a", "digits", spec.targets.edge, spec.slo, [bundle("phones", 1, "x")], [], devices,
                         NOW).rollouts == []
    later = next_rollouts("team-a", "digits", spec.targets.edge, spec.slo, [bundle("phones", 1, "x", sha=SHA)],
                          outcome.rollouts, devices, NOW + timedelta(seconds=10))
    assert later.rollouts[0].changed_at == entry.changed_at and later.rollouts[0].current_wave == 0
    assert canary in [d.metadata.name for d in devices]


def test_devices_slower_than_the_gate_halt_the_rollout_and_roll_back():
    spec = model(PHONES).spec
    devices = [device(f"d{i}", {}) for i in range(5)]
    opened = next_rollouts("team-a", "digits", spec.targets.edge, spec.slo, [bundle("phones", 2, "x", sha=SHA)],
                           [EdgeRolloutStatus(target="phones", version=1, salt=rollout_salt("team-a", "digits", "phones"),
                                              completed=True, wave_bounds=[100.0],
                                              wave_opened_at=["2026-11-01T00:00:00Z"], current_wave=0)],
                           devices, NOW).rollouts
    assert (opened[0].version, opened[0].previous_version) == (2, 1)
    canary = min(devices, key=lambda d: wave_of(d.metadata.name, opened[0].salt)).metadata.name
    slow = [device(d.metadata.name, {}, installed=2, p95=9.0) if d.metadata.name == canary else d for d in devices]
    later = NOW + timedelta(seconds=5)
    outcome = next_rollouts("team-a", "digits", spec.targets.edge, spec.slo, [bundle("phones", 2, "x", sha=SHA)], opened,
                            slow, later)
    [entry] = outcome.rollouts
    assert (entry.halted, entry.rolled_back, entry.changed_at) == ("LatencyGate", True, "2026-12-01T12:00:05.000Z")
    assert (entry.updated, entry.measured, entry.slow, entry.disagreeing) == (1, 1, 1, 0)  # the device-side SLIs
    halted = next(c for c in outcome.conditions if c.type == "RolloutHalted")
    assert (halted.status, halted.reason) == ("True", "LatencyGate") and "9 ms > 5 ms" in halted.message


# --- one reconcile after another (the controller, with an in-memory stand-in for the API server) -----------


def test_reconciles_take_a_result_to_signed_bundles_and_open_the_canary(tmp_path):
    import copy
    import json
    from pathlib import Path as P

    from conftest import digits_example
    from test_metrics import PVC_DATA, InMemoryCluster
    from test_metrics import result as digits_result

    from modelfleet import controller
    from modelfleet.api.compressedmodel import CompressedModel
    from modelfleet.domain.plan import COMPRESS, OperatorSettings, bundles_uri, result_uri

    settings = OperatorSettings(worker_image="w", artifacts=f"file://{tmp_path}/results")
    manifest = digits_example(P("/data"), copy.deepcopy(PVC_DATA))
    manifest["metadata"].update(namespace="team-a", uid="uid-1", generation=1, resourceVersion="1")
    cm = CompressedModel.model_validate(manifest)
    output = P(result_uri(settings, "team-a", "digits", stage_hashes(cm)[COMPRESS]).removeprefix("file://"))
    output.mkdir(parents=True)
    (output / "result.json").write_text(json.dumps(digits_result().to_wire()))
    compress = worker_job(cm, "uid-1", COMPRESS, settings)
    compress["metadata"]["uid"] = "job-1"
    compress["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    devices = [{"apiVersion": "modelfleet.io/v1alpha1", "kind": "EdgeDevice",
                "metadata": {"name": f"d{i}", "namespace": "team-a", "labels": {"modelfleet.io/class": kind},
                             "creationTimestamp": "2026-12-01T10:00:00Z"}}
               for i, kind in enumerate(["phone", "phone", "arm-board", "phone", "watch"])]
    cluster = InMemoryCluster(manifest, [compress], devices=devices)

    assert controller.reconcile(cluster, settings, "team-a", "digits") is None
    [job] = cluster.created
    assert job["metadata"]["labels"]["modelfleet.io/stage"] == "bundle"
    status = cluster.body["status"]
    assert [(b["target"], b["version"]) for b in status["bundles"]] == [("arm-boards", 1), ("phones", 1)]
    assert next(c for c in status["conditions"] if c["type"] == "Bundled")["reason"] == "Bundling"
    assert status["rollouts"] == []  # nothing to roll out before a bundle is built

    # The Job signed both bundles: the next reconcile pins their manifests and opens each canary.
    root = P(bundles_uri(settings, "team-a", "digits").removeprefix("file://"))
    key = signing.generate_private_key()
    for target, runtime, files in (("arm-boards", "ncnn", ["model.param", "model.bin"]), ("phones", "tflite", ["model.tflite"])):
        signed = BundleManifest.model_validate({
            "namespace": "team-a", "model": "digits", "target": target, "version": 1, "runtime": runtime,
            "precision": "fp32", "signature": {"inputs": [{"name": "x", "dtype": "float32", "shape": [1, 64]}],
                                               "outputs": [{"name": "y", "dtype": "float32", "shape": [1, 10]}]},
            "modelFiles": files, "files": [{"path": f, "sha256": SHA, "sizeBytes": 1} for f in [*files, "smoke.npz"]],
            "smoke": {"minCosine": 0.99}, "created": "2026-12-01T00:00:00Z", "expires": "2027-03-01T00:00:00Z"})
        (root / target / "1").mkdir(parents=True)
        (root / target / "1" / "manifest.json").write_bytes(signing.sign(signed, key))
    job["metadata"]["uid"] = "job-2"
    job["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    cluster._jobs.append(job)
    look_in = controller.reconcile(cluster, settings, "team-a", "digits")
    status = cluster.body["status"]
    assert all(b["manifestSha256"] for b in status["bundles"])
    assert next(c for c in status["conditions"] if c["type"] == "Bundled")["status"] == "True"
    assert [(r["target"], r["version"], r["currentWave"], r["desired"]) for r in status["rollouts"]] == [
        ("arm-boards", 1, 0, 1), ("phones", 1, 0, 3)]
    rolled_out = next(c for c in status["conditions"] if c["type"] == "RolledOut")
    assert (rolled_out["status"], rolled_out["reason"]) == ("False", "WaveOpened")
    assert 290 <= look_in <= 300  # the default bake time: the operator looks again when it ends
    assert len(cluster.created) == 1  # no second bundle Job for the same versions
