"""Attacks on the real fleet gateway process (tests/gateway_process.py), each named after what it tries: a client
without a credential that sends endless or stalled bodies, huge or malformed headers, floods of connections; a
device with a valid credential that makes up metric labels; whoever can write the bundle store swapping a manifest
or linking another tenant's file into a bundle. Each is refused before it costs the gateway memory, time or
series, and honest devices are served meanwhile."""

import random
import string
import time
from datetime import datetime, timezone

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway_process import GatewayProcess, read_answer, status_of
from gateway_world import MODEL, NAMESPACE, TARGET, TOKEN, enroll, report
from modelfleet import signing
from modelfleet.agent.store import manifest_of
from modelfleet.agent.trust import TrustedState
from modelfleet.api.bundle import DesiredState

REQUEST_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    process = GatewayProcess(tmp_path_factory.mktemp("gateway"), "--request-timeout", str(REQUEST_TIMEOUT_S),
                             "--max-connections-per-client", "16")
    yield process
    process.stop()


def credential(gateway: GatewayProcess, device: str, labels: dict | None = None) -> str:
    response = enroll(gateway.url, device, labels)
    assert response.status_code == 201, response.text
    return response.json()["credential"]


def bearer(secret: str) -> dict:
    return {"Authorization": f"Bearer {secret}"}


def poll_ok(gateway: GatewayProcess, secret: str, device: str) -> bool:
    response = requests.get(gateway.device_url(device, "desired-state"), headers=bearer(secret), timeout=10)
    return response.status_code == 200


# --- a store writer without a key -------------------------------------------------------------------------------


def test_mix_and_match_a_manifest_swapped_on_disk_is_not_what_devices_get(gateway):
    secret = credential(gateway, "pi-mix")
    desired = requests.get(gateway.device_url("pi-mix", "desired-state"), headers=bearer(secret), timeout=10)
    (ref,) = signing.verify(desired.content, gateway.state_keys, DesiredState).payload.bundles
    assert ref.version == 2
    verified = gateway.bundles[2]["manifest.json"]
    # Whoever can write the store puts version 1's validly signed manifest where version 2's was.
    (gateway.bundle_dir(2) / "manifest.json").write_bytes(gateway.bundles[1]["manifest.json"])
    try:
        served = requests.get(f"{gateway.url}/{ref.url}/manifest.json", headers=bearer(secret), timeout=10)
        assert served.status_code == 200
        assert served.content == verified  # the bytes that were verified and pinned, not the file on disk now
        assert manifest_of(served.content)[1] == ref.manifest_sha256
    finally:
        (gateway.bundle_dir(2) / "manifest.json").write_bytes(verified)


def test_a_bundle_file_replaced_by_a_symlink_to_another_tenants_file_is_not_served(gateway):
    secret = credential(gateway, "pi-link")
    assert poll_ok(gateway, secret, "pi-link")
    other_tenant = gateway.store / "other-team" / "secret-model.bin"
    other_tenant.parent.mkdir(parents=True, exist_ok=True)
    other_tenant.write_bytes(b"another tenant's weights")
    listed = gateway.bundle_dir(2) / "model.bin"
    original = listed.read_bytes()
    listed.unlink()
    listed.symlink_to(other_tenant)
    try:
        response = requests.get(gateway.device_url("pi-link", f"bundles/{MODEL}/{TARGET}/2/model.bin"),
                                headers=bearer(secret), timeout=10)
        assert response.status_code == 404 and response.json()["reason"] == "NotFound"
        assert b"another tenant" not in response.content
    finally:
        listed.unlink()
        listed.write_bytes(original)


# --- clients without a credential: memory, time, connections ----------------------------------------------------


def test_endless_unauthenticated_bodies_are_refused_unread_and_rss_stays_flat(gateway):
    before = gateway.rss_mb()
    mib = b"x" * (1 << 20)
    # Declared: 100 MiB. Answered 413 at once, before a byte of the body is read.
    sock = gateway.connect()
    sock.sendall(b"POST /v1/enroll HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 104857600\r\n\r\n")
    answer = read_answer(sock)
    sock.close()
    assert status_of(answer) == 413 and b'"PayloadTooLarge"' in answer
    # Not declared (chunked): read only up to the limit, then 413 and the connection closed.
    for path in (b"/v1/enroll", f"/v1/devices/{NAMESPACE}/pi-x/report".encode()):
        sock = gateway.connect()
        sock.sendall(b"POST " + path + b" HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n")
        sent = 0
        try:
            while sent < 100:
                sock.sendall(b"100000\r\n" + mib + b"\r\n")
                sent += 1
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = read_answer(sock)
        sock.close()
        assert status_of(answer) == 413, answer[:200]
        assert sent < 100  # the gateway stopped taking it long before 100 MiB
    after = gateway.rss_mb()
    print(f"gateway RSS {before:.0f} MiB -> {after:.0f} MiB after 300 MiB of hostile bodies")
    assert after - before < 20


