"""modelfleet's Prometheus rules (modelfleet.domain.alerts): the committed files match the generator, promtool
accepts them, every alert fires when it should and stays quiet otherwise (promtool's unit tests in
tests/promtool/, on Triton 2.51's and the operator's real series names), the manifests fit the
prometheus-operator's CRD schema, and the rules are built as specified (windows, thresholds, labels,
annotations)."""

import copy
import re
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from conftest import REPO, deep_update, digits_example

from modelfleet import rulegen
from modelfleet.api.compressedmodel import CompressedModel
from modelfleet.domain import alerts
from modelfleet.domain.plan import MODEL_LABEL

DEPLOY = REPO / "deploy" / "prometheus"
PROMTOOL_TESTS = REPO / "tests" / "promtool"
# The model of tests/promtool/model*.test.yaml.
DIGITS = {"namespace": "shop", "name": "digits", "triton_model": "digits", "latency_p95_seconds": 0.010}
# Rule files the promtool tests name in `rule_files:`; the fleet's is the committed file itself.
RULE_FILES = {
    "fleet.rules.yaml": lambda: yaml.safe_load((DEPLOY / rulegen.GROUPS_FILE).read_text())["groups"],
    "fleet-scaled.rules.yaml": lambda: alerts.fleet_groups(scale=1 / 60),
    "model.rules.yaml": lambda: alerts.model_groups(**DIGITS),
    "model-scaled.rules.yaml": lambda: alerts.model_groups(**DIGITS, windows=alerts.Windows().scaled(1 / 60)),
}
PROMTOOL_TEST_FILES = sorted(PROMTOOL_TESTS.glob("*.test.yaml"))
VARIANTS = {
    "fleet": alerts.fleet_groups(),
    "fleet, scaled windows, other jobs": alerts.fleet_groups("mf-operator", 1 / 60, "mf-gateway"),
    "model": alerts.model_groups(**DIGITS),
    "model without a latency SLO": alerts.model_groups(**(DIGITS | {"latency_p95_seconds": None})),
    "model, scaled windows": alerts.model_groups(**DIGITS, windows=alerts.Windows().scaled(1 / 60)),
    "model, custom quantiles and matchers": alerts.model_groups(
        **DIGITS, quantiles=(0.5, 0.99), triton_matchers={"namespace": "serving"}, availability_objective=0.99),
}


def _rules(groups: list[dict]) -> list[dict]:
    return [rule for group in groups for rule in group["rules"]]


def _alert_rules(groups: list[dict]) -> list[dict]:
    return [rule for rule in _rules(groups) if "alert" in rule]


def _by_name(groups: list[dict], name: str) -> list[dict]:
    return [rule for rule in _rules(groups) if alerts.rule_name(rule) == name]


# --- generated files --------------------------------------------------------------------------------------------


def test_committed_rule_files_match_the_generator():
    assert rulegen.main(["--check", "--out", str(DEPLOY)]) == 0, "run `python -m modelfleet.rulegen`"


def test_check_fails_with_a_hint_when_a_file_drifted_or_is_missing(tmp_path, capsys):
    rulegen.write(tmp_path)
    assert rulegen.main(["--check", "--out", str(tmp_path)]) == 0
    (tmp_path / rulegen.RULE_FILE).write_text(rulegen.render().replace("for: 10m", "for: 1m"))
    assert rulegen.main(["--check", "--out", str(tmp_path)]) == 1
    assert "python -m modelfleet.rulegen" in capsys.readouterr().err
    (tmp_path / rulegen.RULE_FILE).unlink()
    assert rulegen.main(["--check", "--out", str(tmp_path / "nowhere")]) == 1


def test_the_prometheus_rule_and_the_plain_rule_file_hold_the_same_groups():
    rule = yaml.safe_load((DEPLOY / rulegen.RULE_FILE).read_text())
    plain = yaml.safe_load((DEPLOY / rulegen.GROUPS_FILE).read_text())
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert rule["metadata"]["namespace"] == "modelfleet-system"
    assert rule["spec"]["groups"] == plain["groups"] == alerts.fleet_groups()


