"""modelfleet's Grafana dashboard, built as a plain dict (Grafana's dashboard JSON model, schemaVersion 39).

`python -m modelfleet.dashboard` writes `deploy/grafana/modelfleet-dashboard.json`; `--check` (a test) exits 1
when the file has drifted from this code. Every query reads a data source picked with the `datasource`
variable, so the file imports into any Grafana without editing; `namespace` and `name` pick a CompressedModel
(from `modelfleet_model_ready`), `model` the Triton model that serves it (Triton's `model` label).

Rows: an overview (firing modelfleet alerts), the model and its SLOs (gate, Ready, accuracy drop and pipeline
p95 against their SLOs), targets and chosen artifacts, serving from Triton (latency quantiles against the p95
SLO, requests and failures, the SLIs the burn-rate alerts read: `modelfleet:serving_*` recording rules of
`modelfleet.domain.alerts`, one series per window), and the operator (up, models, reconciles, errors,
durations, worker Jobs), and the edge fleet (devices by health and version from the fleet gateway, each edge
target's rollout wave and device counts, the devices' p95 latency quantile from the gateway's gauge histogram,
halted rollouts, gateway requests). `tests/test_slo_alerts_e2e.py` runs every query against a real Prometheus,
the edge fleet's in `tests/test_fleet_alerts_e2e.py`.
"""

import argparse
import json
import sys
from pathlib import Path

from modelfleet.domain.alerts import GATEWAY_JOB, OPERATOR_JOB

__all__ = ["DATASOURCE", "EDGE_ROW", "FILE", "UID", "VARIABLES", "build", "main", "render", "row_targets", "targets"]

UID = "modelfleet"
FILE = Path("deploy/grafana/modelfleet-dashboard.json")
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Template variables the queries use (besides Grafana's own $__rate_interval).
VARIABLES = ("namespace", "name", "model")

_MODEL = 'namespace=~"$namespace",name=~"$name"'
_TRITON = 'model=~"$model"'
_OPERATOR = f'job="{OPERATOR_JOB}"'
_FLEET = 'namespace=~"$namespace",model=~"$name"'  # the gateway's series name the CompressedModel `model`
EDGE_ROW = "Edge fleet: $namespace/$name"
_WIDTH = 24  # Grafana's grid


def _target(expr: str, legend: str = "", *, table: bool = False) -> dict:
    target = {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend or "__auto"}
    if table:  # one row per series, now: the labels are the columns
        target |= {"format": "table", "instant": True, "range": False}
    else:
        target |= {"range": True}
    return target


def _panel(kind: str, title: str, description: str, targets: list[dict], *, unit: str = "", width: int = 8,
           height: int = 8, **extra) -> dict:
    defaults: dict = {"unit": unit} if unit else {}
    defaults |= extra.pop("defaults", {})
    panel = {"type": kind, "title": title, "description": description, "datasource": DATASOURCE,
             "fieldConfig": {"defaults": defaults, "overrides": []},
             "targets": [t | {"refId": chr(ord("A") + i)} for i, t in enumerate(targets)],
             "gridPos": {"w": width, "h": height}}
    panel.update(extra)
    return panel


def _yes_no(yes: str, no: str) -> dict:
    """A stat's field config for a 1/0 gauge: the word and a colour instead of the number."""
    return {"mappings": [{"type": "value", "options": {"1": {"text": yes, "color": "green", "index": 0},
                                                       "0": {"text": no, "color": "red", "index": 1}}}],
            "thresholds": {"mode": "absolute", "steps": [{"color": "red", "value": None},
                                                         {"color": "green", "value": 1}]},
            "color": {"mode": "thresholds"}}


def _stat(title: str, description: str, targets: list[dict], *, width: int = 6, text: str = "auto",
          color: str = "background", **options) -> dict:
    return _panel("stat", title, description, targets, width=width, height=5,
                  options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                           "colorMode": color, "graphMode": "none", "textMode": text}, **options)


def _table(title: str, description: str, targets: list[dict], hide: tuple[str, ...], **options) -> dict:
    return _panel("table", title, description, targets,
                  transformations=[{"id": "organize", "options": {"excludeByName": {k: True for k in hide}}}],
                  **options)


def _sli_by_window(sli: str) -> str:
    """Every window's recorded error ratio of one SLI, the window as a label (the windows scale, the names vary)."""
    name = f"modelfleet:serving_{sli}_errors:ratio_rate"
    return (f'label_replace({{__name__=~"{name}.+",{_MODEL}}}, "window", "$1", "__name__", "{name}(.+)")')


