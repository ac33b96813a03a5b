"""The edge fleet's alerts end to end, real components, no Kubernetes (about 30 s; marked slow).

On 127.0.0.1: the operator's /metrics in this process (`modelfleet.metrics`, a fresh `Metrics`) recording a
CompressedModel whose edge rollout halted on the latency gate and rolled back, as the controller records it
after the halt (`record_model(..., rollouts=[...])`); the fleet gateway's /metrics (`modelfleet.fleet.metrics`
over an in-memory fleet of 20 devices: 19 on the previous bundle, the canary back on it too but reporting
Degraded); Debian's Prometheus scraping both every second as jobs modelfleet-operator and modelfleet-gateway,
with the generated fleet rules at scale 1/60; Debian's Alertmanager sending to a webhook receiver here.

The proof is what reaches the receiver: `ModelfleetRolloutHalted` arrives firing with the resource's and the
reason's labels, and resolved once the operator records the next version's rollout running. Then every query
of the dashboard's edge fleet row must return data from that Prometheus.
"""

import contextlib
import json
import re
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import REPO, wait_until
from slo_stack import FLEET_SCALE, AlertmanagerProcess, PrometheusProcess, Webhook, monitoring_binaries

from modelfleet import dashboard, metrics
from modelfleet.api.compressedmodel import EdgeRolloutStatus
from modelfleet.api.edgedevice import (DeviceLatency, DeviceTargetStatus, EdgeDeviceStatus, InstalledBundle,
                                       SmokeTest)
from modelfleet.domain import alerts
from modelfleet.fleet.metrics import FleetMetrics
from modelfleet.fleet.state import Device

pytestmark = pytest.mark.slow

NAMESPACE, NAME, TARGET = "shop", "digits", "pi"
HALTED = ("ModelfleetRolloutHalted", {"namespace": NAMESPACE, "name": NAME, "target": TARGET,
                                      "reason": "LatencyGate", "severity": "ticket"})
# Nothing here stops a scrape or fails a gateway request; 1 device of 20 Degraded is under 5%.
NEVER = {"ModelfleetOperatorDown", "ModelfleetGatewayDown", "ModelfleetGatewayErrors",
         "ModelfleetFleetDevicesUnhealthy", "ModelfleetFleetDevicesStale", "ModelfleetFleetInstallFailures",
         "ModelfleetRolloutDevicesFailing", "ModelfleetEdgeAgreementBudgetBurn"}
DASHBOARD = REPO / "deploy" / "grafana" / "modelfleet-dashboard.json"


def halted_rollout(version: int) -> EdgeRolloutStatus:
    """The canary (one device of 20) measured a p95 over the gate: halted, devices pointed back at version - 1."""
    now = datetime.now(timezone.utc)
    return EdgeRolloutStatus(
        target=TARGET, version=version, previous_version=version - 1, salt="e2e", wave_bounds=[5.0],
        wave_opened_at=[(now - timedelta(minutes=2)).isoformat()], current_wave=0, halted="LatencyGate",
        message="LatencyGate: the devices' p95 38 ms is over the gate of 10 ms; rolled back to version "
                f"{version - 1}", rolled_back=True, changed_at=now.isoformat(timespec="milliseconds"),
        desired=20, updated=1, healthy=0, failed=0, measured=1, slow=1, disagreeing=0)


def running_rollout(version: int) -> EdgeRolloutStatus:
    now = datetime.now(timezone.utc)
    return EdgeRolloutStatus(
        target=TARGET, version=version, previous_version=version - 2, salt="e2e-2", wave_bounds=[5.0],
        wave_opened_at=[now.isoformat()], current_wave=0, changed_at=now.isoformat(timespec="milliseconds"),
        desired=20)


def fleet(version: int) -> list[Device]:
    """20 devices of class pi, all on `version` after the rollback; the canary reports itself Degraded."""
    now = datetime.now(timezone.utc)
    devices = []
    for i in range(20):
        installed = InstalledBundle(artifact="ncnn-fp16-pi", version=version, bundle_sha256="0" * 64,
                                    since=(now - timedelta(hours=1)).isoformat())
        target = DeviceTargetStatus(model=NAME, target=TARGET, installed=installed,
                                    health="Degraded" if i == 0 else "Healthy",
                                    last_smoke=SmokeTest(agreement=0.999, passed=True),
                                    latency=DeviceLatency(p50_ms=4 + i / 10, p95_ms=6 + i / 10))
        devices.append(Device(NAMESPACE, f"pi-{i:02d}", {"modelfleet.io/class": "pi"}, "0" * 64,
                              now - timedelta(days=1),
                              EdgeDeviceStatus(last_seen=now.isoformat(), targets=[target])))
    return devices