def test_multiline_expressions_are_written_as_literal_blocks():
    text = rulegen.render()
    assert "expr: |-\n" in text and "\\n" not in text


def test_model_command_prints_the_rule_of_a_manifest(tmp_path, capsys):
    body = digits_example(Path("/data"), {"targets": {"triton": {"repository": "pvc://models/triton",
                                                                 "modelName": "digits"}},
                                          "slo": {"latencyP95Ms": {"triton": 25}}})
    body["metadata"]["namespace"] = "shop"
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(body))
    assert rulegen.main(["--model", str(tmp_path / "m.yaml"), "--uid", "1234"]) == 0
    rule = yaml.safe_load(capsys.readouterr().out)
    assert rule["metadata"]["ownerReferences"][0]["uid"] == "1234"
    assert rule["spec"]["groups"] == alerts.model_groups("shop", "digits", "digits", 0.025)

    assert rulegen.main(["--model", str(tmp_path / "m.yaml"), "--groups"]) == 0
    assert list(yaml.safe_load(capsys.readouterr().out)) == ["groups"]

    del body["spec"]["targets"]["triton"]
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(body))
    assert rulegen.main(["--model", str(tmp_path / "m.yaml")]) == 1
    assert "no spec.targets.triton" in capsys.readouterr().err


# --- promtool -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_promtool_accepts_the_rules(promtool, tmp_path, variant):
    path = tmp_path / "rules.yaml"
    path.write_text(rulegen.dump({"groups": VARIANTS[variant]}))
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_accepts_the_committed_rule_file(promtool):
    done = subprocess.run([promtool, "check", "rules", str(DEPLOY / rulegen.GROUPS_FILE)], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def _expand_labels(template: str, labels: dict[str, str]) -> str:
    text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], template)
    assert "{{" not in text, f"spell this annotation out in the test file: {template}"
    return text


def _prepare_promtool_test(test_file: Path, directory: Path) -> Path:
    """The test file beside its rule files, each expected alert's `runbook` annotation filled in from its rule
    (the alert with that name and severity), so the test files spell out only summary and description."""
    test = yaml.safe_load(test_file.read_text())
    groups = []
    for name in test["rule_files"]:
        groups += RULE_FILES[name]()
        (directory / name).write_text(rulegen.dump({"groups": RULE_FILES[name]()}))
    for case in test["tests"]:
        for check in case.get("alert_rule_test", []):
            for expected in check["exp_alerts"]:
                (rule,) = [r for r in _by_name(groups, check["alertname"])
                           if r["labels"]["severity"] == expected["exp_labels"]["severity"]]
                expected.setdefault("exp_annotations", {}).setdefault(
                    "runbook", _expand_labels(rule["annotations"]["runbook"], expected["exp_labels"]))
    path = directory / test_file.name
    path.write_text(yaml.safe_dump(test, sort_keys=False, width=1 << 16))
    return path


@pytest.mark.parametrize("test_file", PROMTOOL_TEST_FILES, ids=lambda p: p.name)
def test_promtool_unit_tests_pass(promtool, tmp_path, test_file):
    path = _prepare_promtool_test(test_file, tmp_path)
    done = subprocess.run([promtool, "test", "rules", path.name], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-20000:] + done.stderr[-5000:]