def test_a_stalled_body_is_cut_at_the_request_timeout(gateway):
    sock = gateway.connect()
    started = time.monotonic()
    sock.sendall(b"POST /v1/enroll HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 5000\r\n\r\n{\"namespa")  # 10 bytes of 5,000, then silence
    answer = read_answer(sock)
    sock.close()
    assert status_of(answer) == 408 and b'"RequestTimeout"' in answer
    assert time.monotonic() - started < REQUEST_TIMEOUT_S + 2


def test_slow_drip_headers_are_closed_at_the_request_timeout(gateway):
    sock = gateway.connect()
    started = time.monotonic()
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n")
    try:
        for byte in b"X-Drip: " + b"a" * 100:  # one header byte every 0.2 s, never the blank line
            sock.sendall(bytes([byte]))
            time.sleep(0.2)
            if time.monotonic() - started > REQUEST_TIMEOUT_S + 3:
                break
    except (BrokenPipeError, ConnectionResetError):
        pass
    answer = read_answer(sock)
    sock.close()
    assert status_of(answer) in (408, 0)
    assert time.monotonic() - started < REQUEST_TIMEOUT_S + 3


def test_oversized_headers_get_431_before_authentication(gateway):
    huge = "Bearer " + "A" * (1 << 20)  # a 1 MiB Authorization header
    response = requests.get(gateway.device_url("pi-x", "desired-state"), headers={"Authorization": huge}, timeout=30)
    assert response.status_code == 431 and response.json()["reason"] == "HeadersTooLarge"
    many = {f"X-Filler-{i}": "b" * 500 for i in range(64)}  # 32 KiB in many headers
    response = requests.get(f"{gateway.url}/healthz", headers=many, timeout=30)
    assert response.status_code == 431


def test_a_connection_flood_from_one_address_is_capped_and_other_devices_are_served(gateway):
    honest = credential(gateway, "pi-honest")
    flood = [gateway.connect("127.0.0.9") for _ in range(16)]  # the cap: 16 open connections per address
    try:
        extra = [gateway.connect("127.0.0.9") for _ in range(8)]
        for sock in extra:  # closed at once, not queued
            sock.settimeout(5)
            assert sock.recv(1) == b""
            sock.close()
        assert poll_ok(gateway, honest, "pi-honest")  # another address is served meanwhile
    finally:
        for sock in flood:
            sock.close()


# --- malformed headers: never a 5xx -----------------------------------------------------------------------------


def test_a_range_header_of_5000_digits_is_no_server_error(gateway):
    secret = credential(gateway, "pi-range")
    assert poll_ok(gateway, secret, "pi-range")
    url = gateway.device_url("pi-range", f"bundles/{MODEL}/{TARGET}/2/model.bin")
    for value in ("bytes=" + "9" * 5000 + "-", "bytes=-" + "1" * 5000, "bytes=0-" + "7" * 5000):
        response = requests.get(url, headers={**bearer(secret), "Range": value}, timeout=10)
        assert response.status_code == 200  # not a range this server honours: the whole file
        assert response.content == gateway.bundles[2]["model.bin"]


HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
                      max_size=300)
HEADERS = ("Range", "If-Range", "If-None-Match", "Authorization", "Content-Type", "Content-Length", "Accept-Encoding",
           "Host", "Expect")


@pytest.fixture(scope="module")
def fuzzed_device(gateway):
    secret = credential(gateway, "pi-fuzz")
    assert poll_ok(gateway, secret, "pi-fuzz")
    return secret


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(headers=st.dictionaries(st.sampled_from(HEADERS), HEADER_TEXT | st.sampled_from(
           ["bytes=0-", "bytes=-1", "*", '"x"', 'W/"y", "z"', "Bearer ", "-1", "99999999999999999999999", "12"]),
           min_size=1, max_size=4),
       route=st.sampled_from(["desired-state", "report", f"bundles/{MODEL}/{TARGET}/2/model.bin",
                              f"bundles/{MODEL}/{TARGET}/2/manifest.json", "enroll"]),
       authenticated=st.booleans())