def _rows() -> list[tuple[str, list[dict]]]:
    rate = "$__rate_interval"
    failed = f'rate(nv_inference_request_failure{{{_TRITON},reason!="CANCELED"}}[{rate}])'
    succeeded = f"rate(nv_inference_request_success{{{_TRITON}}}[{rate}])"
    return [
        ("Overview", [
            _table("Firing modelfleet alerts", "Alerts of modelfleet's rules (deploy/prometheus, and each "
                   "CompressedModel's serving-SLO rule) firing now; each carries a runbook annotation.",
                   [_target('ALERTS{alertname=~"Modelfleet.*",alertstate="firing"}', table=True)],
                   hide=("Time", "Value", "__name__", "alertstate"), width=_WIDTH, height=6),
        ]),
        ("Model and SLOs: $namespace/$name", [
            _stat("SLO gate", "1 when every target has an artifact meeting the SLOs (modelfleet_model_slo_met); "
                  "a missed gate ships nothing new.",
                  [_target(f"modelfleet_model_slo_met{{{_MODEL}}}", "{{name}}")], defaults=_yes_no("met", "missed")),
            _stat("Ready", "The CompressedModel's Ready condition (modelfleet_model_ready).",
                  [_target(f"modelfleet_model_ready{{{_MODEL}}}", "{{name}}")], defaults=_yes_no("Ready", "not Ready")),
            _stat("Artifacts meeting the SLOs", "Artifacts within the accuracy, latency and size SLOs, of all "
                  "the compression built.",
                  [_target(f"sum(modelfleet_artifact_slo_met{{{_MODEL}}})", "meeting"),
                   _target(f"count(modelfleet_artifact_slo_met{{{_MODEL}}})", "built")], width=12),
            _panel("timeseries", "Accuracy drop vs the SLO", "Each artifact's top-1 accuracy drop against the fp32 "
                   "baseline, and the largest drop the SLO allows (maxAccuracyDropPoints; 1% is one point).",
                   [_target(f"modelfleet_artifact_accuracy_drop_ratio{{{_MODEL}}}", "{{artifact}}"),
                    _target(f"modelfleet_model_slo_max_accuracy_drop_ratio{{{_MODEL}}}", "SLO")],
                   unit="percentunit"),
            _panel("timeseries", "Pipeline p95 latency vs the SLO", "Each artifact's p95 latency as the "
                   "compression pipeline benchmarked it, and the spec's p95 budget per runtime.",
                   [_target(f"modelfleet_artifact_latency_p95_seconds{{{_MODEL}}}", "{{artifact}}"),
                    _target(f"modelfleet_model_slo_latency_p95_seconds{{{_MODEL}}}", "SLO {{runtime}}")], unit="s"),
            _panel("timeseries", "Artifact size", "Size of each artifact's files (the SLO's maxSizeBytes applies).",
                   [_target(f"modelfleet_artifact_size_bytes{{{_MODEL}}}", "{{artifact}}")], unit="bytes"),
        ]),
        ("Targets and chosen artifacts", [
            _table("Chosen artifacts", "The artifact each target ships: the fastest meeting the SLOs, or the "
                   "one the spec names (modelfleet_target_chosen_info).",
                   [_target(f"modelfleet_target_chosen_info{{{_MODEL}}}", table=True)],
                   hide=("Time", "Value", "__name__", "job", "instance"), width=12),
            _table("Artifacts against the SLOs", "Every artifact; Value 1 when it meets the SLOs.",
                   [_target(f"modelfleet_artifact_slo_met{{{_MODEL}}}", table=True)],
                   hide=("Time", "__name__", "job", "instance"), width=12),
        ]),
        ("Serving: Triton model $model", [
            _panel("timeseries", "Request latency vs the p95 SLO", "Triton's request latency quantiles over about "
                   "the last minute (nv_inference_request_summary_us; needs --metrics-config "
                   "summary_latencies=true), and the spec's Triton p95 budget.",
                   [_target(f"nv_inference_request_summary_us{{{_TRITON}}} / 1e6", "p{{quantile}} v{{version}}"),
                    _target(f'modelfleet_model_slo_latency_p95_seconds{{{_MODEL},runtime="triton"}}', "SLO p95")],
                   unit="s"),
            _panel("timeseries", "Requests", "Successful requests per second by version, failed ones by "
                   "Triton's reason.",
                   [_target(f"sum by (model, version) ({succeeded})", "ok v{{version}}"),
                    _target(f"sum by (model, reason) (rate(nv_inference_request_failure{{{_TRITON}}}[{rate}]))",
                            "failed {{reason}}")], unit="reqps"),
            _panel("timeseries", "Failed requests", "Share of requests that failed, cancelled ones not counted.",
                   [_target(f"sum by (model) ({failed})\n/ (sum by (model) ({succeeded}) + sum by (model) ({failed}))",
                            "{{model}}")], unit="percentunit"),
            _panel("timeseries", "Latency SLI: share of slow requests", "The estimated share of requests slower "
                   "than the p95 SLO over each window the burn-rate alerts read "
                   "(modelfleet:serving_latency_errors:ratio_rate<window>). The budget is 5%; a page needs 14.4x it "
                   "over 1h and 5m.",
                   [_target(_sli_by_window("latency"), "{{window}}")], unit="percentunit", width=12),
            _panel("timeseries", "Error SLI: share of failed requests", "The share of failed requests over each "
                   "window (modelfleet:serving_request_errors:ratio_rate<window>). The budget is 0.1%.",
                   [_target(_sli_by_window("request"), "{{window}}")], unit="percentunit", width=12),
        ]),
        (EDGE_ROW, [
            _panel("timeseries", "Devices by health", "Devices running the model's edge targets, by the health "
                   "they report and the bundle version they run, as the fleet gateway sees them "
                   "(modelfleet_fleet_devices; an empty version: none installed).",
                   [_target(f"sum by (target, version, health) (modelfleet_fleet_devices{{{_FLEET}}})",
                            "{{target}} v{{version}} {{health}}")], width=6),
            _panel("timeseries", "Rollout wave and devices", "Each edge target's rollout: the last open wave (0 is "
                   "the canary), and its devices by state (desired, updated, healthy, failed, measured, slow, "
                   "disagreeing), as the operator counts them.",
                   [_target(f"modelfleet_rollout_wave{{{_MODEL}}}", "{{target}} wave"),
                    _target(f"modelfleet_rollout_devices{{{_MODEL}}}", "{{target}} {{state}}")], width=6),
            _panel("timeseries", "Device p95 latency (95th percentile over devices)", "The 95th percentile of "
                   "the p95 latencies the devices measured with the bundle they run (a gauge histogram, one count "
                   "per device, modelfleet_fleet_device_latency_p95_seconds), per target and version; the "
                   "latency gate reads the same percentile.",
                   [_target("histogram_quantile(0.95, sum by (le, target, version) "
                            f"(modelfleet_fleet_device_latency_p95_seconds_bucket{{{_FLEET}}}))",
                            "{{target}} v{{version}}")], unit="s", width=6),
            _stat("Halted rollouts", "Edge targets whose rollout halted on a breach and whose devices were "
                  "pointed back at the previous bundle (modelfleet_rollout_halted; ModelfleetRolloutHalted "
                  "fires). 0: none.",
                  [_target(f"sum(modelfleet_rollout_halted{{{_MODEL}}})", "halted")],
                  defaults={"thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None},
                                                                         {"color": "red", "value": 1}]},
                            "color": {"mode": "thresholds"}}),
            _panel("timeseries", "Gateway requests", f"Requests the fleet gateway (job {GATEWAY_JOB}) answered "
                   "per second, by status code.",
                   [_target(f'sum by (code) (rate(modelfleet_gateway_request_duration_seconds_count'
                            f'{{job="{GATEWAY_JOB}"}}[$__rate_interval]))', "{{code}}")],
                   unit="reqps", width=24, height=6),
        ]),
        ("Operator", [
            _stat("Operator scraped", f"up of job {OPERATOR_JOB}: 0 or absent means the operator is down or "
                  "not scraped.", [_target(f"up{{{_OPERATOR}}}", "{{instance}}")],
                  defaults=_yes_no("up", "down")),
            _stat("CompressedModels", "Resources the operator knows.",
                  [_target(f"modelfleet_models{{{_OPERATOR}}}", "{{instance}}")]),
            _stat("Version", "The modelfleet version the operator runs.",
                  [_target(f"modelfleet_build_info{{{_OPERATOR}}}", "{{version}}")], width=12, text="name",
                  color="none"),
            _panel("timeseries", "Reconciles", "Reconciles per second by result; failed ones are retried with "
                   "backoff.", [_target(f"sum by (result) (rate(modelfleet_reconciles_total{{{_OPERATOR}}}[{rate}]))",
                                        "{{result}}")], unit="ops"),
            _panel("timeseries", "Reconcile errors by reason", "Failed reconciles per second by reason "
                   "(Forbidden: RBAC; ApiServerError: the API server; ...).",
                   [_target(f"sum by (reason) (rate(modelfleet_reconcile_errors_total{{{_OPERATOR}}}[{rate}]))",
                            "{{reason}}")], unit="ops"),
            _panel("timeseries", "Reconcile duration", "Quantiles of the time one reconcile takes.",
                   [_target(f"histogram_quantile({q}, sum by (le) "
                            f"(rate(modelfleet_reconcile_duration_seconds_bucket{{{_OPERATOR}}}[{rate}])))", f"p{p}")
                    for q, p in (("0.5", "50"), ("0.95", "95"), ("0.99", "99"))], unit="s"),
            _panel("timeseries", "Worker Jobs that ended", "Jobs by stage, outcome and reason (Completed, or the "
                   "worker's or Kubernetes' reason for a failure).",
                   [_target(f"sum by (stage, outcome, reason) (increase(modelfleet_jobs_total{{{_OPERATOR}}}[{rate}]))",
                            "{{stage}} {{outcome}} {{reason}}")], width=12),
            _panel("timeseries", "Stage duration (p95)", "Time from a Job's start to its successful end, by stage.",
                   [_target("histogram_quantile(0.95, sum by (le, stage) "
                            f"(rate(modelfleet_stage_duration_seconds_bucket{{{_OPERATOR}}}[{rate}])))",
                            "{{stage}}")], unit="s", width=12),
        ]),
    ]