def test_every_alert_has_a_promtool_case_where_it_fires_and_one_where_it_does_not():
    fired, quiet = set(), set()
    for test_file in PROMTOOL_TEST_FILES:
        for case in yaml.safe_load(test_file.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                if not check["exp_alerts"]:
                    quiet.add(check["alertname"])
                fired |= {(check["alertname"], e["exp_labels"]["severity"]) for e in check["exp_alerts"]}
    every = {(rule["alert"], rule["labels"]["severity"])
             for rule in _alert_rules(alerts.fleet_groups()) + _alert_rules(alerts.model_groups(**DIGITS))}
    assert every - fired == set(), "alerts without a case where they fire"
    assert {name for name, _ in every} - quiet == set(), "alerts without a case where they stay quiet"


# --- the prometheus-operator's schema ---------------------------------------------------------------------------


def _crd_schema(crds: Path, file: str) -> dict:
    (version,) = [v for v in yaml.safe_load((crds / file).read_text())["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


def _pruned_fields(document, schema: dict, path: str = "") -> list[str]:
    """Fields the API server would silently drop: not in the (structural) schema, which prunes unknown fields."""
    if isinstance(document, dict) and "properties" in schema:
        found = []
        for key, value in document.items():
            if key not in schema["properties"]:
                found.append(f"{path}.{key}")
            else:
                found += _pruned_fields(value, schema["properties"][key], f"{path}.{key}")
        return found
    if isinstance(document, list) and "items" in schema:
        return [f for i, item in enumerate(document) for f in _pruned_fields(item, schema["items"], f"{path}[{i}]")]
    return []


def _validate(document: dict, schema: dict) -> None:
    schema = copy.deepcopy(schema)
    schema["properties"]["metadata"] = {"type": "object"}  # the API server's own
    jsonschema.Draft7Validator(schema).validate(document)
    assert _pruned_fields(document, schema) == []


def test_rules_fit_the_prometheus_rule_crd(prometheus_operator_crds):
    schema = _crd_schema(prometheus_operator_crds, "monitoring.coreos.com_prometheusrules.yaml")
    _validate(yaml.safe_load((DEPLOY / rulegen.RULE_FILE).read_text()), schema)
    for variant in VARIANTS:
        _validate(alerts.model_rule("shop", "digits", "uid", "digits", 0.01) | {"spec": {"groups": VARIANTS[variant]}},
                  schema)


def test_the_service_monitor_fits_its_crd(prometheus_operator_crds):
    schema = _crd_schema(prometheus_operator_crds, "monitoring.coreos.com_servicemonitors.yaml")
    documents = list(yaml.safe_load_all((DEPLOY / "operator-servicemonitor.yaml").read_text()))
    (monitor,) = [d for d in documents if d["kind"] == "ServiceMonitor"]
    (service,) = [d for d in documents if d["kind"] == "Service"]
    _validate(monitor, schema)
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True  # the per-model `namespace` label survives
    # The job label ModelfleetOperatorDown watches is the Service's name.
    assert service["metadata"]["name"] == alerts.OPERATOR_JOB
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    operator = yaml.safe_load((REPO / "deploy" / "operator.yaml").read_text())
    assert service["spec"]["selector"].items() <= operator["spec"]["template"]["metadata"]["labels"].items()


def test_the_gateway_service_monitor_fits_its_crd_and_names_the_gateway_job(prometheus_operator_crds):
    schema = _crd_schema(prometheus_operator_crds, "monitoring.coreos.com_servicemonitors.yaml")
    (monitor,) = yaml.safe_load_all((DEPLOY / "gateway-servicemonitor.yaml").read_text())
    _validate(monitor, schema)
    # No Service of its own: the gateway's (named modelfleet-gateway, the job label the alerts watch) is assumed.
    assert monitor["metadata"]["name"] == alerts.GATEWAY_JOB
    assert monitor["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": alerts.GATEWAY_JOB}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["scheme"], endpoint["honorLabels"]) == (
        "metrics", "/metrics", "http", True)


# --- the rules themselves (pure) ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("seconds", "text"), [
    (1, "1s"), (90, "1m30s"), (300, "5m"), (3600, "1h"), (5400, "1h30m"), (86400, "1d"), (3 * 86400, "3d"),
])
def test_durations_are_written_as_prometheus_reads_them(seconds, text):
    assert alerts.duration(seconds) == text


