"""`modelfleet worker bundle`: signed edge bundles from a real digits compress result, checked as a device would.

The bundles are verified with the agent's own `TrustedState` (a desired state signed by another key orders them)
and their golden outputs are reproduced in the runtime that serves them, within the manifest's tolerance.
"""

import base64
import json
import os
import re
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import digits_example

from modelfleet import signing
from modelfleet.agent import errors
from modelfleet.agent.trust import TrustedState
from modelfleet.api.bundle import BundleManifest, BundleRef, DesiredState
from modelfleet.api.result import AgreementResult, ArtifactResult, FidelityResult, LatencyResult
from modelfleet.cli import main
from modelfleet.publish.bundle import BundleError, parse_versions, smoke_check
from modelfleet.store import s3

NAMESPACE, MODEL, DEVICE = "team-a", "digits", "pi-kitchen-1"
FAST = {"compression": {"precisions": ["fp16"]}, "benchmark": {"threads": 1, "warmupRuns": 2, "runs": 10}}


# --- a real result, keys ---------------------------------------------------------------------------


def write_manifest(digits_data: Path, path: Path, changes: dict | None = None) -> Path:
    manifest = digits_example(digits_data, {**FAST, **(changes or {})})
    manifest["metadata"]["namespace"] = NAMESPACE
    path.write_text(yaml.safe_dump(manifest))
    return path


@pytest.fixture(scope="module")
def digits_result(digits_data, tmp_path_factory):
    """The digits example (ncnn auto for arm-boards, TFLite fp32 for phones) compressed once: (manifest, result dir)."""
    workdir = tmp_path_factory.mktemp("bundle-result")
    manifest = write_manifest(digits_data, workdir / "m.yaml")
    assert main(["worker", "compress", "-q", "-f", str(manifest), "-o", str(workdir / "result")]) == 0
    return manifest, workdir / "result"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """The worker's bundle key pair as files (made by `modelfleet keys generate`) and the gateway's key."""
    directory = tmp_path_factory.mktemp("keys")
    private, public = directory / "signing-key.pem", directory / "bundle-key.pub.pem"
    assert main(["keys", "generate", "--out-private", str(private), "--out-public", str(public)]) == 0
    return private, public, signing.generate_private_key()


def bundle(manifest: Path, result, out, *versions: str, key: Path, extra: tuple[str, ...] = ()) -> int:
    return main(["worker", "bundle", "-q", "-f", str(manifest), "-r", str(result), "-o", str(out),
                 *[a for v in versions for a in ("--version", v)], "--key", str(key), *extra])


def payload(envelope: bytes) -> BundleManifest:
    return BundleManifest.model_validate_json(base64.b64decode(json.loads(envelope)["payload"]))


def device_verifies(envelope: bytes, files: dict[str, bytes], public_pem: bytes, gateway_key,
                    now: datetime | None = None):
    """What an agent does: trust a desired state (the gateway's key) that pins this manifest, then the bundle."""
    now = now or datetime.now(timezone.utc)
    manifest = payload(envelope)
    ref = BundleRef(model=manifest.model, target=manifest.target, version=manifest.version,
                    manifest_sha256=signing.sha256_hex(base64.b64decode(json.loads(envelope)["payload"])),
                    url=f"v1/devices/{NAMESPACE}/{DEVICE}/bundles/{manifest.model}/{manifest.target}/"
                        f"{manifest.version}")
    desired = DesiredState(namespace=NAMESPACE, device=DEVICE, sequence=1, issued=now,
                           expires=now + timedelta(minutes=10), bundles=[ref])
    trust = TrustedState(namespace=NAMESPACE, device=DEVICE, state_keys=signing.KeySet([gateway_key]),
                         bundle_keys=signing.KeySet.load([public_pem]))
    trust.verify_desired_state(signing.sign(desired, gateway_key), now)
    return trust.verify_bundle(envelope, files, now, installed_version=None, slot=ref)


def bundle_files(directory: Path) -> tuple[bytes, dict[str, bytes]]:
    files = {p.name: p.read_bytes() for p in directory.iterdir()}
    return files.pop("manifest.json"), files


def reproduce(manifest: BundleManifest, directory: Path) -> np.ndarray:
    """The golden inputs through the bundle's runtime: per-sample cosine with the golden outputs."""
    from modelfleet.runtimes import NcnnRunner, TfliteRunner

    paths = [directory / name for name in manifest.model_files]
    if manifest.runtime == "ncnn":
        runner = NcnnRunner(*paths, threads=1, fp16=manifest.precision == "fp16")
    else:
        runner = TfliteRunner(paths[0], threads=1)
    golden = np.load(directory / manifest.smoke.file)
    inputs, expected = golden["inputs"], golden["outputs"]
    outputs = np.concatenate([runner.run({"input": inputs[i:i + 1]})[0] for i in range(len(inputs))])
    a, b = outputs.reshape(len(inputs), -1), expected.reshape(len(inputs), -1)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# --- bundles from a real result ------------------------------------------------------------------------


