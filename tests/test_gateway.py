"""The fleet gateway as devices see it: a real uvicorn server on loopback over the in-memory API server."""

import asyncio
import hashlib
import json
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests
import trustme

from gateway_world import (MODEL, NAMESPACE, NOW, TARGET, World, bearer, compressed_model, credential, device_url,
                           enroll, report, rollout, serve, until, write_bundle)
from modelfleet import signing
from modelfleet.agent.trust import TrustedState
from modelfleet.api.bundle import DesiredState
from modelfleet.fleet.backend import DEVICES, MODELS
from modelfleet.fleet.http import Unsatisfiable, byte_range, etag_matches
from modelfleet.fleet.state import CREDENTIAL_ANNOTATION, validity
from modelfleet.fleet.writer import StatusWriter


@pytest.fixture
def world(tmp_path):
    return World(tmp_path / "store")


@pytest.fixture
def running(world):
    with serve(world.gateway()) as running:
        yield running


def trusted(world: World, device: str) -> TrustedState:
    return TrustedState(namespace=NAMESPACE, device=device, state_keys=signing.KeySet([world.state_key]),
                        bundle_keys=signing.KeySet([world.bundle_key]))


def desired(running, device: str, secret: str, **headers) -> requests.Response:
    return requests.get(device_url(running.url, device, "desired-state"), headers={**bearer(secret), **headers},
                        timeout=10)


# --- enrolment and authentication ---------------------------------------------------------------------------


def test_enrolment_returns_a_credential_once_and_stores_only_its_hash(running, world):
    response = enroll(running.url, "pi-1")
    assert response.status_code == 201
    secret = response.json()["credential"]
    stored = world.api.get(DEVICES, NAMESPACE, "pi-1")
    assert stored["metadata"]["annotations"][CREDENTIAL_ANNOTATION] == hashlib.sha256(secret.encode()).hexdigest()
    assert stored["metadata"]["labels"] == {"modelfleet.io/class": "phone"}
    assert secret not in json.dumps(stored)

    again = enroll(running.url, "pi-1")
    assert again.status_code == 409 and again.json()["reason"] == "AlreadyEnrolled"
    assert world.api.creates == 1


@pytest.mark.parametrize("token", ["", "wrong-token", "bootstrap-token-for-m"])
def test_enrolment_without_the_bootstrap_token_is_refused(running, world, token):
    response = enroll(running.url, "pi-1", token=token)
    assert response.status_code == 401 and response.json() == {
        "kind": "FleetError", "reason": "Unauthorized", "message": response.json()["message"]}
    assert world.api.creates == 0


def test_enrolment_in_a_namespace_without_a_bootstrap_secret_is_refused(running):
    response = requests.post(f"{running.url}/v1/enroll", json={"namespace": "other", "device": "pi-1",
                                                               "agentVersion": "0.1.0"},
                             headers=bearer("bootstrap-token-for-ml"), timeout=10)
    assert response.status_code == 401


def test_enrolment_with_labels_kubernetes_refuses_is_a_422(running):
    response = enroll(running.url, "pi-1", labels={"bad key!": "x"})
    assert response.status_code == 422 and response.json()["reason"] == "InvalidLabels"


def test_a_device_reads_and_reports_only_for_itself(running):
    mine, theirs = credential(running.url, "pi-1"), credential(running.url, "pi-2")
    assert desired(running, "pi-1", mine).status_code == 200
    for secret, status in ((theirs, 403), ("not-a-credential", 401), ("", 401)):
        assert desired(running, "pi-1", secret).status_code == status
        posted = requests.post(device_url(running.url, "pi-1", "report"), json=report(2), headers=bearer(secret),
                               timeout=10)
        assert posted.status_code == status
        bundle = requests.get(device_url(running.url, "pi-1", f"bundles/{MODEL}/{TARGET}/2/manifest.json"),
                              headers=bearer(secret), timeout=10)
        assert bundle.status_code == status
    no_header = requests.get(device_url(running.url, "pi-1", "desired-state"), timeout=10)
    assert no_header.status_code == 401 and no_header.json()["reason"] == "Unauthorized"
    forbidden = desired(running, "pi-1", theirs)
    assert forbidden.json()["reason"] == "Forbidden"
    assert desired(running, "pi-404", mine).status_code == 403  # an unknown device: still someone else's path