def test_a_duration_must_be_positive():
    with pytest.raises(ValueError):
        alerts.duration(0)


def test_default_windows_are_the_sre_workbooks():
    windows = alerts.Windows()
    # (long window, short window, factor): the share of a 30-day budget a burn spends before it alerts.
    assert [(b.long, b.short, b.factor) for b in windows.page] == [(3600, 300, 14.4), (21600, 1800, 6)]
    assert [(b.long, b.short, b.factor) for b in windows.ticket] == [(86400, 7200, 3), (259200, 21600, 1)]
    spent = [round(b.factor * b.long / windows.period, 3) for b in (*windows.page, *windows.ticket)]
    assert spent == [0.02, 0.05, 0.1, 0.1]
    assert windows.lengths() == [300, 1800, 3600, 7200, 21600, 86400, 259200]


def test_scaled_windows_keep_the_factors_and_shrink_every_length():
    scaled = alerts.Windows().scaled(1 / 60)
    assert [(b.long, b.short, b.factor) for b in scaled.page] == [(60, 5, 14.4), (360, 30, 6)]
    assert [(b.long, b.short, b.factor) for b in scaled.ticket] == [(1440, 120, 3), (4320, 360, 1)]
    assert (scaled.rate, scaled.hold, scaled.period) == (2, 10, 43200)
    assert alerts.Windows().scaled(1e-9).lengths() == [1]  # never below a second


@pytest.mark.parametrize(("alert", "severity", "conditions"), [
    ("ModelfleetServingLatencyBudgetBurn", "page",
     [("latency", "1h", "5m", "0.72"), ("latency", "6h", "30m", "0.3")]),
    ("ModelfleetServingLatencyBudgetBurn", "ticket",
     [("latency", "1d", "2h", "0.15"), ("latency", "3d", "6h", "0.05")]),
    ("ModelfleetServingErrorBudgetBurn", "page",
     [("request", "1h", "5m", "0.0144"), ("request", "6h", "30m", "0.006")]),
    ("ModelfleetServingErrorBudgetBurn", "ticket",
     [("request", "1d", "2h", "0.003"), ("request", "3d", "6h", "0.001")]),
])
def test_burn_rate_alerts_need_both_windows_above_the_factor_times_the_budget(alert, severity, conditions):
    (rule,) = [r for r in _by_name(alerts.model_groups(**DIGITS), alert) if r["labels"]["severity"] == severity]
    own = '{namespace="shop",name="digits"}'
    expected = "\n or ".join(
        f"(modelfleet:serving_{sli}_errors:ratio_rate{long}{own} > {x}\n"
        f"   and modelfleet:serving_{sli}_errors:ratio_rate{short}{own} > {x})" for sli, long, short, x in conditions)
    assert rule["expr"] == expected
    assert "for" not in rule  # the short window already ignores blips


def test_every_window_has_a_recorded_error_ratio_for_both_slis():
    recorded = {rule["record"] for rule in _rules(alerts.model_groups(**DIGITS)) if "record" in rule}
    for window in ("5m", "30m", "1h", "2h", "6h", "1d", "3d"):
        assert f"modelfleet:serving_latency_errors:ratio_rate{window}" in recorded
        assert f"modelfleet:serving_request_errors:ratio_rate{window}" in recorded
    assert {"modelfleet:triton_requests:rate2m", "modelfleet:triton_requests_slow:rate2m"} <= recorded


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_alert_has_a_severity_and_actionable_annotations(variant):
    groups = VARIANTS[variant]
    for rule in _alert_rules(groups):
        assert rule["labels"]["severity"] in alerts.SEVERITIES, rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description", "runbook"}, rule["alert"]
        assert all(len(text) > 20 for text in rule["annotations"].values()), rule["alert"]
    records = [alerts.rule_name(r) for r in _rules(groups) if "record" in r]
    assert len(records) == len(set(records))
    assert len({g["name"] for g in groups}) == len(groups)