class GatewayMetrics:
    """The fleet gateway's /metrics as `modelfleet gateway` serves it (FleetMetrics over its devices), without the
    device API: a few requests recorded as its middleware records them."""

    def __init__(self, devices: list[Device]):
        self.metrics = FleetMetrics(lambda: devices, lambda: 0)
        for code in ("200", "304"):
            self.metrics.requests.labels("/v1/devices/{device}/desired", "GET", code).observe(0.002)
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                body = owner.metrics.exposition()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format, *args):  # noqa: A002 - the standard library's signature
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, name="gateway-metrics", daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fleet-e2e")
    binaries = monitoring_binaries()
    with contextlib.ExitStack() as exits:
        operator = metrics.Metrics()
        # What the controller records after the reconcile that halted the rollout (spec and result as they were).
        operator.record_model(NAMESPACE, NAME, None, None, "True", rollouts=[halted_rollout(4)])
        server = metrics.serve(0, "127.0.0.1", operator)
        exits.callback(server.shutdown)
        gateway = GatewayMetrics(fleet(3))
        exits.callback(gateway.stop)
        webhook = Webhook()
        exits.callback(webhook.stop)
        alertmanager = AlertmanagerProcess(binaries["ALERTMANAGER"], directory / "alertmanager", webhook.url)
        exits.callback(alertmanager.stop)
        prometheus = PrometheusProcess(
            binaries["PROMETHEUS"], directory / "prometheus",
            {alerts.OPERATOR_JOB: [f"127.0.0.1:{server.server_port}"], alerts.GATEWAY_JOB: [gateway.address]},
            alertmanager.address, alerts.fleet_groups(scale=FLEET_SCALE))
        exits.callback(prometheus.stop)
        yield operator, prometheus, alertmanager, webhook


def test_halted_rollout_reaches_alertmanager_firing_then_resolved_and_the_edge_panels_have_data(stack):
    operator, prometheus, alertmanager, webhook = stack
    began = time.monotonic()
    wait_until(lambda: prometheus.targets_up() == {alerts.OPERATOR_JOB: "up", alerts.GATEWAY_JOB: "up"}, 60,
               "Prometheus to scrape the operator and the gateway")
    wait_until(lambda: prometheus.rule_groups() and set(prometheus.rule_groups().values()) == {"ok"}, 60,
               "every rule group to be evaluated without errors")

    (fired,) = wait_until(lambda: webhook.all_arrived("firing", began, HALTED), 60,
                          "ModelfleetRolloutHalted to reach the webhook firing")
    (active,) = alertmanager.alerts(alertname=HALTED[0])
    assert HALTED[1].items() <= active["labels"].items()
    assert active["labels"]["job"] == alerts.OPERATOR_JOB
    assert "pointed the devices of its open waves back at the previous bundle" in active["annotations"]["description"]
    assert active["annotations"]["summary"] == (
        f"{NAMESPACE}/{NAME}: the rollout to edge target {TARGET} halted (LatencyGate) and was rolled back.")
    print(f"[fleet e2e] ModelfleetRolloutHalted firing at the webhook {fired - began:.1f}s after the start")

    # The edge fleet row of the dashboard, while the halt is on: every query has data.
    board = json.loads(DASHBOARD.read_text())
    values = {"namespace": NAMESPACE, "name": NAME, "__rate_interval": "5s"}
    queries = [(title, _substitute(target["expr"], values))
               for row, title, target in dashboard.row_targets(board) if row == dashboard.EDGE_ROW]
    assert len(queries) >= 5

    def every_query_has_data() -> dict | None:
        results = {key: prometheus.query(key[1]) for key in queries}
        return results if all(results.values()) else None

    # A rate() needs two scrapes in its window: the halt can arrive sooner.
    results = wait_until(every_query_has_data, 15, "every query of the edge fleet row to return data")
    (halted,) = results[next(k for k in results if k[0] == "Halted rollouts")]
    assert float(halted["value"][1]) == 1
    health = {r["metric"]["health"]: float(r["value"][1]) for k, result in results.items()
              if k[0] == "Devices by health" for r in result}
    assert health == {"Healthy": 19, "Degraded": 1}
    (p95,) = results[next(k for k in results if k[0].startswith("Device p95 latency"))]
    assert 0.005 <= float(p95["value"][1]) <= 0.01  # the devices measured 6 to 7.9 ms

    # The next version's rollout starts: the halt is over.
    operator.record_model(NAMESPACE, NAME, None, None, "True", rollouts=[running_rollout(5)])
    restarted = time.monotonic()
    (resolved,) = wait_until(lambda: webhook.all_arrived("resolved", restarted, HALTED), 60,
                             "ModelfleetRolloutHalted to reach the webhook resolved")
    print(f"[fleet e2e] resolved {resolved - restarted:.1f}s after the next rollout was recorded")
    assert not alertmanager.alerts(alertname=HALTED[0])
    assert NEVER & webhook.names("firing") == set()


def _substitute(expr: str, values: dict[str, str]) -> str:
    """A panel's query as Grafana sends it: its variables substituted (`$1` is PromQL's)."""
    return re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m.group(1), m.group(0)), expr)