# --- desired state ----------------------------------------------------------------------------------------------


def test_desired_state_verifies_and_names_the_bundle_the_rollout_gives(running, world):
    secret = credential(running.url, "pi-1")
    response = desired(running, "pi-1", secret)
    assert response.headers["ETag"] == f'"{hashlib.sha256(response.content).hexdigest()}"'
    update = trusted(world, "pi-1").verify_desired_state(response.content, NOW)
    (ref,) = update.desired.bundles
    manifest_payload = signing.verify(world.bundles[2]["manifest.json"], signing.KeySet([world.bundle_key]),
                                      signing_model()).payload_sha256
    assert (ref.model, ref.target, ref.version, ref.manifest_sha256, ref.rollback) == (
        MODEL, TARGET, 2, manifest_payload, False)
    assert ref.url == f"v1/devices/{NAMESPACE}/pi-1/bundles/{MODEL}/{TARGET}/2"
    assert update.desired.issued == datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)  # the 300 s window
    assert update.desired.sequence == int(update.desired.issued.timestamp() * 1000)  # milliseconds
    assert update.desired.expires == update.desired.issued + timedelta(seconds=600)


def signing_model():
    from modelfleet.api.bundle import BundleManifest

    return BundleManifest


def test_a_device_the_selector_does_not_match_gets_no_bundle(running, world):
    secret = credential(running.url, "sensor-1", labels={"modelfleet.io/class": "sensor"})
    update = trusted(world, "sensor-1").verify_desired_state(desired(running, "sensor-1", secret).content, NOW)
    assert update.desired.bundles == []


