"""Attacks on signed bundles and desired states, against an in-memory signing repository (python-tuf's style).

A `Repository` holds the gateway's key (desired states), a worker's key (bundle manifests) and the bundles it
built; `TrustedState` is the device agent's side. Pure: no files, no network, no clock.
"""

import base64
import hashlib
import io
import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import ValidationError

from modelfleet import signing
from modelfleet.agent import errors
from modelfleet.agent.trust import TrustedState
from modelfleet.api.bundle import BundleManifest, BundleRef, DesiredState, SignedEnvelope, TrustRecord

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
NAMESPACE, DEVICE = "ml", "pi-kitchen-1"
SIGNATURE = {"inputs": [{"name": "in0", "dtype": "float32", "shape": [1, 64]}],
             "outputs": [{"name": "out0", "dtype": "float32", "shape": [1, 10]}]}


@dataclass
class Bundle:
    manifest: BundleManifest
    envelope: bytes
    files: dict[str, bytes]

    @property
    def sha256(self) -> str:
        return signing.sha256_hex(_payload(self.envelope))


@dataclass
class Repository:
    """What the worker and the gateway would sign, in memory."""

    state_key: object = field(default_factory=signing.generate_private_key)
    bundle_key: object = field(default_factory=signing.generate_private_key)
    sequence: int = 0

    def bundle(self, version: int = 3, *, target: str = "phones", expires: datetime = NOW + timedelta(days=30),
               key=None, **changes) -> Bundle:
        files = {"model.param": b"7767517\n2 2\nInput in0 0 1 in0\n" + bytes([version]),
                 "model.bin": bytes(range(256)) * 4 + bytes([version]),
                 "smoke.npz": b"PK\x03\x04golden" + bytes([version])}
        manifest = BundleManifest(
            namespace=NAMESPACE, model="digits", target=target, version=version, runtime="ncnn", precision="int8",
            signature=SIGNATURE, model_files=["model.param", "model.bin"],
            files=[{"path": p, "sha256": hashlib.sha256(b).hexdigest(), "sizeBytes": len(b)} for p, b in files.items()],
            smoke={"minCosine": 0.99}, device_selector={"modelfleet.io/class": "pi4"},
            created=expires - timedelta(days=60), expires=expires, **changes)
        return Bundle(manifest, signing.sign(manifest, key or self.bundle_key), files)

    def desired(self, *refs: BundleRef, sequence: int | None = None, issued: datetime = NOW,
                lifetime: timedelta = timedelta(hours=1), device: str = DEVICE, key=None) -> bytes:
        if sequence is None:
            self.sequence += 1
            sequence = self.sequence
        state = DesiredState(namespace=NAMESPACE, device=device, sequence=sequence, issued=issued,
                             expires=issued + lifetime, bundles=list(refs))
        return signing.sign(state, key or self.state_key)

    def agent(self, **kwargs) -> TrustedState:
        kwargs.setdefault("state_keys", signing.KeySet([self.state_key]))
        kwargs.setdefault("bundle_keys", signing.KeySet([self.bundle_key]))
        return TrustedState(namespace=NAMESPACE, device=DEVICE, **kwargs)


def ref(bundle: Bundle, *, rollback: bool = False) -> BundleRef:
    m = bundle.manifest
    return BundleRef(model=m.model, target=m.target, version=m.version, manifest_sha256=bundle.sha256,
                     url=f"bundles/{m.namespace}/{m.model}/{m.target}/{m.version}/bundle.tar", rollback=rollback)


def _envelope(data: bytes) -> dict:
    return json.loads(data)


def _payload(data: bytes) -> bytes:
    return base64.b64decode(_envelope(data)["payload"])


def _with_payload(data: bytes, payload: bytes) -> bytes:
    envelope = _envelope(data) | {"payload": base64.b64encode(payload).decode()}
    return json.dumps(envelope).encode()


def _signed_raw(document: dict, payload_type: str, key) -> bytes:
    """An envelope signed over arbitrary JSON, bypassing the models: what a leaked key could sign."""
    body = signing.canonical_json(document)
    sig = base64.b64encode(key.sign(signing.pae(payload_type, body))).decode()
    return json.dumps({"payloadType": payload_type, "payload": base64.b64encode(body).decode(),
                       "signatures": [{"keyId": signing.key_id(key), "sig": sig}]}).encode()


