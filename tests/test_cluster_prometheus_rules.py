"""The real API server, with the prometheus-operator's CRDs installed (hack/prometheus-operator-crds.sh, pinned
release), accepts modelfleet's monitoring manifests: the fleet-wide PrometheusRule, the operator's Service and
ServiceMonitor, and a per-model PrometheusRule, which the garbage collector removes with its CompressedModel.

The two CRDs stay installed afterwards (applying them again is a no-op); no prometheus-operator runs, so nothing
acts on the objects."""

import copy
from pathlib import Path

import pytest
import yaml

from conftest import REPO, digits_example, wait_until

from modelfleet.api.compressedmodel import CompressedModel
from modelfleet.domain import alerts

pytestmark = pytest.mark.cluster

def _dry_run(kube, documents: list[dict], namespace: str) -> list[dict]:
    """Server-side dry-run apply into `namespace`: the API server validates against the CRDs' schemas and
    stores nothing. Returns the objects as the server would store them; fails (with the server's message) when
    it refuses one."""
    placed = []
    for document in documents:
        document = copy.deepcopy(document)
        document["metadata"]["namespace"] = namespace
        placed.append(document)
    done = kube.kubectl("apply", "--server-side", "--force-conflicts", "--dry-run=server",
                        "--field-manager=modelfleet-test", "-o", "yaml", "-f", "-", input=yaml.safe_dump_all(placed),
                        check=False)
    assert done.returncode == 0, done.stderr
    objects = []
    for document in yaml.safe_load_all(done.stdout):  # several objects come back as one List
        objects += document.get("items", []) if document.get("kind") == "List" else [document]
    return objects


def test_the_fleet_rule_passes_the_api_servers_validation(kube, monitoring_crds, namespace):
    rule = yaml.safe_load((REPO / "deploy/prometheus/modelfleet-rules.yaml").read_text())
    (stored,) = _dry_run(kube, [rule], namespace)
    # Nothing was pruned: the schema knows every field written.
    assert stored["spec"]["groups"] == rule["spec"]["groups"]


def test_the_operator_service_monitor_passes_the_api_servers_validation(kube, monitoring_crds, namespace):
    documents = list(yaml.safe_load_all((REPO / "deploy/prometheus/operator-servicemonitor.yaml").read_text()))
    stored = _dry_run(kube, documents, namespace)
    assert sorted(d["kind"] for d in stored) == ["Service", "ServiceMonitor"]
    (monitor,) = [d for d in stored if d["kind"] == "ServiceMonitor"]
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True


def test_a_model_rule_is_accepted_and_deleted_with_its_compressed_model(kube, monitoring_crds, namespace):
    body = digits_example(Path("/data"), {
        "source": {"uri": "pvc://data/digits/digits.torchscript.pt"},
        "dataset": {"calibration": {"uri": "pvc://data/digits/calibration.npz"},
                    "evaluation": {"uri": "pvc://data/digits/evaluation.npz"}},
        "targets": {"triton": {"repository": "pvc://models/triton", "modelName": "digits"}},
        "slo": {"latencyP95Ms": {"triton": 10}}})
    body["metadata"]["namespace"] = namespace
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))
    uid = kube.kubectl("get", "compressedmodel", "digits", "-n", namespace, "-o", "jsonpath={.metadata.uid}").stdout
    rule = alerts.model_rule_for(CompressedModel.model_validate(body), uid)

    (stored,) = _dry_run(kube, [rule], namespace)
    assert stored["spec"]["groups"] == rule["spec"]["groups"]
    assert stored["metadata"]["ownerReferences"] == rule["metadata"]["ownerReferences"]

    # Applied (not created): an operator running in this session may have written the same rule already.
    kube.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=modelfleet-test", "-f", "-",
                 input=yaml.safe_dump(rule))
    name = rule["metadata"]["name"]
    assert kube.kubectl("get", "prometheusrule", name, "-n", namespace).returncode == 0
    kube.kubectl("delete", "compressedmodel", "digits", "-n", namespace, "--wait=true", "--timeout=60s")
    wait_until(lambda: kube.kubectl("get", "prometheusrule", name, "-n", namespace, "--ignore-not-found", "-o",
                                    "name").stdout.strip() == "", 60, f"the garbage collector to delete {name}")
