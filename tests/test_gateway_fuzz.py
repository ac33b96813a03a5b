"""The gateway fuzzed from its own OpenAPI document (schemathesis) against the real server: no 5xx, answers as
documented, and no cross-device access: a second device's credential never reads or reports for the first."""

from collections import Counter

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway_world import NAMESPACE, TOKEN, World, credential, serve

VICTIM, ATTACKER = "pi-victim", "pi-attacker"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    world = World(tmp_path_factory.mktemp("fuzz-store"))
    with serve(world.gateway()) as running:
        running.credentials = {name: credential(running.url, name) for name in (VICTIM, ATTACKER)}
        running.world = world
        yield running


WHO = st.sampled_from(["attacker", "victim", "none", "garbage"])  # whose credential the request carries
WHERE = st.sampled_from([VICTIM, VICTIM, ATTACKER, None])  # which device's path (None: what the fuzzer made)


def operations(gateway):
    document = requests.get(f"{gateway.url}/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(document)
    return [result.ok() for result in schema.get_all_operations()]


def test_the_fuzzer_covers_every_route(gateway):
    assert sorted((o.method.upper(), o.path) for o in operations(gateway)) == [
        ("GET", "/v1/devices/{namespace}/{device}/bundles/{model}/{target}/{version}/{path}"),
        ("GET", "/v1/devices/{namespace}/{device}/desired-state"),
        ("POST", "/v1/devices/{namespace}/{device}/report"),
        ("POST", "/v1/enroll"),
    ]


def test_no_server_errors_and_no_cross_device_access(gateway):
    tried = Counter()
    for operation in operations(gateway):
        given(case=operation.as_strategy(), who=WHO, target=WHERE)(
            settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), database=None)(
                lambda case, who, target: tried.update([_check(case, gateway, who, target)])))()
    # Proof that the attack was tried (on the device routes), not only that nothing failed.
    assert tried["cross-device"] >= 20, tried


def _check(case, gateway, who: str, target: str | None) -> str:
    device_route = "{device}" in case.path
    if device_route:
        if target:  # aim at the enrolled devices too, not only at random names
            case.path_parameters = {**(case.path_parameters or {}), "namespace": NAMESPACE, "device": target}
        secret = {"attacker": gateway.credentials[ATTACKER], "victim": gateway.credentials[VICTIM],
                  "none": None, "garbage": "x" * 43}[who]
    else:
        secret = {"attacker": gateway.credentials[ATTACKER], "victim": TOKEN, "none": None, "garbage": "x"}[who]
    headers = dict(case.headers or {})
    headers.pop("Authorization", None)
    if secret:
        headers["Authorization"] = f"Bearer {secret}"
    case.headers = headers

    response = case.call_and_validate(base_url=gateway.url, allow_redirects=False, timeout=10,
                                      excluded_checks=[schemathesis.checks.ignored_auth,
                                                       schemathesis.checks.positive_data_acceptance,
                                                       schemathesis.checks.missing_required_header])
    assert response.status_code < 500, response.text
    params = case.path_parameters or {}
    if device_route and params.get("namespace") == NAMESPACE and params.get("device") == VICTIM:
        if who == "attacker":
            assert response.status_code == 403, (case.path, response.status_code, response.text)
            return "cross-device"
        if who != "victim":
            assert response.status_code == 401, (case.path, response.status_code, response.text)
    return f"{case.method} {response.status_code}"
