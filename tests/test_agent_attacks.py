"""Attacks on a real agent process (python-tuf's attack names): each is refused, the reason reaches the gateway in
the device's report, and the active model stays as it was (version 1 here, checked by loading it).

The bytes come from a stand-in gateway (tests/agent_fleet.py), which plays the attacker or the mirror in the
middle: it serves whatever the test hands it.
"""

import base64
import json
import signal
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from agent_fleet import (MODEL, NAMESPACE, TARGET, Signer, StandInGateway, agent_command, agent_env, check_active,
                         run_agent_once, target_dir)
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


def upgrade(fleet, version: int) -> None:
    """The device installs `version`, the honest way."""
    gateway, signer, directory = fleet
    bundle = signer.bundle(version)
    gateway.publish(bundle)
    gateway.order(DEVICE, signer.desired(DEVICE, bundle.ref()))
    done = run_agent_once(gateway, signer, directory, DEVICE)
    assert done.returncode == 0, done.stderr


def test_a_downgrade_without_a_rollback_order_is_refused(fleet):
    gateway, signer, directory = fleet
    upgrade(fleet, 2)
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



# --- issue 20: what a compromised store or mirror, a bad clock or a damaged disk does to a real agent -------------


def test_mix_and_match_another_models_signed_bundle_served_at_this_slot_is_refused(fleet):
    # The desired state orders digits v2 and another model's v5; whoever can write the bundle store (no key needed)
    # serves the other model's validly signed manifest and files at digits' URL.
    gateway, signer, directory = fleet
    mine, other = signer.bundle(2), signer.bundle(5, model="other", seed=7)
    gateway.publish(other)
    desired = signer.desired(DEVICE, mine.ref(), other.ref())
    assert attack(fleet, desired, {f"{MODEL}/{TARGET}/2": gateway.bundles[f"other/{TARGET}/5"]}) == "WrongBundle"
    # The other model installed in its own slot, from its own URL.
    assert check_active(directory, signing.KeySet([signer.bundle_key]), model="other") == 5


