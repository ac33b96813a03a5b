"""Prometheus alerting and recording rules for modelfleet, as plain dicts (pure: no I/O, no clock).

Two kinds:

- `fleet_groups()`: one set for the whole installation, on the operator's own metrics (`modelfleet_*`,
  see `modelfleet.metrics`) and Triton's: the operator is down, reconciles or Jobs fail, a model's
  artifacts miss their SLOs, a model is not Ready, a Triton model answers with errors; and the edge fleet: the
  devices' own latency and golden-set agreement against the rollout gates as burn rates, a rollout halted
  and rolled back, devices failing a rollout (the operator's `modelfleet_rollout_*`), and from the fleet
  gateway's metrics (`modelfleet.fleet.metrics`): the gateway down or failing, devices Failed or Degraded,
  stale devices, install failures.
  `deploy/prometheus/modelfleet-rules.yaml` is generated from it (`python -m modelfleet.rulegen`).
- `model_rule()`: one PrometheusRule per CompressedModel served by Triton: multiwindow, multi-burn-rate
  alerts (the SRE workbook, chapter 5; what Sloth and Pyrra generate) on the serving-latency SLO and on
  request errors, with a recording rule for the error ratio over every window.

The serving-latency SLI, and why it is an estimate. The SLO says "p95 of Triton requests <= X", that is,
at least 95% of requests finish within X; the SLI is the fraction of requests slower than X, with an error
budget of 5%. Counting that exactly needs a latency histogram with a bucket at X. Triton 2.51 has none:
its latency metrics are counters (`nv_inference_request_duration_us`, cumulative microseconds, with
`nv_inference_request_success` / `_failure` as counts: an average only) and, with
`--metrics-config summary_latencies=true`, summaries (`nv_inference_request_summary_us{quantile=...}`:
quantiles 0.5, 0.9, 0.95, 0.99 and 0.999 of the successful requests of about the last 60 s, NaN when
there were none, plus `_count` and `_sum`). `--metrics-config histogram_latencies=true` is accepted and
changes nothing (checked against the tritonserver 2.51 the tests run). So the slow fraction is estimated
from the summary: the quantile function is interpolated linearly between the quantiles Triton reports
(below the median, extended with the slope between the 0.5 and 0.9 quantiles, which makes every request
slow when all take about the same time), giving each scrape's share of requests slower than X; weighted by
the request rate and summed over a window, that gives the window's error ratio. Near the objective the
estimate is good (X between the 0.9 and 0.99 quantiles: a slow fraction between 10% and 1%); it cannot see
beyond the 0.999 quantile (taken as no slow requests: 0.1% at most, 2% of the budget). Checked against a real
tritonserver 2.51 and Prometheus: requests all taking 30 ms against a 10 ms SLO read as 100% slow.
Without `summary_latencies=true` there is no latency SLI at all, and `ModelfleetServingLatencyNotMeasured`
says so instead of staying silent.

The on-device SLIs. The operator counts, per edge rollout, the updated devices whose own p95 (measured with the
runtime that serves the model) is over the target's latency gate (`state="slow"` of `state="measured"`) and
whose golden-set agreement is under the agreement gate (`state="disagreeing"` of `state="updated"`). The gates
read the 95th and 5th percentiles over the devices, so the objective is 95% of the devices within the gate (a
budget of 5%). Those counts are gauges, not counters: a window's error ratio is the share's average over the
window (`avg_over_time`), and the same burn-rate windows and factors apply.

Every alert carries a `severity` label (`page`: act now, users are hurt; `ticket`: act within a working
day; `warning`: look when convenient) and the annotations `summary`, `description` and `runbook` (what to
check, what to do). Window lengths and `for` durations scale with one factor, so an end-to-end test can
run the same rules in minutes instead of days.
"""

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from modelfleet.api.compressedmodel import API_VERSION, CompressedModel
from modelfleet.domain.plan import MANAGED_BY, MODEL_LABEL

__all__ = [
    "DEFAULT_QUANTILES", "GATEWAY_JOB", "OPERATOR_JOB", "SEVERITIES", "BurnRate", "Windows", "duration", "fleet_groups",
    "fleet_rule", "model_groups", "model_rule", "model_rule_for", "model_rule_name", "rule_name",
]

SEVERITIES = ("page", "ticket", "warning")
OPERATOR_JOB = "modelfleet-operator"  # the `job` label of the operator's scrape target (its Service's name)
GATEWAY_JOB = "modelfleet-gateway"  # the fleet gateway's (deploy/prometheus/gateway-servicemonitor.yaml)
SYSTEM_NAMESPACE = "modelfleet-system"
# What Triton's summaries report unless --metrics-config summary_quantiles says otherwise.
DEFAULT_QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.999)
# Triton's failure reasons (2.51): OTHER, BACKEND, REJECTED (queue full, rate limiter) and CANCELED. A
# cancellation is the client's own doing and burns no budget. Requests Triton refuses before they reach the
# model (an unknown input, a wrong shape) are counted nowhere: client errors, rightly outside the SLI.
_FAILED = 'reason!="CANCELED"'
_SUMMARY = "nv_inference_request_summary_us"

_DAY, _HOUR, _MINUTE = 86400, 3600, 60