@pytest.mark.slow
def test_bundles_verify_on_a_device_and_reproduce_their_golden_outputs_in_the_runtime(
        digits_result, keys, tmp_path, monkeypatch, capsys):
    manifest_path, result = digits_result
    private, public, gateway = keys
    out = tmp_path / "store" / NAMESPACE / MODEL / "bundles"
    monkeypatch.setenv("MODELFLEET_TERMINATION_MESSAGE_PATH", str(tmp_path / "termination"))
    before = datetime.now(timezone.utc).replace(microsecond=0)

    assert bundle(manifest_path, f"file://{result}", f"file://{out}", "arm-boards=3", "phones=1", key=private) == 0

    assert "bundles: arm-boards=3 phones=1" in capsys.readouterr().out
    assert (tmp_path / "termination").read_text() == "Bundled: arm-boards=3 phones=1"
    chosen = {c["target"]: c["chosen"] for c in json.loads((result / "result.json").read_text())["choices"]}
    artifacts = {a["name"]: a for a in json.loads((result / "result.json").read_text())["artifacts"]}
    baseline_smoke = np.load(result / "onnx-fp32" / "smoke.npz")
    for target, version, model_files in (("arm-boards", 3, ["model.param", "model.bin"]),
                                         ("phones", 1, ["model.tflite"])):
        directory = out / target / str(version)
        envelope, files = bundle_files(directory)
        verified = device_verifies(envelope, files, public.read_bytes(), gateway)
        manifest = verified.manifest
        artifact = artifacts[chosen[target]]
        assert (manifest.namespace, manifest.model, manifest.target, manifest.version) == (NAMESPACE, MODEL, target,
                                                                                           version)
        assert (manifest.runtime, manifest.precision) == (artifact["runtime"], artifact["precision"])
        assert manifest.model_files == model_files and sorted(files) == sorted([*model_files, "smoke.npz"])
        for name, source in zip(model_files, artifact["files"]):  # the chosen artifact's files, unchanged
            assert files[name] == (result / source).read_bytes()
        assert manifest.device_selector == {"modelfleet.io/class": target.removesuffix("s")}  # the example's
        assert before <= manifest.created <= datetime.now(timezone.utc)
        assert manifest.expires - manifest.created == timedelta(days=90)
        assert manifest.min_agent_version == "0.1.0" and manifest.signature.inputs[0].dtype == "float32"
        # The golden data: the fp32 baseline's inputs and outputs.
        golden = np.load(directory / "smoke.npz")
        np.testing.assert_array_equal(golden["outputs"], baseline_smoke["outputs"])
        # The tolerance follows the measured fidelity, below it but not absurdly low...
        assert 0.9 <= manifest.smoke.min_cosine < artifact["fidelity"]["minCosine"]
        # ...and the runtime on the device meets it on the golden inputs.
        assert reproduce(manifest, directory).min() >= manifest.smoke.min_cosine


@pytest.mark.slow
def test_running_again_leaves_a_complete_bundle_alone_and_completes_a_half_written_one(digits_result, keys, tmp_path,
                                                                                       capsys):
    manifest_path, result = digits_result
    private, public, gateway = keys
    out = tmp_path / "bundles"
    assert bundle(manifest_path, result, out, "phones=1", key=private) == 0
    first = (out / "phones" / "1" / "manifest.json").read_bytes()
    # A Job killed before its manifest: files (some of another artifact, some cut short), no manifest.
    half = out / "phones" / "2"
    half.mkdir()
    (half / "model.param").write_text("from an earlier attempt")
    (half / "model.tflite").write_bytes(b"cut short")
    capsys.readouterr()

    assert bundle(manifest_path, result, out, "phones=1", "arm-boards=1", key=private) == 0
    assert bundle(manifest_path, result, out, "phones=2", key=private) == 0

    assert "phones=1 (unchanged) arm-boards=1" in capsys.readouterr().out
    assert (out / "phones" / "1" / "manifest.json").read_bytes() == first  # not signed again: the same sha256
    envelope, files = bundle_files(half)
    assert sorted(files) == ["model.tflite", "smoke.npz"]
    assert device_verifies(envelope, files, public.read_bytes(), gateway).manifest.version == 2


