"""SLO metrics and alerts with the operator in its pod (tests/test_slo_alerts_e2e.py is the same without
Kubernetes, the operator's /metrics in-process).

The operator runs as users install it (conftest's `operator`: deploy/operator.yaml from the operator image).
A real CompressedModel whose SLO no artifact can meet (`maxSizeBytes: 1`) is compressed by a worker Job in a
real pod, and the operator's view of it (`modelfleet_model_slo_met == 0`) is scraped by Debian's Prometheus
on this host from the pod's IP, port 8080 (the pod bridge is local to this machine), with a real tritonserver
on 127.0.0.1 serving the digits CNN under a 1 µs p95 SLO for the serving side. Alertmanager sends to a webhook
receiver in this process: the compression SLO miss and the latency burn (page and ticket) must arrive firing,
then resolved once the SLO is relaxed in the resource's spec (the operator rejudges the result: no new
compression) and the load stops.
"""

import contextlib
import time
import urllib.request

import pytest
from kubernetes import client

from conftest import SYSTEM_NAMESPACE, wait_until
from slo_stack import (AlertmanagerProcess, Load, PrometheusProcess, Webhook, monitoring_binaries, rule_groups,
                       serve_digits)
from test_cluster_operator import (GROUP, PLURAL, VERSION, api, claim, conditions, create,  # noqa: F401 - fixtures
                                   inputs, resource, wait_for)

from modelfleet.domain import alerts
from modelfleet.metrics import DEFAULT_PORT

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

NAME, TRITON_MODEL = "digits", "digits-cluster-slo"
LATENCY_SLO_SECONDS = 1e-6  # every real request is slower


def test_operator_pod_metrics_fire_and_resolve_the_slo_miss_and_the_latency_burn(kube, namespace, claim, inputs,
                                                                                 operator, digits_result, tmp_path):
    own = {"namespace": namespace, "name": NAME}
    slo_miss = ("ModelfleetModelSLONotMet", own)
    page = ("ModelfleetServingLatencyBudgetBurn", own | {"severity": "page"})
    ticket = ("ModelfleetServingLatencyBudgetBurn", own | {"severity": "ticket"})
    began = time.monotonic()

    def log(message: str) -> None:
        print(f"[cluster slo {time.monotonic() - began:6.1f}s] {message}", flush=True)

    create(kube, namespace, resource(inputs, NAME, {"targets": {"edge": []}, "slo": {"maxSizeBytes": 1}}))
    body = wait_for(kube, namespace, NAME, "SLOMet", "False")
    assert conditions(body)["Ready"]["status"] == "False"
    pod = client.CoreV1Api(kube.api).read_namespaced_pod(operator.pod, SYSTEM_NAMESPACE)
    address = f"{pod.status.pod_ip}:{DEFAULT_PORT}"
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        assert f'modelfleet_model_slo_met{{namespace="{namespace}",name="{NAME}"}} 0.0\n' in response.read().decode()
    log(f"SLOMet=False after the compress Job; the operator pod {operator.pod} says slo_met 0 at {address}")

    binaries = monitoring_binaries()
    with contextlib.ExitStack() as exits:
        triton, samples = serve_digits(tmp_path / "triton", digits_result, TRITON_MODEL, f"{namespace}/{NAME}")
        exits.callback(triton.stop)
        webhook = Webhook()
        exits.callback(webhook.stop)
        alertmanager = AlertmanagerProcess(binaries["ALERTMANAGER"], tmp_path / "alertmanager", webhook.url)
        exits.callback(alertmanager.stop)
        prometheus = PrometheusProcess(binaries["PROMETHEUS"], tmp_path / "prometheus",
                                       {alerts.OPERATOR_JOB: [address], "triton": [triton.metrics_address]},
                                       alertmanager.address,
                                       rule_groups(namespace, NAME, TRITON_MODEL, LATENCY_SLO_SECONDS))
        exits.callback(prometheus.stop)
        wait_until(lambda: prometheus.targets_up() == {alerts.OPERATOR_JOB: "up", "triton": "up"}, 60,
                   "Prometheus to scrape the operator pod and Triton")
        wait_until(lambda: prometheus.rule_groups() and set(prometheus.rule_groups().values()) == {"ok"}, 60,
                   "every rule group to be evaluated without errors")
        [scraped] = prometheus.query(f'modelfleet_model_slo_met{{namespace="{namespace}",name="{NAME}"}}')
        assert scraped["value"][1] == "0"

        load = Load(triton.url, TRITON_MODEL, samples).start()
        started = time.monotonic()
        try:
            wait_until(lambda: webhook.all_arrived("firing", started, slo_miss, page, ticket), 150,
                       "the SLO miss and the latency burn (page and ticket) to reach the webhook firing")
            for name, labels in (slo_miss, page, ticket):
                assert alertmanager.alerts(alertname=name, **labels), f"{name} not active in Alertmanager"
            log(f"firing at the webhook {time.monotonic() - started:.1f}s after the load started")

            patched = api(kube).patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, NAME,
                                                               {"spec": {"slo": {"maxSizeBytes": 2_000_000}}})
            fixed = time.monotonic()
            wait_for(kube, namespace, NAME, "SLOMet", "True", timeout=120, generation=patched["metadata"]["generation"])
            (resolved,) = wait_until(lambda: webhook.all_arrived("resolved", fixed, slo_miss), 120,
                                     "the SLO miss to reach the webhook resolved")
            assert webhook.first(page[0], "resolved", **page[1]) is None, "the burn resolved while requests flowed"
            log(f"SLO relaxed in the spec: the miss resolved {resolved - fixed:.1f}s later; the burn still fires")
        finally:
            stopped = time.monotonic()
            sent = load.stop()
        assert load.failed == 0
        times = wait_until(lambda: webhook.all_arrived("resolved", stopped, page, ticket), 120,
                           "the latency burn (page and ticket) to reach the webhook resolved")
        log(f"load stopped after {sent} requests; the burn resolved {[round(t - stopped, 1) for t in times]}s later")
        assert not alertmanager.alerts(alertname="ModelfleetServingLatencyBudgetBurn", **own)
        assert not alertmanager.alerts(alertname="ModelfleetModelSLONotMet", **own)
