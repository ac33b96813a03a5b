"""SLO metrics and alerts end to end, real components, no Kubernetes (a few minutes; marked slow).

On 127.0.0.1: a real tritonserver 2.51 (`--metrics-config summary_latencies=true`) serving the digits CNN,
published by modelfleet's own publish step; the operator's /metrics in this process (`modelfleet.metrics`),
recording a CompressedModel whose artifacts miss their SLO (`maxSizeBytes: 1`); Debian's Prometheus
scraping both every second and evaluating modelfleet's rules (`domain/alerts.py`: the fleet groups and the
model's serving-SLO group, windows scaled to seconds, a Triton p95 SLO of 1 µs that every real request
misses); Debian's Alertmanager sending to a webhook receiver in this process.

The proof is what reaches the receiver: the compression SLO miss (`ModelfleetModelSLONotMet`) and the
serving-latency burn (`ModelfleetServingLatencyBudgetBurn`, page and ticket) arrive firing while requests
flow, then resolved once the causes go (the model recorded as meeting its SLOs again; the load stopped:
without traffic the burn-rate windows hold no requests and the ratio is undefined, so the alerts resolve
once the longest short window has passed). Then every query of the Grafana dashboard
(deploy/grafana/modelfleet-dashboard.json) must return data from that Prometheus, but for the edge fleet row's
(tests/test_fleet_alerts_e2e.py runs those).
"""

import contextlib
import datetime
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import REPO, digits_example, wait_until
from slo_stack import (AlertmanagerProcess, Load, PrometheusProcess, Webhook, e2e_windows,
                       monitoring_binaries, rule_groups, serve_digits)

from modelfleet import dashboard, metrics
from modelfleet.api.compressedmodel import CompressedModel
from modelfleet.api.result import ResultManifest
from modelfleet.domain import alerts
from modelfleet.domain.plan import MODEL_LABEL
from modelfleet.domain.status import JobState
from modelfleet.errors import RetryableError

pytestmark = pytest.mark.slow

NAMESPACE, NAME, TRITON_MODEL = "shop", "digits", "digits-slo"
LATENCY_SLO_MS = 0.001  # 1 µs: every real request is slower, so the whole latency budget burns
MISSED = {"maxSizeBytes": 1, "latencyP95Ms": {"triton": LATENCY_SLO_MS}}  # no artifact is that small
MET = {"latencyP95Ms": {"triton": LATENCY_SLO_MS}}  # the example's own size limit (2 MB)
OWN = {"namespace": NAMESPACE, "name": NAME}
SLO_MISS = ("ModelfleetModelSLONotMet", OWN)
PAGE = ("ModelfleetServingLatencyBudgetBurn", OWN | {"severity": "page"})
TICKET = ("ModelfleetServingLatencyBudgetBurn", OWN | {"severity": "ticket"})
# Nothing here fails a request, stops a scrape, fails a reconcile after the first scrape or unloads the model.
NEVER = {"ModelfleetOperatorDown", "ModelfleetReconcileErrors", "ModelfleetJobsFailing",
         "ModelfleetTritonRequestErrors", "ModelfleetServingErrorBudgetBurn", "ModelfleetTritonModelNotServed",
         "ModelfleetServingLatencyNotMeasured"}
DASHBOARD = REPO / "deploy" / "grafana" / "modelfleet-dashboard.json"


def finished_job(stage: str, uid: str, seconds: float) -> dict:
    """A worker Job as the API returns it once it completed, just now, after `seconds`."""
    def iso(at: float) -> str:
        return datetime.datetime.fromtimestamp(at, datetime.timezone.utc).isoformat()

    ended = time.time()
    return {"metadata": {"namespace": NAMESPACE, "name": f"{NAME}-{stage}-{uid}", "uid": uid,
                         "labels": {MODEL_LABEL: NAME}},
            "status": {"startTime": iso(ended - seconds), "completionTime": iso(ended),
                       "conditions": [{"type": "Complete", "status": "True", "reason": "CompletionsReached",
                                       "lastTransitionTime": iso(ended)}]}}


def dashboard_expr(expr: str) -> str:
    """A panel's query as Grafana sends it for this model: its variables substituted (`$1` is PromQL's)."""
    values = {"namespace": NAMESPACE, "name": NAME, "model": TRITON_MODEL, "__rate_interval": "1m"}
    return re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m.group(1), m.group(0)), expr)


@dataclass
class Timeline:
    """What reached the webhook receiver and when, by `alertname/severity`."""

    fired: dict[str, float] = field(default_factory=dict)  # seconds after the load started
    resolved: dict[str, float] = field(default_factory=dict)  # seconds after the cause went
    populated_at: float = 0.0  # epoch seconds: every series of the dashboard is present (the load still runs)
    requests: int = 0