def test_per_model_series_and_alerts_carry_the_resources_namespace_and_name():
    for rule in _rules(alerts.model_groups(**DIGITS)):
        assert {"namespace": "shop", "name": "digits"}.items() <= rule["labels"].items(), alerts.rule_name(rule)


def test_a_model_without_a_latency_slo_gets_only_the_request_error_rules():
    groups = alerts.model_groups(**(DIGITS | {"latency_p95_seconds": None}))
    names = {alerts.rule_name(r) for r in _rules(groups)}
    assert not any("latency" in name.lower() for name in names)
    assert {"ModelfleetServingErrorBudgetBurn", "ModelfleetTritonModelNotServed"} <= names


def test_the_latency_threshold_is_the_slo_in_microseconds_and_only_the_given_quantiles_are_read():
    groups = alerts.model_groups(**(DIGITS | {"latency_p95_seconds": 0.0125}), quantiles=(0.5, 0.99))
    (slow,) = _by_name(groups, "modelfleet:triton_requests_slow:rate2m")
    assert set(re.findall(r'quantile="([^"]+)"', slow["expr"])) == {"0.5", "0.99"}
    assert "> 12500" in slow["expr"] and "<= 12500" in slow["expr"]
    # median above, between the two quantiles, above the top one: three branches
    assert slow["expr"].count("\n  or (") == 2


def test_triton_matchers_narrow_every_triton_selector():
    groups = alerts.model_groups(**DIGITS, triton_matchers={"namespace": "serving"})
    exprs = "\n".join(r["expr"] for r in _rules(groups))
    assert exprs.count('model="digits"') == exprs.count('model="digits",namespace="serving"') > 0


def test_fleet_rules_watch_the_given_operator_job_and_scale():
    groups = alerts.fleet_groups(operator_job="mf-operator", scale=1 / 60)
    (down,) = _by_name(groups, "ModelfleetOperatorDown")
    assert down["expr"] == 'absent(up{job="mf-operator"} == 1)'
    assert down["labels"] == {"job": "mf-operator", "severity": "ticket"}
    assert down["for"] == "10s"
    (errors,) = _by_name(groups, "ModelfleetReconcileErrors")
    assert 'job="mf-operator"' in errors["expr"] and "[15s]" in errors["expr"]


def test_fleet_rules_watch_the_given_gateway_job_and_scale():
    groups = alerts.fleet_groups(scale=1 / 60, gateway_job="mf-gateway")
    (down,) = _by_name(groups, "ModelfleetGatewayDown")
    assert down["expr"] == 'up{job="mf-gateway"} == 0\nor absent(up{job="mf-gateway"})'
    assert (down["labels"], down["for"]) == ({"job": "mf-gateway", "severity": "page"}, "5s")
    (errors,) = _by_name(groups, "ModelfleetGatewayErrors")
    assert errors["expr"].count('job="mf-gateway"') == 2 and "[5s]" in errors["expr"]
    assert (errors["labels"]["severity"], errors["for"]) == ("ticket", "10s")
    (failing,) = _by_name(groups, "ModelfleetRolloutDevicesFailing")
    assert failing["for"] == "15s"