def duration(seconds: int) -> str:
    """A Prometheus duration: 3d, 1h, 5m, 90 s as 1m30s."""
    if seconds <= 0:
        raise ValueError(f"a duration must be positive, not {seconds}")
    parts = []
    for unit, size in (("d", _DAY), ("h", _HOUR), ("m", _MINUTE), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def _scaled(seconds: int, scale: float) -> int:
    return max(1, round(seconds * scale))


def _num(value: float) -> str:
    """A number as PromQL reads it, without float noise (0.95 - 0.9 is 0.05, not 0.04999...)."""
    text = repr(round(float(value), 9))
    return text.removesuffix(".0")


def _quote(value: str) -> str:
    """A PromQL string literal (Go's escaping, which JSON's matches for these label values)."""
    return json.dumps(value)


def _matchers(labels: dict[str, str]) -> str:
    return ",".join(f"{key}={_quote(value)}" for key, value in labels.items())


# --- windows ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BurnRate:
    """One alerting condition: the error ratio over both windows exceeds `factor` times the error budget.

    The long window makes it significant (factor x long / SLO period of the budget is spent), the short one
    makes it stop soon after the burning stops."""

    long: int  # seconds
    short: int
    factor: float

    def scaled(self, scale: float) -> "BurnRate":
        return replace(self, long=_scaled(self.long, scale), short=_scaled(self.short, scale))


@dataclass(frozen=True)
class Windows:
    """The SRE workbook's windows for a 30-day SLO period: page on 2% of the budget spent in 1 h or 5% in 6 h,
    ticket on 10% in 1 d or 10% in 3 d. `rate` is the window of the per-scrape request rates the latency SLI
    is built from (at least two scrapes: 2m suits scrape intervals up to 1m); `hold` is how long the per-model
    state alerts (a model not served, latency not measured) wait before they fire."""

    page: tuple[BurnRate, ...] = (BurnRate(_HOUR, 5 * _MINUTE, 14.4), BurnRate(6 * _HOUR, 30 * _MINUTE, 6))
    ticket: tuple[BurnRate, ...] = (BurnRate(_DAY, 2 * _HOUR, 3), BurnRate(3 * _DAY, 6 * _HOUR, 1))
    rate: int = 2 * _MINUTE
    hold: int = 10 * _MINUTE
    period: int = 30 * _DAY

    def scaled(self, scale: float) -> "Windows":
        """Every window times `scale` (at least one second); the factors stay. For tests: scale=1/60 turns
        hours into minutes."""
        return Windows(page=tuple(b.scaled(scale) for b in self.page),
                       ticket=tuple(b.scaled(scale) for b in self.ticket),
                       rate=_scaled(self.rate, scale), hold=_scaled(self.hold, scale),
                       period=_scaled(self.period, scale))

    def by_severity(self) -> dict[str, tuple[BurnRate, ...]]:
        return {"page": self.page, "ticket": self.ticket}

    def lengths(self) -> list[int]:
        """Every distinct window, shortest first: one recording rule each."""
        return sorted({w for b in (*self.page, *self.ticket) for w in (b.long, b.short)})


# --- rules ----------------------------------------------------------------------------------------------------


def _alert(name: str, expr: str, severity: str, summary: str, description: str, runbook: str,
           for_seconds: int = 0, labels: dict[str, str] | None = None) -> dict:
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, not {severity!r}")
    rule: dict = {"alert": name, "expr": expr}
    if for_seconds:
        rule["for"] = duration(for_seconds)
    rule["labels"] = {**(labels or {}), "severity": severity}
    rule["annotations"] = {"summary": summary, "description": description, "runbook": runbook}
    return rule


def _record(name: str, expr: str, labels: dict[str, str] | None = None) -> dict:
    rule = {"record": name, "expr": expr}
    if labels:
        rule["labels"] = dict(labels)
    return rule


def rule_name(rule: dict) -> str:
    return rule.get("alert") or rule["record"]


# --- fleet-wide ------------------------------------------------------------------------------------------------


def fleet_groups(operator_job: str = OPERATOR_JOB, scale: float = 1.0,
                 gateway_job: str = GATEWAY_JOB) -> list[dict]:
    """The installation-wide rule groups. `operator_job` and `gateway_job` are the `job` labels Prometheus gives
    the operator's and the fleet gateway's targets (a ServiceMonitor names them after their Services); `scale`
    multiplies every window and `for`, the edge burn-rate windows included."""

    def t(seconds: int) -> int:
        return _scaled(seconds, scale)

    job = _matchers({"job": operator_job})
    errors_window = duration(t(15 * _MINUTE))
    jobs_window = duration(t(_HOUR))
    serving_window = duration(t(5 * _MINUTE))
    operator = [
        _alert(
            "ModelfleetOperatorDown", f"absent(up{{{job}}} == 1)", "ticket",
            "The modelfleet operator is down or not scraped.",
            f"Prometheus has had no successful scrape of job {operator_job} for {duration(t(10 * _MINUTE))}: "
            "new and changed CompressedModels are not compressed or published, failures are not retried. "
            "What is already published keeps serving.",
            "kubectl -n modelfleet-system get deploy,pods -l app.kubernetes.io/name=modelfleet-operator; read the "
            "pod's events and logs (kubectl logs --previous after a crash). If it runs, check the scrape: the "
            f"target of job {operator_job} in Prometheus (Status > Targets), the metrics port 8080 and the "
            "ServiceMonitor (deploy/prometheus/operator-servicemonitor.yaml).",
            # absent() of a comparison has no labels to take over: the job is named here.
            for_seconds=t(10 * _MINUTE), labels={"job": operator_job}),
        _alert(
            "ModelfleetReconcileErrors",
            f'sum by (job) (rate(modelfleet_reconciles_total{{{job},result="error"}}[{errors_window}]))\n'
            f'  / sum by (job) (rate(modelfleet_reconciles_total{{{job}}}[{errors_window}])) > 0.1',
            "ticket",
            "More than 10% of modelfleet's reconciles fail.",
            f"{{{{ $value | humanizePercentage }}}} of reconciles failed over the last {errors_window}. Each failed "
            "resource is retried with backoff and its status says why (Reconciled=False).",
            "Find the reasons: sum by (reason) (rate(modelfleet_reconcile_errors_total[15m])). Forbidden: the "
            "operator's RBAC (deploy/operator-rbac.yaml); ApiServerError / TooManyRequests: the API server's "
            "health and load; anything else: kubectl get compressedmodels -A and the Reconciled condition's "
            "message of the failing ones, then the operator's log.",
            for_seconds=t(15 * _MINUTE)),
        _alert(
            "ModelfleetJobsFailing",
            f'sum by (stage) (increase(modelfleet_jobs_total{{outcome="failed"}}[{jobs_window}]))\n'
            f'  / sum by (stage) (increase(modelfleet_jobs_total[{jobs_window}])) > 0.5\n'
            f'and sum by (stage) (increase(modelfleet_jobs_total{{outcome="failed"}}[{jobs_window}])) >= 3',
            "ticket",
            "Most {{ $labels.stage }} Jobs fail.",
            f"{{{{ $value | humanizePercentage }}}} of the {{{{ $labels.stage }}}} Jobs that ended in the last "
            f"{jobs_window} failed (3 or more).",
            "Which reasons: sum by (reason) (increase(modelfleet_jobs_total{outcome=\"failed\",stage=\"{{ "
            "$labels.stage }}\"}[1h])). The worker's own reasons about one resource's input (SourceNotFound, "
            "InvalidSource, UnsupportedOperator) are its owner's to fix (kubectl describe compressedmodel). Many "
            "resources at once points at the platform: the artifact store (AccessDenied, Retryable), Kubernetes' "
            "reasons (DeadlineExceeded, BackoffLimitExceeded: pods too slow or crashing) and WorkerOOMKilled (killed "
            "at the memory limit; check spec.worker.resources and the nodes) or the Triton servers (stage publish: "
            "PublishFailed). kubectl get jobs -A -l app.kubernetes.io/managed-by=modelfleet and the failed pods' logs.",
            for_seconds=t(5 * _MINUTE)),
    ]
    models = [
        _alert(
            "ModelfleetModelSLONotMet", "modelfleet_model_slo_met == 0", "ticket",
            "{{ $labels.namespace }}/{{ $labels.name }}: no artifact meets the SLOs.",
            "The SLO gate failed for CompressedModel {{ $labels.namespace }}/{{ $labels.name }}: a target has no "
            "artifact within the accuracy, latency or size SLOs, so the new version is not shipped (what was "
            "published before stays).",
            "kubectl -n {{ $labels.namespace }} get compressedmodel {{ $labels.name }} -o yaml: status.choices "
            "names each candidate's reason (drop, p95, size). Per artifact: modelfleet_artifact_slo_met"
            "{namespace=\"{{ $labels.namespace }}\",name=\"{{ $labels.name }}\"} == 0 and its "
            "modelfleet_artifact_accuracy_drop_ratio / _latency_p95_seconds. Fix with the model's owner: other "
            "precisions or calibration (spec.compression), or SLOs the hardware can meet (spec.slo).",
            for_seconds=t(5 * _MINUTE)),
        _alert(
            "ModelfleetModelNotReady", "modelfleet_model_ready == 0", "ticket",
            "{{ $labels.namespace }}/{{ $labels.name }} has not been Ready for an hour.",
            f"CompressedModel {{{{ $labels.namespace }}}}/{{{{ $labels.name }}}} has had Ready=False for "
            f"{duration(t(_HOUR))}, longer than a compression and publish take: it failed or is stuck, and its "
            "latest spec is not served.",
            "kubectl -n {{ $labels.namespace }} describe compressedmodel {{ $labels.name }}: the Ready "
            "condition's reason and the conditions before it (SpecValid, Compressed, SLOMet, Published), and the "
            "Events. A stuck pod (Unschedulable, ImagePullBackOff) shows in Compressed or Published; a failed "
            "stage can be rerun with kubectl annotate ... modelfleet.io/retry=\"$(date +%s)\" --overwrite once "
            "its cause is fixed.",
            for_seconds=t(_HOUR)),
    ]
    failed = f"rate(nv_inference_request_failure{{{_FAILED}}}[{serving_window}])"
    serving = [
        _alert(
            "ModelfleetTritonRequestErrors",
            f"sum by (model) ({failed})\n"
            f"  / (sum by (model) (rate(nv_inference_request_success[{serving_window}])) + sum by (model) ({failed}))"
            "\n  > 0.05",
            "warning",
            "Triton model {{ $labels.model }} fails {{ $value | humanizePercentage }} of its requests.",
            f"More than 5% of the requests to Triton model {{{{ $labels.model }}}} failed over the last "
            f"{serving_window} (cancelled ones not counted). Models with a CompressedModel also have "
            "error-budget alerts (ModelfleetServingErrorBudgetBurn).",
            "By reason: sum by (reason) (rate(nv_inference_request_failure{model=\"{{ $labels.model }}\"}[5m])). "
            "BACKEND: the model fails at run time; read the Triton log and compare the served version with the "
            "CompressedModel's status (triton-publication.json). REJECTED: queue full; add Triton instances or "
            "raise the queue limits. A new version that fails: publish the previous one again (or roll back its "
            "spec).",
            for_seconds=t(10 * _MINUTE)),
    ]
    return [
        {"name": "modelfleet-operator", "rules": operator},
        {"name": "modelfleet-models", "rules": models},
        {"name": "modelfleet-serving", "rules": serving},
        {"name": "modelfleet-edge-rollouts", "rules": _rollout_rules(t, Windows().scaled(scale))},
        {"name": "modelfleet-edge-gateway", "rules": _gateway_rules(gateway_job, t)},
    ]


def fleet_rule(operator_job: str = OPERATOR_JOB, scale: float = 1.0,
               namespace: str = SYSTEM_NAMESPACE, gateway_job: str = GATEWAY_JOB) -> dict:
    """`fleet_groups()` as a prometheus-operator PrometheusRule."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "modelfleet", "namespace": namespace,
                     "labels": {"app.kubernetes.io/name": "modelfleet", "app.kubernetes.io/component": "alerts"}},
        "spec": {"groups": fleet_groups(operator_job, scale, gateway_job)},
    }


# --- fleet-wide: edge rollouts and the fleet gateway -------------------------------------------------------------

_ROLLOUT = ("namespace", "name", "target")  # one edge target of one CompressedModel
_BUNDLE = "namespace, model, target"  # the gateway's per-bundle labels (modelfleet.fleet.metrics), versions summed
# The device SLIs: which devices count as errors, of which (modelfleet_rollout_devices' `state`), and in words.
_EDGE_SLIS = {
    "latency": ("slow", "measured", "measured a p95 latency over the target's latency gate"),
    "agreement": ("disagreeing", "updated", "agreed with the golden outputs less than the agreement gate allows"),
}


def _devices(state: str) -> str:
    return f'sum by ({", ".join(_ROLLOUT)}) (modelfleet_rollout_devices{{state="{state}"}})'


def _edge_share(sli: str) -> str:
    return f"modelfleet:edge_devices_{_EDGE_SLIS[sli][0]}:ratio"


def _edge_ratio_name(sli: str, window: int) -> str:
    return f"modelfleet:edge_{sli}_errors:ratio_avg{duration(window)}"


def _edge_burn_alerts(name: str, sli: str, objective: float, windows: Windows, runbook: str) -> list[dict]:
    budget = 1 - objective
    _, _, what = _EDGE_SLIS[sli]
    alerts = []
    for severity, burns in windows.by_severity().items():
        longs, spelled = _burn_spelled(burns, budget)
        alerts.append(_alert(
            name, _burn_expr(lambda w: _edge_ratio_name(sli, w), burns, budget), severity,
            "{{ $labels.namespace }}/{{ $labels.name }}: the devices of edge target {{ $labels.target }} burn its "
            f"on-device {sli} error budget" + (" fast." if severity == "page" else "."),
            f"On average {{{{ $value | humanizePercentage }}}} of the updated devices of edge target "
            f"{{{{ $labels.target }}}} {what} over the last {longs} (each device's own measurement with the runtime "
            f"that serves the model); the objective is {_num(100 * objective)}% of the devices within the gate, a "
            f"budget of {_num(100 * budget)}%. Fires {spelled}.",
            runbook, labels={"slo": f"edge-{sli}"}))
    return alerts


def _rollout_rules(t: Callable[[int], int], windows: Windows) -> list[dict]:
    """The operator's view of each edge rollout (modelfleet_rollout_*): the on-device SLOs as burn rates, halts,
    failing devices. The device counts are gauges, so a window's error ratio is the ratio's average over it."""
    rules = []
    for sli, (errors, of, _) in _EDGE_SLIS.items():
        # No sample while no device counts (none updated or measured): a gap, not 0/0.
        rules.append(_record(_edge_share(sli), f"{_devices(errors)}\n/ ({_devices(of)} > 0)"))
        rules += [_record(_edge_ratio_name(sli, window), f"avg_over_time({_edge_share(sli)}[{duration(window)}])")
                  for window in windows.lengths()]
    look = ("kubectl -n {{ $labels.namespace }} get compressedmodel {{ $labels.name }} -o yaml: "
            "status.rollouts (the target's version, wave, counts and message) and the RolledOut / RolloutHalted "
            "conditions; kubectl -n {{ $labels.namespace }} get edgedevices (printer columns: installed version, "
            "health, p95, agreement, last seen). ")
    rules += _edge_burn_alerts(
        "ModelfleetEdgeLatencyBudgetBurn", "latency", 0.95, windows,
        look + "Per version: histogram_quantile(0.95, sum by (le, version) (modelfleet_fleet_device_latency_p95_seconds"
        "_bucket{namespace=\"{{ $labels.namespace }}\",model=\"{{ $labels.name }}\",target=\"{{ $labels.target }}\"}))."
        " A new version that is slower on the devices than in the pipeline's benchmark: the rollout gate halts it "
        "(and rolls back) while it runs; after it completed, publish the previous choice again (pin "
        "spec.targets.edge[].precision) and compare the benchmark hardware with the devices'. All "
        "versions slow: the devices are loaded or throttled (one device class? look at the labels of the slow "
        "EdgeDevices), or the gate (rollout.gates.maxP95Ms, else slo.latencyP95Ms of the runtime) is tighter "
        "than the hardware allows.")
    rules += _edge_burn_alerts(
        "ModelfleetEdgeAgreementBudgetBurn", "agreement", 0.95, windows,
        look + "The disagreeing devices' status.targets[].lastSmoke (agreement, error). One device class or "
        "runtime version only: the runtime on those devices computes differently (an ncnn or LiteRT build, a "
        "CPU feature); a new bundle: its quantization loses too much on the devices' runtime, so pin a higher "
        "precision (spec.targets.edge[].precision) or recalibrate, then publish again. The gate itself is "
        "rollout.gates.minAgreement.")
    halted = duration(t(15 * _MINUTE))
    rules += [
        _alert(
            "ModelfleetRolloutHalted", "modelfleet_rollout_halted == 1", "ticket",
            "{{ $labels.namespace }}/{{ $labels.name }}: the rollout to edge target {{ $labels.target }} halted "
            "({{ $labels.reason }}) and was rolled back.",
            "The operator halted the rollout of a new bundle to edge target {{ $labels.target }} of CompressedModel "
            "{{ $labels.namespace }}/{{ $labels.name }} on a breach ({{ $labels.reason }}) and pointed the devices "
            "of its open waves back at the previous bundle (status.rollouts[].rolledBack; a first rollout has "
            "none, and its devices keep what they had). No wave opens again until the version changes.",
            look + "The reason says which gate: FailureThreshold (devices that failed to install, report "
            "themselves unhealthy or stayed silent past rollout.reportTimeoutSeconds: their status.targets[]"
            ".lastError, and sum by (reason) (modelfleet_fleet_install_failures_total)), LatencyGate (devices' own "
            "p95 over the gate) or AgreementGate (golden-set agreement under rollout.gates.minAgreement). Check "
            "that the devices are back on the previous version (modelfleet_fleet_devices by version). Fix the "
            "cause, then roll out again with a new version (a spec change that compresses and publishes anew)."),
        _alert(
            "ModelfleetRolloutDevicesFailing",
            f"{_devices('failed')}\n/ ({_devices('desired')} > 0) > 0.05", "ticket",
            "{{ $labels.namespace }}/{{ $labels.name }}: {{ $value | humanizePercentage }} of the devices of edge "
            "target {{ $labels.target }} fail the rollout.",
            f"For {halted}, more than 5% of the devices edge target {{{{ $labels.target }}}} selects have failed in "
            "the rollout's open waves (install failed past its retries, unhealthy, or silent past the report "
            "timeout), below the wave's failure threshold or the rollout would have halted: the rollout goes on "
            "and the failed devices keep their previous model.",
            look + "The failed devices' status.targets[].lastError and last seen: offline devices (stale, see "
            "ModelfleetFleetDevicesStale) or one reason for many (sum by (reason) "
            "(increase(modelfleet_fleet_install_failures_total[1h]))). A bad bundle: pause the rollout "
            "(spec.targets.edge[].rollout.paused: true) before the next wave opens.",
            for_seconds=t(15 * _MINUTE)),
    ]
    return rules


def _gateway_rules(gateway_job: str, t: Callable[[int], int]) -> list[dict]:
    """The fleet gateway's own metrics (modelfleet.fleet.metrics): its health and the devices' as it sees them."""
    job = _matchers({"job": gateway_job})
    errors_window = duration(t(5 * _MINUTE))
    failures_window = duration(t(_HOUR))
    requests = "modelfleet_gateway_request_duration_seconds_count"
    scrape = (f"the target of job {gateway_job} in Prometheus (Status > Targets), the metrics port (--metrics-port, "
              "9090) and the ServiceMonitor (deploy/prometheus/gateway-servicemonitor.yaml)")
    pods = ("kubectl -n modelfleet-system get deploy,pods -l app.kubernetes.io/name=modelfleet-gateway; the pods' "
            "events and logs (kubectl logs --previous after a crash). ")
    return [
        _alert(
            "ModelfleetGatewayDown", f"up{{{job}}} == 0\nor absent(up{{{job}}})", "page",
            "A modelfleet fleet gateway is down or not scraped.",
            f"Prometheus has had no successful scrape of a target of job {gateway_job} for "
            f"{duration(t(5 * _MINUTE))} (or has no such target): devices behind it cannot enrol, fetch their "
            "desired state or bundles, or report, so rollouts and rollbacks do not reach them. Devices keep "
            "serving their active model.",
            pods + "If they run, check the device port's TLS Secret and the API server's reachability (the "
            f"gateway rebuilds its state from the EdgeDevices), then the scrape: {scrape}.",
            for_seconds=t(5 * _MINUTE), labels={"job": gateway_job}),
        _alert(
            "ModelfleetGatewayErrors",
            f'sum by (job) (rate({requests}{{{job},code=~"5.."}}[{errors_window}]))\n'
            f"  / sum by (job) (rate({requests}{{{job}}}[{errors_window}])) > 0.05",
            "ticket",
            "The fleet gateway answers {{ $value | humanizePercentage }} of device requests with a 5xx.",
            f"More than 5% of the requests to the fleet gateway (job {{{{ $labels.job }}}}) failed with a server "
            f"error over the last {errors_window}: devices retry with backoff, so rollouts and reports slow down.",
            "Which routes and codes: sum by (route, code) (rate(modelfleet_gateway_request_duration_seconds_count"
            f"{{{job},code=~\"5..\"}}[5m])). 503 on bundle downloads: the artifact store (MODELFLEET_ARTIFACTS, "
            "its credentials); 500 on reports: the API server (EdgeDevice status writes, "
            "modelfleet_gateway_status_writes_total{result=\"Failed\"}, modelfleet_gateway_status_write_queue); "
            "anything else: the gateway's log.",
            for_seconds=t(10 * _MINUTE)),
        _alert(
            "ModelfleetFleetDevicesUnhealthy",
            f'sum by ({_BUNDLE}) (modelfleet_fleet_devices{{health=~"Failed|Degraded"}})\n'
            f"  / sum by ({_BUNDLE}) (modelfleet_fleet_devices) > 0.05",
            "ticket",
            "{{ $labels.namespace }}/{{ $labels.model }}: {{ $value | humanizePercentage }} of the devices of "
            "edge target {{ $labels.target }} are Failed or Degraded.",
            "More than 5% of the devices that run edge target {{ $labels.target }} of CompressedModel "
            "{{ $labels.namespace }}/{{ $labels.model }} report themselves Failed or Degraded (all versions), "
            f"for {duration(t(15 * _MINUTE))}.",
            "By version and health: sum by (version, health) (modelfleet_fleet_devices{namespace=\"{{ "
            "$labels.namespace }}\",model=\"{{ $labels.model }}\",target=\"{{ $labels.target }}\"}). One version: "
            "its rollout's gates (ModelfleetRolloutHalted) or the bundle; every version: the devices themselves "
            "(kubectl -n {{ $labels.namespace }} get edgedevices: health, last error; the agents' own /metrics).",
            for_seconds=t(15 * _MINUTE)),
        _alert(
            "ModelfleetFleetDevicesStale",
            "sum by (namespace) (modelfleet_fleet_devices_stale)\n"
            "  / (sum by (namespace) (modelfleet_fleet_devices_enrolled) > 0) > 0.1",
            "warning",
            "{{ $labels.namespace }}: {{ $value | humanizePercentage }} of the enrolled devices stopped reporting.",
            "More than 10% of the EdgeDevices in namespace {{ $labels.namespace }} have not reported for longer "
            f"than the gateway's --stale-after (default 15m), for {duration(t(30 * _MINUTE))}. Their last figures "
            "still count in the fleet's metrics, and in a rollout they count as failed once the report timeout "
            "passes.",
            "kubectl -n {{ $labels.namespace }} get edgedevices (last seen): many at once, of one site or device "
            "class, is the network or the gateway's address as the devices see it; scattered ones are devices "
            "switched off. Check the agents' logs (poll errors: TLS, credentials) and ModelfleetGatewayErrors.",
            for_seconds=t(30 * _MINUTE)),
        _alert(
            "ModelfleetFleetInstallFailures",
            f"sum by ({_BUNDLE}, reason) (increase(modelfleet_fleet_install_failures_total[{failures_window}])) "
            "> 10",
            "warning",
            "{{ $labels.namespace }}/{{ $labels.model }}: devices of edge target {{ $labels.target }} fail to "
            "install ({{ $labels.reason }}).",
            f"Devices reported {{{{ $value | humanize }}}} install failures with reason {{{{ $labels.reason }}}} for "
            f"edge target {{{{ $labels.target }}}} over the last {failures_window}: each leaves the device on its "
            "previous model, and the agents retry with backoff.",
            "The reason says where: a download or hash reason is the artifact store or the network; a signature, "
            "key or expiry reason is the bundle signing keys (the agents' trusted keys, clocks: "
            "--clock-skew) or an attack; a smoke-test reason is the bundle on that runtime (see "
            "ModelfleetEdgeAgreementBudgetBurn). kubectl -n {{ $labels.namespace }} get edgedevices -o yaml: "
            "status.targets[].lastError of the failing ones.",
            for_seconds=t(15 * _MINUTE)),
    ]


# --- per CompressedModel: burn rates on the serving SLOs ---------------------------------------------------------


def _slow_fraction(selector: str, threshold_us: float, quantiles: tuple[float, ...]) -> str:
    """Per Triton series (instance, version), the estimated share of requests slower than the threshold: the
    quantile function interpolated between the summary's quantiles (see the module's docstring)."""
    phis = sorted(quantiles)
    x = _num(threshold_us)

    def q(phi: float) -> str:
        return f'max without (quantile) ({_SUMMARY}{{{selector},quantile="{_num(phi)}"}})'

    first = phis[0]
    if len(phis) > 1:
        # Below the lowest quantile, the quantile function is extended with the slope it has between the first
        # two, down to a share of 0: when the first two quantiles are equal (every request alike), all are slow.
        # A right-skewed distribution is steeper below its median than that slope, so this undercounts slow
        # requests there (a threshold far below the median reads at least 50% slow, never 100%): page and
        # ticket still fire, since their thresholds are 72% and lower.
        distance = f"({q(first)} - {x}) / ({q(phis[1])} - {q(first)})"  # in units of the gap to the next quantile
        below = f"clamp_min({_num(first)} - {_num(phis[1] - first)} * {distance}, 0)"
    else:
        below = f"{_num(first)} * {x} / {q(first)}"  # one quantile only: from 0 latency, linearly
    branches = [f"(1 - {below}) and {q(first)} > {x}"]
    for lo, hi in zip(phis, phis[1:]):
        branches.append(f"(1 - ({_num(lo)} + {_num(hi - lo)} * ({x} - {q(lo)}) / ({q(hi)} - {q(lo)})))"
                        f" and {q(lo)} <= {x} and {q(hi)} > {x}")
    branches.append(f"0 * {q(phis[-1])} and {q(phis[-1])} <= {x}")
    return "\n  or ".join(f"({branch})" for branch in branches)


def _requests(window: str) -> str:
    return f"modelfleet:triton_requests:rate{window}"


def _ratio_name(sli: str, window: int) -> str:
    return f"modelfleet:serving_{sli}_errors:ratio_rate{duration(window)}"


def _burn_expr(ratio: Callable[[int], str], burns: tuple[BurnRate, ...], budget: float) -> str:
    """Any of `burns`: the recorded error ratio (`ratio(window)`, a selector) over both its windows above its
    factor times the budget."""
    return "\n or ".join(f"({ratio(b.long)} > {_num(b.factor * budget)}\n"
                          f"   and {ratio(b.short)} > {_num(b.factor * budget)})" for b in burns)


def _burn_spelled(burns: tuple[BurnRate, ...], budget: float) -> tuple[str, str]:
    """The long windows ("1h or 6h") and the conditions in words, for the description."""
    longs = " or ".join(duration(b.long) for b in burns)
    spelled = ", or ".join(f"over {duration(b.long)} and {duration(b.short)} above {_num(b.factor)}x the budget "
                           f"({_num(100 * b.factor * budget)}%)" for b in burns)
    return longs, spelled


def _burn_alerts(name: str, sli: str, objective: float, windows: Windows, what: str, runbook: str,
                 labels: dict[str, str]) -> list[dict]:
    budget = 1 - objective
    alerts = []
    for severity, burns in windows.by_severity().items():
        longs, spelled = _burn_spelled(burns, budget)
        alerts.append(_alert(
            name, _burn_expr(lambda w: f"{_ratio_name(sli, w)}{{{_matchers(labels)}}}", burns, budget), severity,
            f"{labels['namespace']}/{labels['name']} burns its serving {sli} error budget"
            + (" fast." if severity == "page" else "."),
            f"{{{{ $value | humanizePercentage }}}} of the requests to {what} over the last {longs}; the SLO allows "
            f"{_num(100 * budget)}% ({_num(100 * objective)}% over {duration(windows.period)}). Fires {spelled}.",
            runbook, labels={**labels, "slo": f"serving-{sli}"}))
    return alerts


def model_groups(namespace: str, name: str, triton_model: str, latency_p95_seconds: float | None, *,
                 windows: Windows = Windows(), latency_objective: float = 0.95,
                 availability_objective: float = 0.999, quantiles: Iterable[float] = DEFAULT_QUANTILES,
                 triton_matchers: dict[str, str] | None = None) -> list[dict]:
    """The rule group of one CompressedModel served by Triton as `triton_model`: the latency SLO (when
    `latency_p95_seconds`, spec.slo.latencyP95Ms.triton, is set) and the request-error SLO, both as burn-rate
    alerts, and an alert when Triton does not serve a model the operator has published.

    `triton_matchers` narrow the Triton series further (`{"namespace": "serving"}`) where several Triton
    installations serve a model of that name."""
    # Alert templates see the expression's labels, not the rule's (absent() has none), so the per-model texts
    # name the resource literally.
    own = {"namespace": namespace, "name": name}
    selector = _matchers({"model": triton_model, **(triton_matchers or {})})
    rate = duration(windows.rate)
    rules: list[dict] = []
    quantiles = tuple(quantiles)

    if latency_p95_seconds is not None:
        threshold_ms = _num(latency_p95_seconds * 1000)
        count = f"rate({_SUMMARY}_count{{{selector}}}[{rate}])"
        rules += [
            _record(_requests(rate), f"sum({count})", own),
            # No quantile series (all NaN: no request in Triton's last minute) but requests in the rate window:
            # none of those counted as slow, rather than a gap.
            _record(f"modelfleet:triton_requests_slow:rate{rate}",
                    f"sum(\n  (\n  {_slow_fraction(selector, latency_p95_seconds * 1e6, quantiles)}\n  )\n"
                    f"  * {count}\n)\nor 0 * sum({count})", own),
        ]
        for window in windows.lengths():
            span = duration(window)
            rules.append(_record(
                _ratio_name("latency", window),
                f"sum_over_time(modelfleet:triton_requests_slow:rate{rate}{{{_matchers(own)}}}[{span}])\n"
                f"/ sum_over_time({_requests(rate)}{{{_matchers(own)}}}[{span}])", own))
    for window in windows.lengths():
        span = duration(window)
        failed = f"sum(rate(nv_inference_request_failure{{{selector},{_FAILED}}}[{span}]))"
        rules.append(_record(
            _ratio_name("request", window),
            f"{failed}\n/ (sum(rate(nv_inference_request_success{{{selector}}}[{span}])) + {failed})", own))

    if latency_p95_seconds is not None:
        rules += _burn_alerts(
            "ModelfleetServingLatencyBudgetBurn", "latency", latency_objective, windows,
            f"Triton model {triton_model} took longer than the p95 SLO of {threshold_ms} ms (an estimate from "
            "Triton's latency summary)",
            f"Confirm: nv_inference_request_summary_us{{{selector}}} (microseconds, per quantile) and the queue "
            f"share, nv_inference_queue_summary_us{{{selector}}}. Queueing: more load than instances; scale Triton "
            "or add instances (spec.targets.triton.instanceGroup). Compute time up: a new version is slower "
            "(kubectl get compressedmodel shows what is chosen; compare its benchmark p95 with the SLO) or the "
            "node is saturated (CPU throttling, noisy neighbours). A slower new version: revert the spec change "
            "that published it, or pin spec.targets.triton.precision to the precision served before; then retune "
            "the compression or the SLO.",
            own)
        rules.append(_alert(
            "ModelfleetServingLatencyNotMeasured",
            f"sum(rate(nv_inference_request_success{{{selector}}}[{duration(windows.hold)}])) > 0\n"
            f"unless sum({_SUMMARY}_count{{{selector}}})", "warning",
            f"{namespace}/{name}: serving latency is not measured.",
            f"Triton model {triton_model} serves requests but exports no latency summary, so its p95 SLO of "
            f"{threshold_ms} ms is not watched.",
            "Start tritonserver with --metrics-config summary_latencies=true (Triton 2.51 has no latency "
            "histogram; the latency SLI is estimated from that summary). A model with the response cache enabled "
            "has no request summary at all: disable the cache or drop the Triton latency SLO.",
            for_seconds=windows.hold, labels=own))
    rules += _burn_alerts(
        "ModelfleetServingErrorBudgetBurn", "request", availability_objective, windows,
        f"Triton model {triton_model} failed (cancelled ones not counted)",
        f"By reason: sum by (reason) (rate(nv_inference_request_failure{{{selector}}}[5m])). BACKEND: the "
        "model fails at run time: the Triton log, and whether a new version was just published (the "
        "CompressedModel's Published condition); if so, revert the spec change or pin "
        "spec.targets.triton.precision to the precision served before. REJECTED: the queue is full; scale Triton "
        "or add instances. OTHER: the Triton log.",
        own)
    rules.append(_alert(
        "ModelfleetTritonModelNotServed",
        f"absent(nv_inference_request_success{{{selector}}})\n"
        f"and on () modelfleet_model_ready{{{_matchers(own)}}} == 1", "page",
        f"{namespace}/{name} is Ready but Triton does not serve {triton_model}.",
        f"The CompressedModel is Ready (published and verified), yet no Triton reports model {triton_model}: it "
        "was unloaded, the server restarted without it, or Triton is not scraped.",
        f"curl <triton>/v2/models/{triton_model}/ready and POST <triton>/v2/repository/index (state, reason). "
        "Unloaded or failed to load: the Triton log; load it again (POST "
        f"/v2/repository/models/{triton_model}/load) or rerun the publish (modelfleet.io/retry annotation). "
        "Serving but no metrics: the Triton scrape target in Prometheus.",
        for_seconds=windows.hold, labels=own))
    return [{"name": f"modelfleet-slo-{namespace}-{name}", "rules": rules}]


def model_rule_name(name: str) -> str:
    """The name of a CompressedModel's PrometheusRule, in its namespace."""
    return f"{name}-serving-slo"


def model_rule(namespace: str, name: str, owner_uid: str, triton_model: str, latency_p95_seconds: float | None,
               **options) -> dict:
    """The PrometheusRule of one CompressedModel (see `model_groups` for the options), in the model's namespace
    and owned by it, so Kubernetes deletes it with the resource."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": model_rule_name(name),
            "namespace": namespace,
            "labels": {**MANAGED_BY, MODEL_LABEL: name},
            "ownerReferences": [{"apiVersion": API_VERSION, "kind": "CompressedModel", "name": name,
                                 "uid": owner_uid, "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": {"groups": model_groups(namespace, name, triton_model, latency_p95_seconds, **options)},
    }


def model_rule_for(model: CompressedModel, owner_uid: str, **options) -> dict | None:
    """`model_rule` from the resource itself; None when it has no Triton target (nothing served to watch)."""
    triton = model.spec.targets.triton
    if triton is None:
        return None
    budget_ms = model.spec.slo.latency_p95_ms.triton
    return model_rule(model.metadata.namespace or "default", model.metadata.name, owner_uid, triton.model_name,
                      None if budget_ms is None else budget_ms / 1000, **options)