class Stack:
    def __init__(self, directory: Path, digits_data: Path, digits_result: Path, exits: contextlib.ExitStack):
        binaries = monitoring_binaries()
        self.triton, self.inputs = serve_digits(directory / "triton", digits_result, TRITON_MODEL, f"{NAMESPACE}/{NAME}")
        exits.callback(self.triton.stop)
        self.result = ResultManifest.model_validate_json((digits_result / "result.json").read_text())

        # The operator's view of the resource, as its reconciles record it (a registry of its own).
        self.metrics = metrics.Metrics()
        self.missed, self.met = (self._spec(digits_data, slo) for slo in (MISSED, MET))
        with pytest.raises(RetryableError), self.metrics.observe_reconcile():
            raise RetryableError("the artifact store did not answer")  # a failed reconcile, retried
        self.reconcile(self.missed, "False")
        self.metrics.observe_job("compress", finished_job("compress", "c1", 40), JobState("Succeeded"))
        assert self._sample("modelfleet_model_slo_met") == 0.0
        server = metrics.serve(0, "127.0.0.1", self.metrics)
        exits.callback(server.shutdown)

        self.webhook = Webhook()
        exits.callback(self.webhook.stop)
        self.alertmanager = AlertmanagerProcess(binaries["ALERTMANAGER"], directory / "alertmanager", self.webhook.url)
        exits.callback(self.alertmanager.stop)
        self.prometheus = PrometheusProcess(
            binaries["PROMETHEUS"], directory / "prometheus",
            {alerts.OPERATOR_JOB: [f"127.0.0.1:{server.server_port}"], "triton": [self.triton.metrics_address]},
            self.alertmanager.address, rule_groups(NAMESPACE, NAME, TRITON_MODEL, LATENCY_SLO_MS / 1000))
        exits.callback(self.prometheus.stop)
        self._timeline: Timeline | None = None
        self._failed = False

    def _spec(self, digits_data: Path, slo: dict):
        manifest = digits_example(digits_data, {"targets": {"edge": [], "triton": {
            "repository": "file:///unused", "modelName": TRITON_MODEL}}, "slo": slo})
        manifest["metadata"]["namespace"] = NAMESPACE
        return CompressedModel.model_validate(manifest).spec

    def _sample(self, name: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, OWN)

    def reconcile(self, spec, ready: str) -> None:
        """What the controller records after a reconcile that read the result under `spec`."""
        with self.metrics.observe_reconcile():
            self.metrics.record_model(NAMESPACE, NAME, spec, self.result, ready)

    def scenario(self) -> Timeline:
        """Fire both alerts, resolve them, once per module (the tests share it); progress on stdout."""
        if self._failed:
            pytest.fail("the alert scenario failed in an earlier test")
        if self._timeline is None:
            try:
                self._timeline = self._run()
            except BaseException:
                self._failed = True
                raise
        return self._timeline

    def _run(self) -> Timeline:
        prometheus, webhook, timeline = self.prometheus, self.webhook, Timeline()
        began = time.monotonic()

        def log(message: str) -> None:
            print(f"[slo e2e {time.monotonic() - began:6.1f}s] {message}", flush=True)

        wait_until(lambda: prometheus.targets_up() == {alerts.OPERATOR_JOB: "up", "triton": "up"}, 60,
                   "Prometheus to scrape the operator and Triton")
        wait_until(lambda: prometheus.rule_groups() and set(prometheus.rule_groups().values()) == {"ok"}, 60,
                   "every rule group to be evaluated without errors")
        log(f"both targets up, {len(prometheus.rule_groups())} rule groups evaluated; "
            f"slo_met=0 recorded; sending requests to {TRITON_MODEL} (p95 SLO {LATENCY_SLO_MS} ms)")

        load = Load(self.triton.url, TRITON_MODEL, self.inputs).start()
        started = time.monotonic()
        try:
            wait_until(lambda: webhook.all_arrived("firing", started, SLO_MISS, PAGE, TICKET), 150,
                       "the SLO miss and the latency burn (page and ticket) to reach the webhook firing")
            for name, labels in (SLO_MISS, PAGE, TICKET):
                timeline.fired[f"{name}/{labels.get('severity', 'ticket')}"] = \
                    webhook.first(name, "firing", started, **labels) - started
                assert self.alertmanager.alerts(alertname=name, **labels), f"{name} not active in Alertmanager"
            log(f"firing at the webhook: {timeline.fired} ({load.sent} requests so far)")

            # The compression is fixed (here: the SLO the owner relaxed): the gate passes, publish runs.
            fixed = time.monotonic()
            self.reconcile(self.met, "True")
            self.metrics.observe_job("publish", finished_job("publish", "p1", 20), JobState("Succeeded"))
            assert self._sample("modelfleet_model_slo_met") == 1.0
            (at,) = wait_until(lambda: webhook.all_arrived("resolved", fixed, SLO_MISS), 60,
                               "the SLO miss to reach the webhook resolved")
            timeline.resolved["ModelfleetModelSLONotMet/ticket"] = at - fixed
            timeline.populated_at = time.time()
            assert webhook.first(PAGE[0], "resolved", **PAGE[1]) is None, "the burn resolved while requests flowed"
            log(f"SLO miss resolved {at - fixed:.1f}s after slo_met=1; the latency burn still fires")
        finally:
            stopped = time.monotonic()
            timeline.requests = load.stop()
        assert load.failed == 0
        log(f"load stopped after {timeline.requests} requests; waiting for the burn alerts to resolve")
        page, ticket = wait_until(lambda: webhook.all_arrived("resolved", stopped, PAGE, TICKET), 120,
                                  "the latency burn (page and ticket) to reach the webhook resolved")
        timeline.resolved |= {"ModelfleetServingLatencyBudgetBurn/page": page - stopped,
                              "ModelfleetServingLatencyBudgetBurn/ticket": ticket - stopped}
        log(f"resolved at the webhook, seconds after their cause went: {timeline.resolved}")
        return timeline