@pytest.mark.parametrize(("alert", "sli", "severity", "conditions"), [
    ("ModelfleetEdgeLatencyBudgetBurn", "latency", "page", [("1h", "5m", "0.72"), ("6h", "30m", "0.3")]),
    ("ModelfleetEdgeLatencyBudgetBurn", "latency", "ticket", [("1d", "2h", "0.15"), ("3d", "6h", "0.05")]),
    ("ModelfleetEdgeAgreementBudgetBurn", "agreement", "page", [("1h", "5m", "0.72"), ("6h", "30m", "0.3")]),
    ("ModelfleetEdgeAgreementBudgetBurn", "agreement", "ticket", [("1d", "2h", "0.15"), ("3d", "6h", "0.05")]),
])
def test_edge_burn_rate_alerts_read_the_devices_share_over_both_windows(alert, sli, severity, conditions):
    (rule,) = [r for r in _by_name(alerts.fleet_groups(), alert) if r["labels"]["severity"] == severity]
    ratio = f"modelfleet:edge_{sli}_errors:ratio_avg"
    assert rule["expr"] == "\n or ".join(f"({ratio}{long} > {x}\n   and {ratio}{short} > {x})"
                                          for long, short, x in conditions)
    assert rule["labels"] == {"slo": f"edge-{sli}", "severity": severity}
    assert "for" not in rule


@pytest.mark.parametrize(("sli", "errors", "of"), [("latency", "slow", "measured"),
                                                   ("agreement", "disagreeing", "updated")])
def test_the_edge_slis_are_device_shares_averaged_over_every_window(sli, errors, of):
    groups = alerts.fleet_groups()
    share = f"modelfleet:edge_devices_{errors}:ratio"
    (record,) = _by_name(groups, share)
    assert record["expr"] == (
        f'sum by (namespace, name, target) (modelfleet_rollout_devices{{state="{errors}"}})\n'
        f'/ (sum by (namespace, name, target) (modelfleet_rollout_devices{{state="{of}"}}) > 0)')
    for window in ("5m", "30m", "1h", "2h", "6h", "1d", "3d"):
        (ratio,) = _by_name(groups, f"modelfleet:edge_{sli}_errors:ratio_avg{window}")
        assert ratio["expr"] == f"avg_over_time({share}[{window}])"
    scaled = {r["record"] for r in _rules(alerts.fleet_groups(scale=1 / 60)) if "record" in r}
    assert {f"modelfleet:edge_{sli}_errors:ratio_avg1m", f"modelfleet:edge_{sli}_errors:ratio_avg5s"} <= scaled


def test_the_model_rule_is_owned_by_its_compressed_model():
    rule = alerts.model_rule("shop", "digits", "0a1b-uid", "digits-prod", 0.01)
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    meta = rule["metadata"]
    assert (meta["namespace"], meta["name"]) == ("shop", "digits-serving-slo")
    assert meta["labels"] == {"app.kubernetes.io/managed-by": "modelfleet", MODEL_LABEL: "digits"}
    assert meta["ownerReferences"] == [{"apiVersion": "modelfleet.io/v1alpha1", "kind": "CompressedModel",
                                        "name": "digits", "uid": "0a1b-uid", "controller": True,
                                        "blockOwnerDeletion": True}]
    assert rule["spec"]["groups"] == alerts.model_groups("shop", "digits", "digits-prod", 0.01)


@pytest.mark.parametrize(("changes", "latency"), [
    ({"targets": {"triton": {"repository": "pvc://models/triton", "modelName": "digits-prod"}},
      "slo": {"latencyP95Ms": {"triton": 8}}}, 0.008),
    ({"targets": {"triton": {"repository": "pvc://models/triton", "modelName": "digits-prod"}}}, None),
])
def test_model_rule_for_reads_the_triton_target_and_its_latency_slo(changes, latency):
    body = deep_update(digits_example(Path("/data")), {"metadata": {"namespace": "shop"}, "spec": changes})
    rule = alerts.model_rule_for(CompressedModel.model_validate(body), "uid-7")
    assert rule == alerts.model_rule("shop", "digits", "uid-7", "digits-prod", latency)


def test_a_model_without_a_triton_target_gets_no_rule():
    assert alerts.model_rule_for(CompressedModel.model_validate(digits_example(Path("/data"))), "uid") is None


def test_promtool_test_files_name_only_generated_rule_files():
    for test_file in PROMTOOL_TEST_FILES:
        assert set(yaml.safe_load(test_file.read_text())["rule_files"]) <= set(RULE_FILES), test_file.name