@pytest.fixture
def repo() -> Repository:
    return Repository()


@pytest.fixture
def agent(repo) -> TrustedState:
    return repo.agent()


def slot(agent: TrustedState, target: str = "phones") -> BundleRef:
    """What the agent installs into: its desired state's order for digits/<target> (a placeholder when none)."""
    ordered = agent.desired.bundle_for("digits", target) if agent.desired else None
    return ordered or BundleRef(model="digits", target=target, version=1, manifest_sha256="0" * 64, url="none")


def _ordered(repo: Repository, agent: TrustedState, bundle: Bundle, **ref_changes) -> None:
    agent.verify_desired_state(repo.desired(ref(bundle, **ref_changes)), NOW)


# --- the honest path ------------------------------------------------------------------------------


def test_an_ordered_fresh_bundle_verifies_and_the_record_is_what_to_persist(repo, agent):
    bundle = repo.bundle(3)
    update = agent.verify_desired_state(repo.desired(ref(bundle)), NOW)
    assert update.changed and update.record == agent.record
    assert (update.record.sequence, update.record.issued) == (1, NOW)

    verified = agent.verify_bundle(bundle.envelope, bundle.files, NOW, installed_version=2, slot=slot(agent))
    assert verified.manifest == bundle.manifest
    assert verified.manifest_sha256 == bundle.sha256
    assert not verified.rollback


def test_files_may_be_readers(repo, agent):
    bundle = repo.bundle(3)
    _ordered(repo, agent, bundle)
    readers = {path: io.BytesIO(data) for path, data in bundle.files.items()}
    assert agent.verify_bundle(bundle.envelope, readers, NOW, installed_version=None, slot=slot(agent)).manifest.version == 3


# --- tampered bundles -----------------------------------------------------------------------------


@pytest.mark.parametrize("change", [
    pytest.param(lambda b: b[:-1] + bytes([b[-1] ^ 1]), id="one-bit-flipped"),
    pytest.param(lambda b: b[:-1], id="truncated"),
    pytest.param(lambda b: b + b"\0", id="padded"),
    pytest.param(lambda b: b"", id="emptied"),
])
def test_tampered_file_is_refused(repo, agent, change):
    bundle = repo.bundle(3)
    _ordered(repo, agent, bundle)
    files = bundle.files | {"model.bin": change(bundle.files["model.bin"])}
    with pytest.raises(errors.TamperedFile, match="model.bin"):
        agent.verify_bundle(bundle.envelope, files, NOW, installed_version=2, slot=slot(agent))


def test_an_endless_file_is_not_read_past_its_listed_size(repo, agent):
    bundle = repo.bundle(3)
    _ordered(repo, agent, bundle)

    class Endless:
        read_bytes = 0

        def read(self, size=-1):
            self.read_bytes += size
            return b"\0" * size

    endless = Endless()
    with pytest.raises(errors.TamperedFile, match="longer than"):
        agent.verify_bundle(bundle.envelope, bundle.files | {"model.bin": endless}, NOW, installed_version=2, slot=slot(agent))
    assert endless.read_bytes <= 2 << 20


@pytest.mark.parametrize(("drop", "add"), [("smoke.npz", None), (None, "evil.so"), ("model.bin", "model.bin.orig")])
def test_missing_or_unlisted_file_is_refused(repo, agent, drop, add):
    bundle = repo.bundle(3)
    _ordered(repo, agent, bundle)
    files = {p: b for p, b in bundle.files.items() if p != drop} | ({add: b"x"} if add else {})
    with pytest.raises(errors.FileSetMismatch):
        agent.verify_bundle(bundle.envelope, files, NOW, installed_version=2, slot=slot(agent))


def test_tampered_manifest_is_refused(repo, agent):
    # The attacker swaps model.bin and rewrites its hash in the manifest, keeping the signature.
    bundle = repo.bundle(3)
    _ordered(repo, agent, bundle)
    evil = b"evil weights"
    document = json.loads(_payload(bundle.envelope))
    document["files"][1] |= {"sha256": hashlib.sha256(evil).hexdigest(), "sizeBytes": len(evil)}
    tampered = _with_payload(bundle.envelope, signing.canonical_json(document))
    with pytest.raises(errors.TamperedManifest):
        agent.verify_bundle(tampered, bundle.files | {"model.bin": evil}, NOW, installed_version=2, slot=slot(agent))