def _variable(name: str, label: str, query: str) -> dict:
    return {"name": name, "label": label, "type": "query", "datasource": DATASOURCE, "query": query,
            "definition": query, "refresh": 2, "sort": 1, "includeAll": False, "multi": False, "current": {},
            "options": [], "regex": "", "hide": 0}


def build() -> dict:
    """The dashboard: rows laid out left to right, top to bottom, with ids in order."""
    panels, y, ids = [], 0, iter(range(1, 1000))
    for title, row in _rows():
        panels.append({"type": "row", "title": title, "collapsed": False, "id": next(ids), "panels": [],
                       "gridPos": {"h": 1, "w": _WIDTH, "x": 0, "y": y}})
        y, x, height = y + 1, 0, 0
        for panel in row:
            grid = panel["gridPos"]
            if x + grid["w"] > _WIDTH:
                y, x, height = y + height, 0, 0
            panel["gridPos"] = {"h": grid["h"], "w": grid["w"], "x": x, "y": y}
            panel["id"] = next(ids)
            panels.append(panel)
            x, height = x + grid["w"], max(height, grid["h"])
        y += height
    return {
        "uid": UID,
        "title": "modelfleet",
        "description": "CompressedModels and their SLOs, the artifacts each target ships, Triton serving against "
                       "the latency SLO, the edge fleet's devices and rollouts, and the modelfleet operator's health. "
                       "Generated by `python -m modelfleet.dashboard`.",
        "tags": ["modelfleet"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "1m",
        "timezone": "",
        "annotations": {"list": []},
        "links": [],
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "options": [], "refresh": 1, "regex": "", "hide": 0},
            _variable("namespace", "Namespace", "label_values(modelfleet_model_ready, namespace)"),
            _variable("name", "CompressedModel", 'label_values(modelfleet_model_ready{namespace=~"$namespace"}, name)'),
            _variable("model", "Triton model", "label_values(nv_inference_request_success, model)"),
        ]},
        "panels": panels,
    }


def targets(dashboard: dict) -> list[tuple[str, dict]]:
    """(panel title, target) for every query of the dashboard."""
    return [(panel["title"], target) for panel in dashboard["panels"] for target in panel.get("targets", [])]


def row_targets(dashboard: dict) -> list[tuple[str, str, dict]]:
    """(row title, panel title, target) for every query of the dashboard (panels follow their row)."""
    found, row = [], ""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            row = panel["title"]
        found += [(row, panel["title"], target) for target in panel.get("targets", [])]
    return found


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelfleet.dashboard",
                                     description="Write modelfleet's Grafana dashboard (Grafana's JSON model).")
    parser.add_argument("--out", type=Path, default=FILE, help="the dashboard file (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if the file differs from the code")
    args = parser.parse_args(argv)
    if args.check:
        if args.out.is_file() and args.out.read_text() == render():
            return 0
        print(f"{args.out} is out of date with modelfleet.dashboard; run `python -m modelfleet.dashboard`.",
              file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
