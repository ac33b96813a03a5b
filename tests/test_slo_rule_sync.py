"""The operator keeps one PrometheusRule per CompressedModel with a Triton target (controller._sync_slo_rule):
applied when it changes, deleted when the Triton target goes, and left alone where the cluster has no
PrometheusRule kind. The API side is an in-memory stand-in here; tests/test_cluster_slo_rules.py runs it against
the real API server with prometheus-operator's CRDs."""

import copy

import pytest

from modelfleet import controller
from modelfleet.api import CompressedModel
from modelfleet.domain.plan import OperatorSettings
from conftest import digits_example
from pathlib import Path

TRITON = {"repository": "s3://models/repo", "modelName": "digits", "precision": "auto"}


class RuleApi:
    """Records PrometheusRule calls; `has_kind` False answers like an API server without the CRDs."""

    def __init__(self, has_kind=True):
        self.has_kind, self.applied, self.deleted = has_kind, [], []

    def apply_prometheus_rule(self, manifest):
        if self.has_kind:
            self.applied.append(copy.deepcopy(manifest))
        return self.has_kind

    def delete_prometheus_rule(self, namespace, name):
        self.deleted.append((namespace, name))


def model(triton=TRITON, latency_ms=5.0, name="digits") -> CompressedModel:
    manifest = digits_example(Path("/data"), {"targets": {"triton": triton} if triton else {},
                                              "slo": {"latencyP95Ms": {"triton": latency_ms}}})
    if not triton:
        manifest["spec"]["targets"].pop("triton", None)
    manifest["metadata"].update(namespace="team-a", name=name, uid="uid-1")
    return CompressedModel.model_validate(manifest)


@pytest.fixture(autouse=True)
def fresh_state(monkeypatch):
    monkeypatch.setattr(controller, "_slo_rules", {})
    monkeypatch.setattr(controller, "_no_rule_kind_until", 0.0)


SETTINGS = OperatorSettings(worker_image="w", artifacts="file:///results")


def test_applied_once_owned_by_the_resource_and_again_only_when_it_changes():
    api = RuleApi()
    for _ in range(3):
        controller._sync_slo_rule(api, SETTINGS, model(), "uid-1")
    assert len(api.applied) == 1
    rule = api.applied[0]
    assert rule["kind"] == "PrometheusRule" and rule["metadata"]["namespace"] == "team-a"
    assert rule["metadata"]["ownerReferences"][0] | {"uid": "uid-1", "kind": "CompressedModel"} == \
        rule["metadata"]["ownerReferences"][0]
    assert "5 ms" in str(rule["spec"]) and "ModelfleetServingLatencyBudgetBurn" in str(rule["spec"])
    controller._sync_slo_rule(api, SETTINGS, model(latency_ms=8.0), "uid-1")
    assert len(api.applied) == 2 and "8 ms" in str(api.applied[1]["spec"])


def test_removing_the_triton_target_deletes_the_rule():
    api = RuleApi()
    controller._sync_slo_rule(api, SETTINGS, model(), "uid-1")
    controller._sync_slo_rule(api, SETTINGS, model(triton=None), "uid-1")
    controller._sync_slo_rule(api, SETTINGS, model(triton=None), "uid-1")
    assert api.deleted == [("team-a", "digits-serving-slo")]


def test_without_the_prometheus_rule_kind_it_waits_before_looking_again(monkeypatch):
    api = RuleApi(has_kind=False)
    controller._sync_slo_rule(api, SETTINGS, model(), "uid-1")
    api.has_kind = True
    controller._sync_slo_rule(api, SETTINGS, model(name="other"), "uid-1")
    assert api.applied == []  # within RULE_KIND_RECHECK_SECONDS: no call at all
    monkeypatch.setattr(controller, "_no_rule_kind_until", 0.0)
    controller._sync_slo_rule(api, SETTINGS, model(), "uid-1")
    assert len(api.applied) == 1


def test_the_window_scale_shortens_every_window():
    api = RuleApi()
    controller._sync_slo_rule(api, OperatorSettings(worker_image="w", artifacts="file:///r", slo_window_scale=1 / 60),
                              model(), "uid-1")
    text = str(api.applied[0]["spec"])
    assert "[1h]" not in text and "ratio_rate1m" in text  # the 1 h page window became 1 min


def test_a_bad_window_scale_stops_the_operator_with_a_message(monkeypatch):
    monkeypatch.setenv("MODELFLEET_WORKER_IMAGE", "w")
    monkeypatch.setenv("MODELFLEET_ARTIFACTS", "file:///r")
    monkeypatch.setenv("MODELFLEET_SLO_WINDOW_SCALE", "-1")
    with pytest.raises(SystemExit, match="MODELFLEET_SLO_WINDOW_SCALE must be a positive number"):
        controller.settings_from_env()