@pytest.mark.slow
def test_other_content_for_an_existing_version_is_refused_and_the_bundle_left_as_it_was(digits_result, keys,
                                                                                        tmp_path, capsys):
    manifest_path, result = digits_result
    private, _, _ = keys
    out = tmp_path / "bundles"
    assert bundle(manifest_path, result, out, "arm-boards=4", key=private) == 0
    before = {p.name: p.read_bytes() for p in (out / "arm-boards" / "4").iterdir()}
    chosen = next(c["chosen"] for c in json.loads((result / "result.json").read_text())["choices"]
                  if c["target"] == "arm-boards")
    other = "fp16" if chosen.startswith("ncnn-fp32") else "fp32"
    # The spec now asks for another precision: another artifact, under the same version.
    changed = yaml.safe_load(manifest_path.read_text())
    changed["spec"]["targets"]["edge"][0]["precision"] = other
    (tmp_path / "changed.yaml").write_text(yaml.safe_dump(changed))

    code = bundle(tmp_path / "changed.yaml", result, out, "arm-boards=4", key=private)

    assert code == 31
    err = capsys.readouterr().err
    # (ncnn's fp16 and fp32 .param files can be identical; the weights never are)
    assert re.search(r"holds version 4 of arm-boards with other content \(differs in model\.bin", err), err
    assert "[BundleConflict]" in err
    assert {p.name: p.read_bytes() for p in (out / "arm-boards" / "4").iterdir()} == before
    assert bundle(tmp_path / "changed.yaml", result, out, "arm-boards=5", key=private) == 0
    assert payload((out / "arm-boards" / "5" / "manifest.json").read_bytes()).precision == other