def test_tampered_signature_is_refused(repo, agent):
    bundle = repo.bundle(3)
    _ordered(repo, agent, bundle)
    envelope = _envelope(bundle.envelope)
    sig = bytearray(base64.b64decode(envelope["signatures"][0]["sig"]))
    sig[0] ^= 1
    envelope["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    with pytest.raises(errors.TamperedManifest):
        agent.verify_bundle(json.dumps(envelope).encode(), bundle.files, NOW, installed_version=2, slot=slot(agent))


def test_tampered_desired_state_is_refused(repo, agent):
    # A man in the middle points the device at another bundle, keeping the gateway's signature.
    desired = repo.desired(ref(repo.bundle(3)))
    document = json.loads(_payload(desired))
    document["bundles"][0] |= {"version": 4, "manifestSha256": "e" * 64}
    with pytest.raises(errors.TamperedDesiredState):
        agent.verify_desired_state(_with_payload(desired, signing.canonical_json(document)), NOW)
    assert agent.record is None and agent.desired is None


# --- keys ---------------------------------------------------------------------------------------


def test_manifest_signed_by_an_unknown_key_is_refused(repo, agent):
    bundle = repo.bundle(3, key=signing.generate_private_key())
    _ordered(repo, agent, bundle)
    with pytest.raises(errors.UnknownKey):
        agent.verify_bundle(bundle.envelope, bundle.files, NOW, installed_version=2, slot=slot(agent))


def test_a_signature_claiming_a_trusted_key_id_does_not_verify(repo, agent):
    # The key id is only a hint: an attacker's signature labelled with the trusted id is checked with the real key.
    bundle = repo.bundle(3, key=signing.generate_private_key())
    _ordered(repo, agent, bundle)
    envelope = _envelope(bundle.envelope)
    envelope["signatures"][0]["keyId"] = signing.key_id(repo.bundle_key)
    with pytest.raises(errors.TamperedManifest):
        agent.verify_bundle(json.dumps(envelope).encode(), bundle.files, NOW, installed_version=2, slot=slot(agent))


def test_a_worker_key_cannot_sign_desired_states(repo, agent):
    # Desired states and manifests are trusted from different keys: a key leaked from a worker (which runs
    # users' models) can sign a bundle but cannot order a device to install it.
    with pytest.raises(errors.UnknownKey):
        agent.verify_desired_state(repo.desired(ref(repo.bundle(3)), key=repo.bundle_key), NOW)


def test_a_manifest_signature_does_not_pass_for_a_desired_state(repo):
    # One key for both roles: the payload type inside the signed bytes still tells the documents apart.
    bundle = repo.bundle(3)
    agent = repo.agent(state_keys=signing.KeySet([repo.bundle_key]))
    with pytest.raises(errors.Malformed, match="desired-state"):
        agent.verify_desired_state(bundle.envelope, NOW)
    relabelled = _envelope(bundle.envelope) | {"payloadType": DesiredState.PAYLOAD_TYPE}
    with pytest.raises(errors.TamperedDesiredState):
        agent.verify_desired_state(json.dumps(relabelled).encode(), NOW)


def test_key_rotation(repo):
    old, new = repo.bundle_key, signing.generate_private_key()
    by_old, by_new = repo.bundle(3, key=old), repo.bundle(4, key=new)
    both = Bundle(by_new.manifest, signing.sign(by_new.manifest, old, new), by_new.files)

    # During the rotation the agent trusts both keys: bundles signed by either verify.
    rotating = repo.agent(bundle_keys=signing.KeySet([old, new]))
    for bundle in (by_old, by_new, both):
        _ordered(repo, rotating, bundle)
        verified = rotating.verify_bundle(bundle.envelope, bundle.files, NOW, installed_version=3, slot=slot(rotating))
        assert verified.manifest == bundle.manifest

    # Once the old key is removed, what it alone signed is refused; the new key's and the doubly signed pass.
    rotated = repo.agent(bundle_keys=signing.KeySet([old, new]).without(signing.key_id(old)))
    _ordered(repo, rotated, by_old)
    with pytest.raises(errors.UnknownKey):
        rotated.verify_bundle(by_old.envelope, by_old.files, NOW, installed_version=3, slot=slot(rotated))
    for bundle in (by_new, both):
        _ordered(repo, rotated, bundle)
        rotated.verify_bundle(bundle.envelope, bundle.files, NOW, installed_version=3, slot=slot(rotated))
    # A signature re-made with the new key leaves the manifest's pin (the payload's sha256) as it was.
    assert both.sha256 == by_new.sha256


def test_threshold_needs_distinct_trusted_keys(repo):
    second = signing.generate_private_key()
    keys = signing.KeySet([repo.state_key, second], threshold=2)
    agent = repo.agent(state_keys=keys)
    with pytest.raises(errors.TamperedDesiredState, match="2 needed"):
        agent.verify_desired_state(repo.desired(), NOW)
    state = DesiredState(namespace=NAMESPACE, device=DEVICE, sequence=9, issued=NOW, expires=NOW + timedelta(hours=1))
    doubled = _envelope(signing.sign(state, repo.state_key))
    doubled["signatures"] *= 2  # the same signature twice counts once
    with pytest.raises(errors.TamperedDesiredState):
        agent.verify_desired_state(json.dumps(doubled).encode(), NOW)
    assert agent.verify_desired_state(signing.sign(state, repo.state_key, second), NOW).desired.sequence == 9


# --- freshness and rollback ---------------------------------------------------------------------


def test_replayed_old_desired_state_is_refused(repo, agent):
    old = repo.desired(ref(repo.bundle(2)))
    agent.verify_desired_state(repo.desired(ref(repo.bundle(3))), NOW)
    with pytest.raises(errors.Replayed, match="sequence 1 is below the trusted 2"):
        agent.verify_desired_state(old, NOW)
    assert agent.record.sequence == 2
    assert agent.desired.bundles[0].version == 3


def test_a_restarted_agent_still_refuses_the_replay(repo, agent):
    old = repo.desired()
    update = agent.verify_desired_state(repo.desired(), NOW)
    stored = json.dumps(update.record.to_wire())

    restarted = repo.agent(record=TrustRecord.model_validate_json(stored))
    with pytest.raises(errors.Replayed):
        restarted.verify_desired_state(old, NOW)


def test_the_same_desired_state_again_is_unchanged_and_a_different_one_with_its_sequence_is_refused(repo, agent):
    first = repo.desired(ref(repo.bundle(3)), sequence=5)
    agent.verify_desired_state(first, NOW)
    again = agent.verify_desired_state(first, NOW + timedelta(minutes=1))
    assert not again.changed and again.record.sequence == 5

    other = repo.desired(ref(repo.bundle(4)), sequence=5)
    with pytest.raises(errors.SequenceReused):
        agent.verify_desired_state(other, NOW)
    assert agent.desired.bundles[0].version == 3


def test_frozen_desired_state_is_refused(repo, agent):
    # An attacker keeps serving the last answer after it expired, hiding newer ones.
    frozen = repo.desired(issued=NOW - timedelta(hours=2), lifetime=timedelta(hours=1))
    with pytest.raises(errors.Frozen):
        agent.verify_desired_state(frozen, NOW)
    assert agent.record is None

    # The same answer that was fresh when trusted goes stale for bundles too.
    bundle = repo.bundle(3)
    agent.verify_desired_state(repo.desired(ref(bundle), lifetime=timedelta(minutes=10)), NOW)
    with pytest.raises(errors.Frozen):
        agent.verify_bundle(bundle.envelope, bundle.files, NOW + timedelta(hours=1), installed_version=2, slot=slot(agent))


@pytest.mark.parametrize(("expired_ago", "skew", "accepted"), [
    (timedelta(minutes=2), timedelta(minutes=5), True),
    (timedelta(minutes=2), timedelta(minutes=1), False),
    (timedelta(0), timedelta(0), False),  # the expiry instant itself is already too late
    (timedelta(seconds=-1), timedelta(0), True),
])
def test_expired_manifest_is_refused_within_the_skew_allowance(repo, expired_ago, skew, accepted):
    agent = repo.agent(clock_skew=skew)
    bundle = repo.bundle(3, expires=NOW - expired_ago)
    _ordered(repo, agent, bundle)
    if accepted:
        agent.verify_bundle(bundle.envelope, bundle.files, NOW, installed_version=2, slot=slot(agent))
    else:
        with pytest.raises(errors.Expired):
            agent.verify_bundle(bundle.envelope, bundle.files, NOW, installed_version=2, slot=slot(agent))


def test_a_clock_that_went_back_does_not_revive_an_expired_manifest(repo, agent):
    # A board without a real-time clock boots at 1970: the last trusted desired state's issue time bounds it.
    bundle = repo.bundle(3, expires=NOW - timedelta(days=1))
    _ordered(repo, agent, bundle)
    with pytest.raises(errors.Expired):
        agent.verify_bundle(bundle.envelope, bundle.files, datetime(1970, 1, 1, tzinfo=timezone.utc), 2, slot=slot(agent))


def test_downgrade_is_refused_unless_the_desired_state_orders_the_rollback(repo, agent):
    old = repo.bundle(2)
    _ordered(repo, agent, old)
    with pytest.raises(errors.Downgrade, match="below the installed version 3"):
        agent.verify_bundle(old.envelope, old.files, NOW, installed_version=3, slot=slot(agent))

    _ordered(repo, agent, old, rollback=True)
    assert agent.verify_bundle(old.envelope, old.files, NOW, installed_version=3, slot=slot(agent)).rollback


def test_reinstalling_the_installed_version_is_no_downgrade(repo, agent):
    bundle = repo.bundle(3)
    _ordered(repo, agent, bundle)
    assert not agent.verify_bundle(bundle.envelope, bundle.files, NOW, installed_version=3, slot=slot(agent)).rollback


def test_mix_and_match_a_signed_manifest_the_desired_state_does_not_name_is_refused(repo, agent):
    # Every manifest below is validly signed; only the one the desired state pins may install.
    ordered = repo.bundle(3)
    _ordered(repo, agent, ordered)
    older = repo.bundle(2)
    same_version_other_build = repo.bundle(3, min_agent_version="0.1.1")
    other_target = repo.bundle(3, target="tablets")
    for bundle in (older, same_version_other_build, other_target):
        with pytest.raises(errors.WrongBundle):
            agent.verify_bundle(bundle.envelope, bundle.files, NOW, installed_version=None, slot=slot(agent))
    # A slot the desired state does not order at all.
    with pytest.raises(errors.NotOrdered):
        agent.verify_bundle(other_target.envelope, other_target.files, NOW, installed_version=None,
                            slot=slot(agent, "tablets"))


def test_mix_and_match_another_ordered_models_bundle_in_this_slot_is_refused(repo, agent):
    # Both bundles are ordered by the same desired state; B's validly signed manifest and files served at A's URL
    # must not install into A's slot (TUF and Uptane pin targets by hash for exactly this).
    a = repo.bundle(2)
    b = repo.bundle(5, target="tablets")
    agent.verify_desired_state(repo.desired(ref(a), ref(b)), NOW)
    with pytest.raises(errors.WrongBundle, match="tablets version 5 .* was served for ml/digits/phones version 2"):
        agent.verify_bundle(b.envelope, b.files, NOW, installed_version=1, slot=slot(agent, "phones"))
    assert agent.verify_bundle(b.envelope, b.files, NOW, installed_version=None,
                               slot=slot(agent, "tablets")).manifest.version == 5


def test_a_desired_state_for_another_device_is_refused(repo, agent):
    with pytest.raises(errors.WrongDevice):
        agent.verify_desired_state(repo.desired(device="pi-garage-2"), NOW)


def test_no_bundle_before_a_desired_state(repo, agent):
    bundle = repo.bundle(3)
    with pytest.raises(errors.NoDesiredState):
        agent.verify_bundle(bundle.envelope, bundle.files, NOW, installed_version=None, slot=slot(agent))


def test_a_bundle_for_a_newer_agent_is_refused(repo):
    agent = repo.agent(agent_version="0.9.12")
    bundle = repo.bundle(3, min_agent_version="0.10.0")
    _ordered(repo, agent, bundle)
    with pytest.raises(errors.AgentTooOld, match="needs agent 0.10.0"):
        agent.verify_bundle(bundle.envelope, bundle.files, NOW, installed_version=2, slot=slot(agent))


def test_a_naive_reference_time_is_a_programming_error(repo, agent):
    with pytest.raises(ValueError, match="zone"):
        agent.verify_desired_state(repo.desired(), NOW.replace(tzinfo=None))


# --- hostile manifests --------------------------------------------------------------------------


HOSTILE_PATHS = ["../../etc/passwd", "/etc/passwd", "models/../../x", "a\\b", "a\x00b", "./model.bin", "a//b",
                 ".bashrc", "model.bin/", "C:/Windows", "mod\u0435l.bin", "line\nbreak", ""]


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_path_traversal_in_a_manifest_is_refused_by_the_model(repo, path):
    document = repo.bundle(3).manifest.to_wire()
    document["files"][2]["path"] = path
    with pytest.raises(ValidationError):
        BundleManifest.model_validate(document)


def test_path_traversal_signed_by_a_trusted_key_is_still_refused(repo, agent):
    bundle = repo.bundle(3)
    document = json.loads(_payload(bundle.envelope))
    document["files"][2]["path"] = document["smoke"]["file"] = "../../../etc/cron.d/x"
    envelope = _signed_raw(document, BundleManifest.PAYLOAD_TYPE, repo.bundle_key)
    agent.verify_desired_state(repo.desired(ref(bundle)), NOW)
    with pytest.raises(errors.InvalidManifest, match="files.2.path"):
        agent.verify_bundle(envelope, bundle.files, NOW, installed_version=2, slot=slot(agent))


@pytest.mark.parametrize(("paths", "problem"), [
    (["model.bin", "Model.bin"], "listed twice"),
    (["model.bin/x"], "as a file and as a directory"),
    (["lib/a/b.so", "LIB/a"], "as a file and as a directory"),
    (["manifest.json"], "manifest itself"),
])
def test_colliding_paths_are_refused(repo, paths, problem):
    document = repo.bundle(3).manifest.to_wire()
    document["files"] += [{"path": p, "sha256": "0" * 64, "sizeBytes": 1} for p in paths]
    with pytest.raises(ValidationError, match=problem):
        BundleManifest.model_validate(document)


def test_unlisted_model_or_smoke_file_is_refused(repo):
    document = repo.bundle(3).manifest.to_wire()
    document["modelFiles"] = ["model.param", "weights.bin"]
    with pytest.raises(ValidationError, match="must be listed in files: weights.bin"):
        BundleManifest.model_validate(document)


def test_a_desired_state_may_not_send_the_agent_to_another_host(repo):
    wire = ref(repo.bundle(3)).to_wire()
    for url in ("https://evil.example/bundle.tar", "//evil.example/x", "../admin", "/etc/passwd"):
        with pytest.raises(ValidationError, match="url"):
            BundleRef.model_validate(wire | {"url": url})


def test_duplicate_keys_are_refused_in_envelopes_and_payloads(repo, agent):
    desired = repo.desired()
    text = desired.decode()
    doubled = text[:-1] + ',"payloadType":"' + DesiredState.PAYLOAD_TYPE + '"}'
    with pytest.raises(errors.Malformed, match="repeats a key"):
        agent.verify_desired_state(doubled.encode(), NOW)

    body = signing.canonical_json(json.loads(_payload(desired)))
    body = body[:-1] + b',"sequence":99}'  # a second sequence another parser might take
    sig = base64.b64encode(repo.state_key.sign(signing.pae(DesiredState.PAYLOAD_TYPE, body))).decode()
    envelope = json.dumps({"payloadType": DesiredState.PAYLOAD_TYPE, "payload": base64.b64encode(body).decode(),
                           "signatures": [{"keyId": signing.key_id(repo.state_key), "sig": sig}]}).encode()
    with pytest.raises(errors.InvalidDesiredState, match="repeats a key"):
        agent.verify_desired_state(envelope, NOW)


@pytest.mark.parametrize("data", [b"", b"null", b"[]", b"{}", b"\xff\xfe", b"[" * 100_000, b" " * (3 << 20),
                                  b'{"payloadType":"application/vnd.modelfleet.desired-state+json","payload":"!!",'
                                  b'"signatures":[{"keyId":"0123456789abcdef","sig":"AA=="}]}'])
def test_garbage_is_malformed(agent, data):
    with pytest.raises(errors.Malformed):
        agent.verify_desired_state(data, NOW)


# --- canonical JSON, keys, the error trees ------------------------------------------------------


def test_canonical_json_is_stable():
    assert signing.canonical_json({"b": 1, "a": [1, "é", {"d": None, "c": 0.5}]}) == \
        '{"a":[1,"é",{"c":0.5,"d":null}],"b":1}'.encode()
    with pytest.raises(ValueError):
        signing.canonical_json({"x": float("nan")})


def test_canonical_json_of_a_model_does_not_depend_on_how_it_was_built(repo):
    manifest = repo.bundle(3).manifest
    wire = manifest.to_wire()
    shuffled = dict(reversed(list(wire.items())))
    shuffled["created"] = manifest.created.astimezone(timezone(timedelta(hours=2))).isoformat()
    rebuilt = BundleManifest.model_validate(shuffled)
    assert signing.canonical_json(rebuilt) == signing.canonical_json(manifest)
    text = signing.canonical_json(manifest).decode()
    assert " " not in text and '"created":"2026-04-01T12:00:00Z"' in text
    keys = list(json.loads(text))
    assert keys == sorted(keys)


def test_signing_refuses_what_verifying_would_refuse(repo):
    bad = repo.bundle(3).manifest.model_copy(update={"expires": NOW - timedelta(days=365)})
    with pytest.raises(ValidationError, match="expires must be after created"):
        signing.sign(bad, repo.bundle_key)


def test_key_ids_and_loading_public_keys():
    key = signing.generate_private_key()
    kid = signing.key_id(key)
    assert re.fullmatch(r"[0-9a-f]{16}", kid)
    assert kid == hashlib.sha256(base64.b64decode(signing.public_key_base64(key))).hexdigest()[:16]
    keys = signing.KeySet.load([signing.public_key_pem(key), signing.public_key_base64(key)])
    assert keys.ids == {kid} and len(keys) == 1


@pytest.mark.parametrize("text", ["", "not base64!", base64.b64encode(b"\1" * 31).decode(),
                                  "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"])
def test_bad_public_keys_are_refused(text):
    with pytest.raises(signing.InvalidKey):
        signing.load_public_key(text)


def test_a_non_ed25519_key_is_refused():
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    with pytest.raises(signing.InvalidKey, match="ed25519"):
        signing.load_private_key(pem)
    public = rsa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(signing.InvalidKey, match="ed25519"):
        signing.load_public_key(public)


def test_signing_key_round_trips_through_a_secret():
    key = signing.generate_private_key()
    data = signing.secret_data(key)
    assert list(data) == [signing.SECRET_KEY_FIELD]
    assert signing.key_id(signing.private_key_from_secret(data)) == signing.key_id(key)
    with pytest.raises(signing.InvalidKey, match="no 'signing-key.pem'"):
        signing.private_key_from_secret({"tls.key": data[signing.SECRET_KEY_FIELD]})
    with pytest.raises(signing.InvalidKey):
        signing.private_key_from_secret({signing.SECRET_KEY_FIELD: "bm90IGEga2V5"})


def test_bad_data_and_transport_errors_are_separate_trees():
    refused = [cls for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, errors.Refused)]
    reasons = [cls.reason for cls in refused if cls is not errors.Refused]
    assert len(reasons) == len(set(reasons)) >= 17
    assert all(re.fullmatch(r"[A-Z][A-Za-z0-9]*", r) for r in reasons)
    assert not issubclass(errors.TransportError, errors.Refused)
    assert not any(issubclass(cls, errors.TransportError) for cls in refused)
    assert str(errors.Frozen("expired")) == "Frozen: expired"


def test_the_envelope_is_the_documented_shape(repo):
    envelope = SignedEnvelope.model_validate_json(repo.desired())
    assert envelope.payload_type == "application/vnd.modelfleet.desired-state+json"
    (only,) = envelope.signatures
    assert only.key_id == signing.key_id(repo.state_key)
    assert len(base64.b64decode(only.sig)) == 64


def test_the_agent_side_imports_only_api_signing_and_cryptography():
    # The device agent runs it: no kopf, Kubernetes client, ML stack or YAML.
    code = ("import json, sys, modelfleet.agent.trust; "
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                           text=True).stdout))
    assert loaded & {"kopf", "kubernetes", "torch", "onnx", "onnxruntime", "numpy", "yaml", "boto3"} == set()
    assert {"cryptography", "pydantic"} <= loaded