def test_slow_drip_server_is_cut_at_the_request_deadline_and_sigterm_stops_the_agent_within_two_seconds(fleet):
    gateway, signer, directory = fleet
    path = f"/v1/devices/{NAMESPACE}/{DEVICE}/desired-state"
    gateway.drip.add(path)  # one byte every 2 s of a 100,000-byte answer
    command = agent_command(gateway, signer, directory, DEVICE, "--poll-seconds", "2", "--request-timeout", "3")
    process = subprocess.Popen(command, env=agent_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        started = time.monotonic()
        line = _wait_for_line(process, "no complete answer within its deadline", timeout=30)
        assert time.monotonic() - started < 15, line  # the deadline, not a timeout per byte
        polls = lambda: sum(1 for _, seen, _ in gateway.requests_seen if seen == path)  # noqa: E731
        before = polls()
        gateway.wait_for(lambda: polls() > before, timeout=60)  # the next poll, dripping again
        stopped = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
        assert time.monotonic() - stopped < 2.0
        assert process.returncode == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert check_active(directory, signing.KeySet([signer.bundle_key])) == 1


def _wait_for_line(process: subprocess.Popen, text: str, timeout: float) -> str:
    """Read the process's stderr until a line holds `text` (a deadline, not a sleep)."""
    import selectors

    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stderr, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if selector.select(timeout=max(0.0, deadline - time.monotonic())):
                line = process.stderr.readline()
                if text in line:
                    return line
                if not line and process.poll() is not None:
                    break
    raise AssertionError(f"the agent never logged {text!r}")


def test_a_corrupt_trust_record_is_recovered_from_the_last_good_copy_not_a_crash_loop(fleet):
    gateway, signer, directory = fleet
    for _ in range(2):  # sequences 2 and 3: trust.json holds 3, trust.previous.json 2
        gateway.order(DEVICE, signer.desired(DEVICE, signer.bundle(1).ref()))
        assert run_agent_once(gateway, signer, directory, DEVICE).returncode == 0
    assert json.loads((directory / "trust.previous.json").read_bytes())["sequence"] == 2
    (directory / "trust.json").write_bytes(b'{"namespace": "ml", "dev')  # a torn write, a bad block
    replay = signer.desired(DEVICE, signer.bundle(1).ref(), sequence=1)  # older than the last good copy
    gateway.order(DEVICE, replay)
    done = run_agent_once(gateway, signer, directory, DEVICE)
    assert done.returncode == 2, done.stderr  # refused, not a crash
    assert "Traceback" not in done.stderr and "using the last good copy" in done.stderr
    (status,) = gateway.reports(DEVICE)[-1].targets
    assert status.last_error.reason == "Replayed"  # the last good copy's sequence still holds
    # With no good copy at all, the device trusts afresh from its pinned keys, and says so once.
    for name in ("trust.json", "trust.previous.json"):
        (directory / name).write_bytes(b"\x00garbage")
    gateway.order(DEVICE, signer.desired(DEVICE, signer.bundle(1).ref()))
    done = run_agent_once(gateway, signer, directory, DEVICE)
    assert done.returncode == 0, done.stderr
    (status,) = gateway.reports(DEVICE)[-1].targets
    assert status.last_error.reason == "TrustRecordCorrupt" and "trusting afresh" in status.last_error.message
    assert check_active(directory, signing.KeySet([signer.bundle_key])) == 1


def test_a_future_dated_desired_state_is_refused_and_never_locks_the_device_out(fleet):
    gateway, signer, directory = fleet
    ahead = signer.now + timedelta(days=10)  # a gateway whose clock ran ten days ahead, signing with a trusted key
    future = signer.desired(DEVICE, signer.bundle(1).ref(), sequence=10**13, issued=ahead)
    assert attack(fleet, future) == "IssuedInFuture"
    record = json.loads((directory / "trust.json").read_bytes())
    assert record["sequence"] == 1  # nothing from the future was persisted
    upgrade(fleet, 2)  # the gateway's clock is right again: its next correct state installs
    assert check_active(directory, signing.KeySet([signer.bundle_key])) == 2


def test_a_trust_record_persisted_from_a_future_clock_is_set_aside_not_a_lockout(fleet):
    # What an agent before this fix persisted from a future-dated state: every correct state was Replayed after it.
    gateway, signer, directory = fleet
    ahead = (signer.now + timedelta(days=10)).isoformat()
    record = json.loads((directory / "trust.json").read_bytes()) | {"sequence": 10**13, "issued": ahead}
    (directory / "trust.json").write_text(json.dumps(record))
    newer = signer.bundle(2)
    gateway.publish(newer)
    gateway.order(DEVICE, signer.desired(DEVICE, newer.ref()))
    done = run_agent_once(gateway, signer, directory, DEVICE)
    assert done.returncode == 0, done.stderr
    assert check_active(directory, signing.KeySet([signer.bundle_key])) == 2
    (status,) = gateway.reports(DEVICE)[-1].targets
    assert status.last_error.reason == "TrustRecordCorrupt" and "ahead of this device's clock" in status.last_error.message
    assert (directory / "trust.discarded.json").is_file()


def test_a_frozen_gateway_answering_not_modified_past_expiry_is_noticed(fleet):
    gateway, signer, directory = fleet
    short = signer.desired(DEVICE, signer.bundle(1).ref(), issued=datetime.now(timezone.utc).replace(microsecond=0),
                           lifetime=timedelta(seconds=4))
    gateway.order(DEVICE, short)
    command = agent_command(gateway, signer, directory, DEVICE, "--poll-seconds", "0.3", "--clock-skew-seconds", "0")
    process = subprocess.Popen(command, env=agent_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    state = gateway.device(DEVICE)
    try:
        gateway.wait_for(lambda: state.not_modified >= 1, timeout=30)  # the agent holds the state; 304s follow
        report = gateway.wait_for(lambda: next((r for r in state.reports if any(
            t.last_error and t.last_error.reason == "Frozen" for t in r.targets)), None), timeout=30)
        assert "not modified" in report.targets[0].last_error.message
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
    assert check_active(directory, signing.KeySet([signer.bundle_key])) == 1


def test_a_rollback_onto_a_corrupted_kept_version_downloads_it_again(fleet):
    gateway, signer, directory = fleet
    upgrade(fleet, 2)
    kept = target_dir(directory) / "versions" / "1" / "model.bin"
    data = bytearray(kept.read_bytes())
    data[-4:] = b"\x00\x00\x80\x7f"  # same size, other bytes: the size check cannot see it
    kept.write_bytes(bytes(data))
    gateway.order(DEVICE, signer.desired(DEVICE, signer.bundle(1).ref(rollback=True)))
    done = run_agent_once(gateway, signer, directory, DEVICE)
    assert done.returncode == 0, done.stderr
    assert "damaged" in done.stderr
    assert check_active(directory, signing.KeySet([signer.bundle_key])) == 1  # hashes and golden outputs hold


def test_an_active_model_damaged_on_disk_is_reported_and_installed_again(fleet):
    gateway, signer, directory = fleet
    active = target_dir(directory) / "current" / "model.bin"
    data = bytearray(active.read_bytes())
    data[-4:] = b"\x00\x00\x80\x7f"
    active.write_bytes(bytes(data))
    done = run_agent_once(gateway, signer, directory, DEVICE)  # the start hashes the active models
    assert done.returncode == 0, done.stderr
    assert check_active(directory, signing.KeySet([signer.bundle_key])) == 1
    (status,) = gateway.reports(DEVICE)[-1].targets
    assert status.last_error.reason == "ActiveTampered" and "installing it again" in status.last_error.message


def redirect_files(gateway: StandInGateway, elsewhere: StandInGateway, signer: Signer, bundle) -> None:
    """Order `bundle`; the gateway answers every file of it with a 307 to the same path on `elsewhere`."""
    gateway.publish(bundle)
    elsewhere.publish(bundle)
    gateway.order(DEVICE, signer.desired(DEVICE, bundle.ref()))
    for name in bundle.files:
        path = f"/v1/devices/{NAMESPACE}/{DEVICE}/bundles/{MODEL}/{TARGET}/{bundle.version}/{name}"
        gateway.redirects[path] = f"{elsewhere.url}{path}"


def test_a_redirect_from_https_to_http_is_refused_and_the_credential_never_leaves_the_gateways_origin(tmp_path):
    import ssl

    import trustme

    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    gateway, signer, directory = StandInGateway(tls=context), Signer(tmp_path / "keys"), tmp_path / "device"
    elsewhere = StandInGateway()  # plain http on another port: it records what reaches it
    bundle = signer.bundle(1)
    try:
        redirect_files(gateway, elsewhere, signer, bundle)
        done = run_agent_once(gateway, signer, directory, DEVICE, "--ca-file", str(ca_file))
        assert done.returncode == 2
        (status,) = gateway.reports(DEVICE)[-1].targets
        assert status.last_error.reason == "DownloadFailed" and "refusing a redirect from https" in \
            status.last_error.message
        assert elsewhere.requests_seen == []  # nothing, credential or not, went over plain http
    finally:
        gateway.close()
        elsewhere.close()

    # http -> http on another port (what a presigned URL is): followed, without the device's credential.
    gateway, elsewhere = StandInGateway(), StandInGateway()
    elsewhere.public = True
    try:
        redirect_files(gateway, elsewhere, signer, bundle)
        done = run_agent_once(gateway, signer, tmp_path / "device-2", DEVICE)
        assert done.returncode == 0, done.stderr
        assert {path.rsplit("/", 1)[-1] for _, path, _ in elsewhere.requests_seen} == set(bundle.files)
        assert all(auth is None for _, _, auth in elsewhere.requests_seen)
        assert check_active(tmp_path / "device-2", signing.KeySet([signer.bundle_key])) == 1
    finally:
        gateway.close()
        elsewhere.close()


def test_every_reason_the_agent_reports_is_one_the_gateway_counts():
    """The gateway counts device reasons from a closed set (anything else is Other, so devices cannot create
    series): every reason this agent can report must be in it, or its failures would vanish into Other."""
    import re

    from modelfleet.agent import errors, loop
    from modelfleet.api.edgedevice import DEVICE_ERROR_REASONS

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    refused = {cls.reason for cls in subclasses(errors.Refused)}
    source = Path(loop.__file__).read_text()
    installs = set(re.findall(r'(?:InstallFailed\(|_state_problem\(|_count\(ref, "Failed", |reason=)"([A-Z]\w+)"', source))
    installs |= set(re.findall(r'"(\w+Failed)"', source))
    assert refused and {"DownloadFailed", "SmokeTestFailed", "HookFailed", "ActiveTampered"} <= installs
    assert refused | installs <= DEVICE_ERROR_REASONS, sorted((refused | installs) - DEVICE_ERROR_REASONS)
