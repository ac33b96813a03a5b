"""Attacks on a real agent process (python-tuf's attack names): each is refused, the reason reaches the gateway in
the device's report, and the active model stays as it was (version 1 here, checked by loading it).

The bytes come from a stand-in gateway (tests/agent_fleet.py), which plays the attacker or the mirror in the
middle: it serves whatever the test hands it.
"""

import base64
import json
from datetime import timedelta

import pytest

from agent_fleet import MODEL, TARGET, Signer, StandInGateway, check_active, run_agent_once, target_dir
from modelfleet import signing
from modelfleet.api.bundle import MANIFEST_FILE

DEVICE = "pi-hall-2"


@pytest.fixture
def fleet(tmp_path):
    """A device running version 1, its gateway and signer."""
    gateway, signer = StandInGateway(), Signer(tmp_path / "keys")
    directory = tmp_path / "device"
    gateway.publish(signer.bundle(1))
    gateway.order(DEVICE, signer.desired(DEVICE, signer.bundle(1).ref()))
    done = run_agent_once(gateway, signer, directory, DEVICE)
    assert done.returncode == 0, done.stderr
    yield gateway, signer, directory
    gateway.close()


def attack(fleet, desired: bytes | None = None, serve: dict | None = None) -> str:
    """Order (and serve) what the attacker wants, run the agent once; returns the reason it reported."""
    gateway, signer, directory = fleet
    if serve:
        gateway.bundles.update(serve)
    if desired is not None:
        gateway.order(DEVICE, desired)
    done = run_agent_once(gateway, signer, directory, DEVICE)
    assert done.returncode == 2, done.stderr
    assert check_active(directory, signing.KeySet([signer.bundle_key])) == 1  # untouched, and it still works
    assert not [p for p in (target_dir(directory) / "versions").iterdir() if p.name != "1"]
    (status,) = [t for t in gateway.reports(DEVICE)[-1].targets if (t.model, t.target) == (MODEL, TARGET)]
    assert status.installed.version == 1
    return status.last_error.reason


def served(bundle, **changes) -> dict:
    m = bundle.manifest
    return {f"{m.model}/{m.target}/{m.version}": {MANIFEST_FILE: bundle.envelope, **bundle.files, **changes}}


def test_a_tampered_file_is_refused(fleet):
    _, signer, _ = fleet
    bundle = signer.bundle(2)
    evil = bytearray(bundle.files["model.bin"])
    evil[-4:] = b"\x00\x00\x80\x7f"  # the last bias becomes +inf, same size
    reason = attack(fleet, signer.desired(DEVICE, bundle.ref()), served(bundle, **{"model.bin": bytes(evil)}))
    assert reason == "TamperedFile"


def test_a_tampered_manifest_is_refused(fleet):
    _, signer, _ = fleet
    bundle = signer.bundle(2)
    envelope = json.loads(bundle.envelope)
    payload = json.loads(base64.b64decode(envelope["payload"]))
    payload["smoke"]["minCosine"] = -1.0  # accept anything
    envelope["payload"] = base64.b64encode(signing.canonical_json(payload)).decode()
    reason = attack(fleet, signer.desired(DEVICE, bundle.ref()),
                    served(bundle, **{MANIFEST_FILE: signing.canonical_json(envelope)}))
    assert reason == "TamperedManifest"


def test_a_manifest_signed_by_an_unknown_key_is_refused(fleet):
    _, signer, _ = fleet
    bundle = signer.bundle(2, key=signing.generate_private_key())
    assert attack(fleet, signer.desired(DEVICE, bundle.ref()), served(bundle)) == "UnknownKey"


def test_an_expired_manifest_is_refused(fleet):
    _, signer, _ = fleet
    bundle = signer.bundle(2, expires=signer.now - timedelta(hours=1))
    assert attack(fleet, signer.desired(DEVICE, bundle.ref()), served(bundle)) == "Expired"


def test_a_downgrade_without_a_rollback_order_is_refused(fleet):
    gateway, signer, directory = fleet
    newer = signer.bundle(2)
    gateway.publish(newer)
    gateway.order(DEVICE, signer.desired(DEVICE, newer.ref()))
    assert run_agent_once(gateway, signer, directory, DEVICE).returncode == 0
    gateway.order(DEVICE, signer.desired(DEVICE, signer.bundle(1).ref(rollback=False)))
    done = run_agent_once(gateway, signer, directory, DEVICE)
    assert done.returncode == 2
    assert check_active(directory, signing.KeySet([signer.bundle_key])) == 2
    (status,) = gateway.reports(DEVICE)[-1].targets
    assert (status.installed.version, status.last_error.reason) == (2, "Downgrade")


def test_a_replayed_old_desired_state_is_refused(fleet):
    gateway, signer, directory = fleet
    old = gateway.device(DEVICE).desired  # sequence 1, trusted already
    gateway.order(DEVICE, signer.desired(DEVICE, signer.bundle(1).ref()))  # sequence 2: trusted next
    assert run_agent_once(gateway, signer, directory, DEVICE).returncode == 0
    assert attack(fleet, old) == "Replayed"


def test_a_frozen_desired_state_is_refused(fleet):
    _, signer, _ = fleet
    bundle = signer.bundle(2)
    frozen = signer.desired(DEVICE, bundle.ref(), issued=signer.now - timedelta(hours=3), lifetime=timedelta(hours=1))
    assert attack(fleet, frozen, served(bundle)) == "Frozen"


def test_a_desired_state_signed_by_a_bundle_key_is_refused(fleet):
    _, signer, _ = fleet
    bundle = signer.bundle(2)  # a worker's leaked key cannot order devices around
    assert attack(fleet, signer.desired(DEVICE, bundle.ref(), key=signer.bundle_key), served(bundle)) == "UnknownKey"