@pytest.mark.slow
def test_an_unknown_target_or_one_without_a_chosen_artifact_is_a_permanent_error_and_writes_nothing(
        digits_result, keys, digits_data, tmp_path, capsys):
    manifest_path, result = digits_result
    private, _, _ = keys
    out = tmp_path / "bundles"

    assert bundle(manifest_path, result, out, "phones=1", "tablets=1", key=private) == 30
    err = capsys.readouterr().err
    assert "--version names tablets, not an edge target of digits (its edge targets: arm-boards, phones)" in err
    assert "[UnknownTarget]" in err
    # Under a size SLO no ncnn artifact meets, arm-boards (auto) has nothing that passed the gate.
    strict = write_manifest(digits_data, tmp_path / "strict.yaml", {"slo": {"maxSizeBytes": 1000}})
    assert bundle(strict, result, out, "phones=1", "arm-boards=1", key=private) == 30
    err = capsys.readouterr().err
    assert "edge target arm-boards: no artifact passed the gate, nothing to bundle (ncnn-" in err
    assert "[NoChosenArtifact]" in err
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("problem", ["missing", "public key", "tampered", "rsa"])
def test_a_missing_or_wrong_signing_key_is_a_clear_error_before_anything_is_written(digits_result, keys, tmp_path,
                                                                                     problem, capsys):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    manifest_path, result = digits_result
    private, public, _ = keys
    key = tmp_path / "key.pem"
    if problem == "public key":
        key.write_bytes(public.read_bytes())
    elif problem == "tampered":
        pem = bytearray(private.read_bytes())
        pem[40] = ord("A") if pem[40] != ord("A") else ord("B")
        key.write_bytes(bytes(pem))
    elif problem == "rsa":
        key.write_bytes(rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

    code = bundle(manifest_path, result, tmp_path / "bundles", "phones=1", key=key)

    err = capsys.readouterr().err
    assert code == 30 and f"signing key {key}: " in err
    expected = {"missing": r"No such file or directory \(mount the Secret modelfleet-bundle-signing.*"
                           r"\[SigningKeyMissing\]",
                "public key": r"not an unencrypted PEM private key.*\[InvalidSigningKey\]",
                "tampered": r"\[InvalidSigningKey\]",
                "rsa": r"expected an ed25519 key, got .*RSA.*\[InvalidSigningKey\]"}[problem]
    assert re.search(expected, err), err
    assert not (tmp_path / "bundles").exists()


@pytest.mark.slow
def test_a_bundle_signed_by_a_key_the_device_does_not_trust_is_refused(digits_result, keys, tmp_path):
    manifest_path, result = digits_result
    private, _, gateway = keys
    assert bundle(manifest_path, result, tmp_path, "phones=1", key=private) == 0
    envelope, files = bundle_files(tmp_path / "phones" / "1")
    stranger = signing.public_key_pem(signing.generate_private_key())
    with pytest.raises(errors.UnknownKey):
        device_verifies(envelope, files, stranger, gateway)


@pytest.mark.slow
def test_bundles_from_an_s3_result_to_an_s3_store(digits_result, keys, minio_env, tmp_path, capsys):
    manifest_path, result = digits_result
    private, public, gateway = keys
    result_uri = f"s3://{minio_env.bucket}/{NAMESPACE}/{MODEL}/0123abcd"
    out_uri = f"s3://{minio_env.bucket}/{NAMESPACE}/{MODEL}/bundles"
    s3.put_directory(result, result_uri)

    assert bundle(manifest_path, result_uri, out_uri, "arm-boards=1", "phones=7", key=private) == 0
    assert bundle(manifest_path, result_uri, out_uri, "arm-boards=1", key=private) == 0

    assert "arm-boards=1 (unchanged)" in capsys.readouterr().out
    client = minio_env.client()
    for target, version in (("arm-boards", 1), ("phones", 7)):
        prefix = f"{NAMESPACE}/{MODEL}/bundles/{target}/{version}/"
        listed = client.list_objects_v2(Bucket=minio_env.bucket, Prefix=prefix)["Contents"]
        objects = {o["Key"].removeprefix(prefix):
                   client.get_object(Bucket=minio_env.bucket, Key=o["Key"])["Body"].read() for o in listed}
        envelope = objects.pop("manifest.json")
        assert device_verifies(envelope, objects, public.read_bytes(), gateway).manifest.target == target
    # A missing result is the store's answer, not a crash.
    assert bundle(manifest_path, f"{result_uri}-gone", out_uri, "phones=8", key=private) == 3
    assert "no result manifest" in capsys.readouterr().err


# --- keys and tolerances (no pipeline) -------------------------------------------------------------------


def test_keys_generate_writes_a_private_key_only_its_owner_reads_and_never_overwrites_one(tmp_path, capsys):
    private, public = tmp_path / "k.pem", tmp_path / "k.pub"
    assert main(["keys", "generate", "--out-private", str(private), "--out-public", str(public)]) == 0
    key = signing.load_private_key(private.read_bytes())
    assert signing.key_id(signing.load_public_key(public.read_bytes())) == signing.key_id(key)
    assert f"key {signing.key_id(key)}" in capsys.readouterr().out
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    before = private.read_bytes()
    assert main(["keys", "generate", "--out-private", str(private), "--out-public", str(public)]) == 2
    assert "File exists [KeyNotWritten]" in capsys.readouterr().err
    assert private.read_bytes() == before


def artifact(min_cosine: float | None, max_abs_diff: float = 0.02) -> ArtifactResult:
    fidelity = None if min_cosine is None else FidelityResult(
        cosine=min_cosine, snr_db=40, min_cosine=min_cosine, min_cosine_sample=0, min_snr_db=30, min_snr_sample=0)
    return ArtifactResult(name="ncnn-int8-boards", runtime="ncnn", precision="int8", role="candidate", target="boards",
                          files=["ncnn-int8-boards/model.ncnn.param"], sha256="0" * 64, size_bytes=1,
                          agreement=AgreementResult(top1=100, max_abs_diff=max_abs_diff), fidelity=fidelity,
                          latency=LatencyResult(p50_ms=1, p95_ms=1, runs=1, threads=1, batch_size=1))


@pytest.mark.parametrize(("measured", "tolerance"), [
    (1.0, 0.995),        # fp32: the cross-CPU margin only
    (0.998569, 0.9935),  # int8 digits: the margin still exceeds the measured deviation
    (0.97, 0.94),        # twice the measured deviation
    (0.92, 0.9),         # ...but never below the floor
    (0.85, 0.845),       # a measurement under the floor (an SNR-only SLO): the margin only
])
def test_smoke_tolerance_follows_the_measured_fidelity(measured, tolerance):
    check = smoke_check(artifact(measured))
    assert check.min_cosine == pytest.approx(tolerance) and check.max_abs_diff is None


def test_smoke_tolerance_of_a_result_without_fidelity_is_twice_the_largest_difference():
    check = smoke_check(artifact(None, max_abs_diff=0.02))
    assert check.min_cosine is None and check.max_abs_diff == pytest.approx(0.04)


@pytest.mark.parametrize("values", [[], ["phones"], ["phones=0"], ["phones=x"], ["=3"], ["phones=1", "phones=2"]])
def test_versions_must_name_each_target_once_with_a_positive_version(values):
    with pytest.raises(BundleError) as error:
        parse_versions(values)
    assert error.value.reason == "InvalidArguments"