@pytest.fixture(scope="module")
def stack(tmp_path_factory, digits_data, digits_result):
    with contextlib.ExitStack() as exits:
        yield Stack(tmp_path_factory.mktemp("slo-e2e"), digits_data, digits_result, exits)


def test_slo_miss_and_latency_burn_reach_the_webhook_firing_then_resolved(stack):
    timeline = stack.scenario()
    assert set(timeline.fired) == {"ModelfleetModelSLONotMet/ticket", "ModelfleetServingLatencyBudgetBurn/page",
                                   "ModelfleetServingLatencyBudgetBurn/ticket"}
    assert max(timeline.fired.values()) < 120
    # Without traffic the burn resolves once the longest short window (30 s) holds no request, not sooner
    # than the shortest one.
    assert 5 <= timeline.resolved["ModelfleetServingLatencyBudgetBurn/page"] < 90
    assert 5 <= timeline.resolved["ModelfleetServingLatencyBudgetBurn/ticket"] < 90
    assert NEVER & stack.webhook.names("firing") == set()
    assert not stack.alertmanager.alerts(alertname="ModelfleetServingLatencyBudgetBurn")
    assert not stack.alertmanager.alerts(alertname="ModelfleetModelSLONotMet")


def test_every_dashboard_query_returns_data_from_the_real_prometheus(stack):
    timeline = stack.scenario()
    board = json.loads(DASHBOARD.read_text())
    # The edge fleet row reads the gateway's and the rollouts' series, which this stack has not:
    # tests/test_fleet_alerts_e2e.py runs its queries.
    queries = [(title, dashboard_expr(target["expr"])) for row, title, target in dashboard.row_targets(board)
               if row != dashboard.EDGE_ROW]
    assert len(queries) >= 20
    results = {(title, expr): stack.prometheus.query(expr, at=timeline.populated_at) for title, expr in queries}
    empty = [key for key, result in results.items() if not result]
    assert empty == [], f"{len(empty)} of {len(queries)} dashboard queries returned nothing"
    undefined = {title for (title, _), result in results.items() if all(r["value"][1] == "NaN" for r in result)}
    print(f"{len(queries)} dashboard queries, each with data; only NaN: {sorted(undefined)}")
    # Only NaN: a quantile of no observation in the window. The compress Job ended before the first scrape and
    # the publish Job's series began with it, so rate() has seen neither (a series' first value is no increase).
    assert undefined <= {"Stage duration (p95)"}

    def values(title: str) -> list[tuple[dict, float]]:
        return [(r["metric"], float(r["value"][1])) for (t, _), result in results.items() if t == title for r in result]

    # What the panels show is what happened: slow requests over every window (an estimate from Triton's
    # quantiles, domain/alerts.py: with the SLO below the median, at least the half above it, however long the
    # tail), the SLO itself, the artifact the Triton target ships once the gate passed.
    slow = {m["window"]: v for m, v in values("Latency SLI: share of slow requests")}
    assert len(slow) == len(e2e_windows().lengths()) and min(slow.values()) >= 0.5, slow
    budget = [v for m, v in values("Request latency vs the p95 SLO") if m.get("runtime") == "triton"]
    assert budget == [pytest.approx(LATENCY_SLO_MS / 1000)]
    assert {m.get("target") for m, _ in values("Chosen artifacts")} == {"triton"}
    assert [v for _, v in values("SLO gate")] == [1.0]
    # The variables' own queries list this model.
    assert {"namespace": NAMESPACE} in [r["metric"] for r in stack.prometheus.query(
        "count by (namespace) (modelfleet_model_ready)", at=timeline.populated_at)]