def test_header_fuzz_gives_no_server_error(gateway, fuzzed_device, headers, route, authenticated):
    """Raw requests (no client library tidies the headers up), each header the gateway reads fuzzed."""
    send = dict(headers)
    if authenticated and "Authorization" not in send:
        send["Authorization"] = f"Bearer {fuzzed_device}"
    send.setdefault("Host", "gw")
    method, path, body = "GET", f"/v1/devices/{NAMESPACE}/pi-fuzz/{route}", b""
    if route in ("report", "enroll"):
        method, body = "POST", b'{"agentVersion": "0.1.0", "targets": []}'
        path = "/v1/enroll" if route == "enroll" else path
        declared = send.setdefault("Content-Length", str(len(body)))
        if declared.isdigit() and int(declared) <= 4096:  # what it declares, it sends: no wait for a body
            body = body.ljust(int(declared))[:int(declared)]
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in send.items()) + "Connection: close\r\n"
    sock = gateway.connect()
    try:
        sock.sendall(head.encode("latin-1") + b"\r\n" + body)
        answer = read_answer(sock)
    except (BrokenPipeError, ConnectionResetError):
        return  # closed on a request it would not parse: not a 5xx
    finally:
        sock.close()
    assert status_of(answer) < 500, (send, answer[:300])


# --- a device with a valid credential ---------------------------------------------------------------------------


def test_made_up_model_target_and_reason_labels_create_no_series(gateway):
    secret = credential(gateway, "pi-liar")
    rng = random.Random(7)
    word = lambda: "".join(rng.choices(string.ascii_lowercase, k=10))  # noqa: E731
    for i in range(150):
        body = report(rng.randint(1, 10**6), error={"reason": "Made" + word().capitalize(), "message": "x",
                                                     "at": "2026-05-01T12:00:00Z"})
        body["targets"][0].update(model=word(), target=word())
        response = requests.post(gateway.device_url("pi-liar", "report"), json=body, headers=bearer(secret),
                                 timeout=10)
        assert response.status_code == 204
    text = gateway.metrics()
    failures = [line for line in text.splitlines() if line.startswith("modelfleet_fleet_install_failures_total{")]
    devices = [line for line in text.splitlines() if line.startswith("modelfleet_fleet_devices{")]
    assert len(failures) <= 1 and all('model="Other"' in line and 'reason="Other"' in line for line in failures)
    assert all(MODEL in line or "Other" in line for line in devices) and len(devices) <= 4
    assert len(text) < 64 << 10


def test_a_bootstrap_token_bound_to_classes_enrols_only_those_classes(tmp_path):
    bound = GatewayProcess(tmp_path, allowed_labels={"modelfleet.io/class": ["phone"]})
    try:
        assert enroll(bound.url, "pi-phone", {"modelfleet.io/class": "phone"}).status_code == 201
        refused = enroll(bound.url, "pi-board", {"modelfleet.io/class": "board"})
        assert refused.status_code == 403 and refused.json()["reason"] == "LabelsNotAllowed"
        smuggled = enroll(bound.url, "pi-extra", {"modelfleet.io/class": "phone", "tier": "canary"})
        assert smuggled.status_code == 403
    finally:
        bound.stop()


# --- error shapes -----------------------------------------------------------------------------------------------


def test_framework_errors_carry_the_documented_error_shape(gateway):
    for response, status, reason in (
            (requests.get(f"{gateway.url}/no/such/route", timeout=10), 404, "NotFound"),
            (requests.delete(f"{gateway.url}/v1/enroll", timeout=10), 405, "MethodNotAllowed"),
            (requests.post(f"{gateway.url}/v1/enroll", data=b"{not json", timeout=10,
                           headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}),
             422, "Invalid")):
        assert response.status_code == status
        body = response.json()
        assert body["reason"] == reason and body["message"] and "detail" not in body


def test_honest_devices_are_unaffected_by_the_limits(gateway):
    secret = credential(gateway, "pi-plain")
    state = TrustedState(namespace=NAMESPACE, device="pi-plain", state_keys=gateway.state_keys,
                         bundle_keys=signing.KeySet([gateway.bundle_key]))
    body = requests.get(gateway.device_url("pi-plain", "desired-state"), headers=bearer(secret), timeout=10).content
    update = state.verify_desired_state(body, datetime.now(timezone.utc))
    (ref,) = update.desired.bundles
    files = {name: requests.get(f"{gateway.url}/{ref.url}/{name}", headers=bearer(secret), timeout=10).content
             for name in gateway.bundles[2]}
    envelope = files.pop("manifest.json")
    assert state.verify_bundle(envelope, files, datetime.now(timezone.utc), None, slot=ref).manifest.version == 2
    assert requests.post(gateway.device_url("pi-plain", "report"), json=report(2), headers=bearer(secret),
                         timeout=10).status_code == 204