def test_the_current_etag_answers_304_and_a_stale_one_the_document(running):
    secret = credential(running.url, "pi-1")
    first = desired(running, "pi-1", secret)
    etag = first.headers["ETag"]
    again = desired(running, "pi-1", secret, **{"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["ETag"] == etag
    assert desired(running, "pi-1", secret, **{"If-None-Match": f'"x", W/{etag}'}).status_code == 304
    stale = desired(running, "pi-1", secret, **{"If-None-Match": '"0000"'})
    assert stale.status_code == 200 and stale.content == first.content


def test_two_gateways_and_a_restarted_one_sign_byte_identical_documents(world):
    with serve(world.gateway()) as one:
        secret = credential(one.url, "pi-1")
        with serve(world.gateway()) as two:
            until(lambda: ("ml", "pi-1") in two.gateway.state.devices, what="the second gateway to see pi-1")
            a, b = desired(one, "pi-1", secret), desired(two, "pi-1", secret)
            assert a.status_code == b.status_code == 200
            assert a.content == b.content and a.headers["ETag"] == b.headers["ETag"]
    with serve(world.gateway()) as restarted:
        c = desired(restarted, "pi-1", secret)
        assert c.content == a.content and c.headers["ETag"] == a.headers["ETag"]


def test_a_rollout_change_raises_the_sequence_and_a_halt_orders_the_rollback(running, world):
    secret = credential(running.url, "pi-1")
    state = trusted(world, "pi-1")
    first = state.verify_desired_state(desired(running, "pi-1", secret).content, NOW)
    halted = rollout(2, 1, opened=3, halted="LatencyGate", rolledBack=True, changedAt="2026-05-01T12:03:09Z")
    world.api.put(MODELS, compressed_model(halted))
    response = until(lambda: (r := desired(running, "pi-1", secret)).content != b"" and
                     DesiredState.model_validate_json(_payload(r.content)).sequence > first.desired.sequence and r,
                     what="the halt to reach the desired state")
    update = state.verify_desired_state(response.content, NOW)
    (ref,) = update.desired.bundles
    assert (ref.version, ref.rollback) == (1, True)
    assert update.desired.issued == datetime(2026, 5, 1, 12, 3, 9, tzinfo=timezone.utc)


def _payload(envelope: bytes) -> bytes:
    import base64

    return base64.b64decode(json.loads(envelope)["payload"])


def test_a_bundle_signed_by_an_unknown_key_is_never_named(running, world):
    write_bundle(world.root, signing.generate_private_key(), 3, model="kws")
    world.api.put(MODELS, compressed_model(rollout(3, opened=3) | {"salt": "ml/kws/phones"}, name="kws"))
    until(lambda: "kws" in running.gateway.state.models.get(NAMESPACE, {}), what="the gateway to see kws")
    secret = credential(running.url, "pi-1")
    update = trusted(world, "pi-1").verify_desired_state(desired(running, "pi-1", secret).content, NOW)
    assert [(b.model, b.version) for b in update.desired.bundles] == [(MODEL, 2)]
    refused = requests.get(device_url(running.url, "pi-1", "bundles/kws/phones/3/manifest.json"),
                           headers=bearer(secret), timeout=10)
    assert refused.status_code == 404


# --- bundle downloads -------------------------------------------------------------------------------------------


def test_a_download_resumes_with_range_and_the_bundle_verifies(running, world):
    secret = credential(running.url, "pi-1")
    state = trusted(world, "pi-1")
    state.verify_desired_state(desired(running, "pi-1", secret).content, NOW)
    base = device_url(running.url, "pi-1", f"bundles/{MODEL}/{TARGET}/2/")
    files = {}
    for name in ("manifest.json", "model.param", "smoke.npz"):
        files[name] = requests.get(base + name, headers=bearer(secret), timeout=10).content
    whole = world.bundles[2]["model.bin"]
    head = requests.get(base + "model.bin", headers={**bearer(secret), "Range": "bytes=0-99999"}, timeout=10)
    assert head.status_code == 206 and head.headers["Content-Range"] == f"bytes 0-99999/{len(whole)}"
    assert head.headers["Accept-Ranges"] == "bytes"
    rest = requests.get(base + "model.bin", headers={**bearer(secret), "Range": f"bytes={len(head.content)}-",
                                                     "If-Range": head.headers["ETag"]}, timeout=10)
    assert rest.status_code == 206 and rest.headers["Content-Range"] == f"bytes 100000-{len(whole) - 1}/{len(whole)}"
    files["model.bin"] = head.content + rest.content
    assert files["model.bin"] == whole
    bundle = state.verify_bundle(files.pop("manifest.json"), files, NOW, installed_version=1,
                                 slot=state.desired.bundle_for(MODEL, TARGET))
    assert bundle.manifest.version == 2

    beyond = requests.get(base + "model.bin", headers={**bearer(secret), "Range": f"bytes={len(whole)}-"}, timeout=10)
    assert beyond.status_code == 416 and beyond.headers["Content-Range"] == f"bytes */{len(whole)}"
    plain = requests.get(base + "model.bin", headers=bearer(secret), timeout=10)
    assert plain.status_code == 200 and plain.content == whole and plain.headers["Accept-Ranges"] == "bytes"


def test_only_the_named_and_the_fallback_versions_can_be_downloaded(running, world):
    write_bundle(world.root, world.bundle_key, 3)
    secret = credential(running.url, "pi-1")

    def get(path):
        return requests.get(device_url(running.url, "pi-1", f"bundles/{path}"), headers=bearer(secret), timeout=10)

    assert get(f"{MODEL}/{TARGET}/2/model.param").status_code == 200
    assert get(f"{MODEL}/{TARGET}/1/model.param").status_code == 200  # the version it falls back to
    assert get(f"{MODEL}/{TARGET}/3/model.param").status_code == 404  # built, but no rollout names it
    assert get(f"{MODEL}/{TARGET}/2/unlisted.bin").status_code == 404
    assert get(f"{MODEL}/{TARGET}/2/%2e%2e/1/model.bin").status_code in (404, 422)
    assert get(f"{MODEL}/other/2/model.param").status_code == 404


def test_an_s3_store_redirects_to_a_presigned_url(world, monkeypatch):
    from modelfleet.fleet.bundles import BundleStore

    store = BundleStore("s3://fleet-bucket/artifacts", signing.KeySet([world.bundle_key]))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    url = store.presigned_url(NAMESPACE, MODEL, TARGET, 2, "model.bin")
    assert url.startswith("https://fleet-bucket.s3.amazonaws.com/artifacts/ml/digits/bundles/phones/2/model.bin?")
    assert "Signature" in url or "X-Amz-Signature" in url
    gateway = world.gateway()
    gateway.bundles = store
    monkeypatch.setattr(store, "_read", lambda key: world.bundles[2]["manifest.json"] if key[-1] == 2 else None)
    with serve(gateway) as running:
        secret = credential(running.url, "pi-1")
        response = requests.get(device_url(running.url, "pi-1", f"bundles/{MODEL}/{TARGET}/2/model.bin"),
                                headers=bearer(secret), allow_redirects=False, timeout=10)
        assert response.status_code == 307
        assert response.headers["Location"].startswith("https://fleet-bucket.s3.amazonaws.com/artifacts/ml/digits/")


# --- reports -------------------------------------------------------------------------------------------------


def test_polls_and_unchanged_reports_write_nothing_and_a_change_writes_once(running, world):
    secret = credential(running.url, "pi-1")
    post = lambda body: requests.post(device_url(running.url, "pi-1", "report"), json=body,  # noqa: E731
                                      headers=bearer(secret), timeout=10)
    assert post(report(1)).status_code == 204
    until(lambda: world.api.status_writes == 1, what="the first report's write")
    status = world.api.get(DEVICES, NAMESPACE, "pi-1")["status"]
    assert (status["installed"], status["health"], status["p95Ms"]) == ("digits/phones=1", "Healthy", 4.0)

    for _ in range(30):
        assert post(report(1)).status_code == 204
        assert desired(running, "pi-1", secret).status_code == 200
    assert running.gateway.writer.pending == 0
    assert world.api.status_writes == 1

    for _ in range(5):  # a change, reported several times before the writer gets to it: still one write
        post(report(2))
    until(lambda: world.api.status_writes == 2, what="the change's write")
    until(lambda: running.gateway.writer.pending == 0, what="the writer to be idle")
    assert world.api.status_writes == 2
    assert world.api.get(DEVICES, NAMESPACE, "pi-1")["status"]["installed"] == "digits/phones=2"


def test_an_unchanged_report_after_the_heartbeat_writes_last_seen(world):
    with serve(world.gateway(heartbeat_s=0.0)) as running:
        secret = credential(running.url, "pi-1")

        def post():
            return requests.post(device_url(running.url, "pi-1", "report"), json=report(1), headers=bearer(secret),
                                 timeout=10).status_code == 204

        until(lambda: post() and world.api.status_writes == 1, what="the first report's write")
        first = world.api.get(DEVICES, NAMESPACE, "pi-1")["status"]["lastSeen"]
        until(lambda: post() and world.api.status_writes == 2, what="a heartbeat write")
        assert running.gateway.heartbeat_s == 2 / 20  # one device, 20 writes/s: at most half the budget
        assert world.api.get(DEVICES, NAMESPACE, "pi-1")["status"]["lastSeen"] >= first


def test_a_restarted_gateway_rebuilds_devices_credentials_and_reports_from_edgedevices(world):
    with serve(world.gateway()) as first:
        secret = credential(first.url, "pi-1")
        requests.post(device_url(first.url, "pi-1", "report"), json=report(2), headers=bearer(secret), timeout=10)
        until(lambda: world.api.status_writes == 1, what="the report's write")
    with serve(world.gateway()) as second:
        device = second.gateway.state.devices[(NAMESPACE, "pi-1")]
        assert device.status.installed == "digits/phones=2"
        assert desired(second, "pi-1", secret).status_code == 200
        requests.post(device_url(second.url, "pi-1", "report"), json=report(2), headers=bearer(secret), timeout=10)
        assert second.gateway.writer.pending == 0 and world.api.status_writes == 1  # nothing new to write


def test_the_writer_keeps_to_its_rate():
    from modelfleet.fleet.state import Device

    written = []

    async def main():
        writer = StatusWriter(lambda ns, name, status: written.append(time.monotonic()), rate_per_s=50)
        task = asyncio.create_task(writer.run())
        for i in range(26):
            writer.submit(Device(NAMESPACE, f"d{i}", {}, "", NOW), change=True)
        while len(written) < 26:
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(main())
    assert written[-1] - written[0] >= 25 / 50 * 0.95


# --- HTTPS and metrics --------------------------------------------------------------------------------------


def test_https_from_certificate_files(world, tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "tls.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    tls = {"ssl_certfile": str(tmp_path / "tls.pem"), "ssl_keyfile": str(tmp_path / "tls.pem")}
    with serve(world.gateway(), tls=tls) as running:
        assert running.url.startswith("https://")
        secret = credential(running.url, "pi-1", verify=str(tmp_path / "ca.pem"))
        response = requests.get(device_url(running.url, "pi-1", "desired-state"), headers=bearer(secret),
                                verify=str(tmp_path / "ca.pem"), timeout=10)
        assert response.status_code == 200
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{running.url}/healthz", timeout=10)  # a CA the client does not trust
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(running.url.replace("https", "http") + "/healthz", timeout=2)


def test_metrics_aggregate_devices_without_a_series_per_device(running):
    for name, p95 in (("pi-1", 4.0), ("pi-2", 30.0)):
        secret = credential(running.url, name)
        requests.post(device_url(running.url, name, "report"), headers=bearer(secret), timeout=10,
                      json=report(2, p95_ms=p95, error={"reason": "SmokeTestFailed", "at": "2026-05-01T11:00:00Z"}))
        desired(running, name, secret)
    text = requests.get(f"{running.metrics_url}/metrics", timeout=10).text
    assert ('modelfleet_gateway_request_duration_seconds_count{code="200",method="GET",'
            'route="/v1/devices/{namespace}/{device}/desired-state"} 2.0') in text
    assert ('modelfleet_fleet_devices{health="Healthy",model="digits",namespace="ml",target="phones",version="2"} 2.0'
            in text)
    assert ('modelfleet_fleet_device_latency_p95_seconds_bucket{le="0.005",model="digits",namespace="ml",'
            'target="phones",version="2"} 1.0') in text
    assert ('modelfleet_fleet_install_failures_total{model="digits",namespace="ml",reason="SmokeTestFailed",'
            'target="phones"} 2.0') in text
    assert "pi-1" not in text and "pi-2" not in text
    assert "_created" not in text
    assert requests.get(f"{running.metrics_url}/healthz", timeout=10).status_code == 200
    assert requests.get(f"{running.url}/metrics", timeout=10).status_code == 404  # not on the devices' port


# --- pure parts ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("header, expected", [
    (None, False), ("", False), ("*", True), ('"abc"', True), ('W/"abc"', True), ('"x", "abc"', True),
    ('"x" , W/"abc"', True), ('"abcd"', False), ("abc", False), ('"x",, "abc"', False)])
def test_if_none_match_parsing(header, expected):
    assert etag_matches(header, '"abc"') is expected


@pytest.mark.parametrize("header, expected", [
    (None, None), ("bytes=0-9", (0, 9)), ("bytes=5-", (5, 99)), ("bytes=-10", (90, 99)), ("bytes=90-200", (90, 99)),
    ("bytes=-200", (0, 99)), ("bytes=9-2", None), ("items=0-1", None), ("bytes=0-1,5-6", None), ("bytes=-", None)])
def test_range_parsing(header, expected):
    assert byte_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=150-160", "bytes=-0"])
def test_unsatisfiable_ranges(header):
    with pytest.raises(Unsatisfiable):
        byte_range(header, 100)


def test_validity_windows_and_changes():
    at = datetime(2026, 5, 1, 12, 4, 59, tzinfo=timezone.utc)
    window = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
    assert validity(at, 300, []) == (window, window + timedelta(seconds=600))
    change = datetime(2026, 5, 1, 12, 3, tzinfo=timezone.utc)
    assert validity(at, 300, [change]) == (change, window + timedelta(seconds=600))
    ahead = datetime(2026, 5, 1, 12, 20, tzinfo=timezone.utc)  # the operator's clock runs ahead
    assert validity(at, 300, [ahead]) == (ahead, ahead + timedelta(seconds=300))
