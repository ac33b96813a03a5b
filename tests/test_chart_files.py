"""The Helm chart (charts/modelfleet) without helm: its generated copies match their sources (hack/chartgen.py),
values.yaml is commented key by key and validates against the strict values.schema.json, wrong values are
refused, and every `.Values.x.y` a template reads exists. `helm lint`, `helm template` and installs on the
test cluster are the cluster tests' part."""

import importlib.util
import json
import re
import shutil
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

from conftest import REPO

CHART = REPO / "charts" / "modelfleet"
TEMPLATES = CHART / "templates"


def _chartgen():
    spec = importlib.util.spec_from_file_location("chartgen", REPO / "hack" / "chartgen.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


chartgen = _chartgen()


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads((CHART / "values.schema.json").read_text())


@pytest.fixture(scope="module")
def values() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def _errors(schema: dict, values: dict) -> list[str]:
    return [f"{'.'.join(map(str, e.path))}: {e.message}" for e in jsonschema.Draft7Validator(schema).iter_errors(values)]


# --- generated copies -----------------------------------------------------------------------------------------


def test_chart_copies_match_their_sources():
    assert chartgen.main(["--check"]) == 0, "run `python hack/chartgen.py`"


def _scratch_repo(tmp_path: Path) -> Path:
    for part in ("crds", "deploy", "charts"):
        shutil.copytree(REPO / part, tmp_path / part)
    return tmp_path


def test_check_fails_with_a_hint_on_a_changed_source_an_edited_copy_or_a_leftover(tmp_path, capsys):
    repo = _scratch_repo(tmp_path)
    assert chartgen.main(["--check", "--repo", str(repo)]) == 0

    crd = repo / "crds" / "edgedevices.modelfleet.io.yaml"
    crd.write_text(crd.read_text().replace("plural: edgedevices", "plural: edgedevicez"))
    assert chartgen.main(["--check", "--repo", str(repo)]) == 1
    assert "python hack/chartgen.py" in capsys.readouterr().err
    assert chartgen.main(["--repo", str(repo)]) == 0
    assert chartgen.main(["--check", "--repo", str(repo)]) == 0

    rules = repo / "charts/modelfleet/files/rbac/operator-rules.yaml"
    rules.write_text(rules.read_text().replace("[list, watch, create, delete]", "['*']"))
    assert chartgen.main(["--check", "--repo", str(repo)]) == 1

    assert chartgen.main(["--repo", str(repo)]) == 0
    (repo / "charts/modelfleet/files/prometheus/09-old-group.yaml").write_text("- name: old\n  rules: []\n")
    assert chartgen.main(["--check", "--repo", str(repo)]) == 1
    assert chartgen.main(["--repo", str(repo)]) == 0
    assert not (repo / "charts/modelfleet/files/prometheus/09-old-group.yaml").exists()


def _rendered_crd(template: str) -> dict:
    """A CRD template with its template lines dropped: the document helm would render, less the labels."""
    lines = [line for line in template.splitlines()
             if not line.strip().startswith("{{") and "helm.sh/resource-policy" not in line
             and line.strip() not in ("labels:", "annotations:")]
    return yaml.safe_load("\n".join(lines))


@pytest.mark.parametrize("crd", sorted((REPO / "crds").glob("*.yaml")), ids=lambda p: p.name)
def test_crd_templates_are_the_crds_gated_labelled_and_kept(crd):
    template = (TEMPLATES / f"crd-{crd.name}").read_text()
    assert template.splitlines()[1] == "{{- if .Values.crds.enabled }}"
    assert template.rstrip().endswith("{{- end }}")
    assert "{{- if .Values.crds.keep }}" in template and "helm.sh/resource-policy: keep" in template
    assert _rendered_crd(template) == yaml.safe_load(crd.read_text())


def test_rule_group_files_are_the_rule_file_cut_per_group():
    source = yaml.safe_load((REPO / chartgen.RULE_GROUPS).read_text())["groups"]
    files = sorted((CHART / "files" / "prometheus").glob("*.yaml"))
    groups = [group for path in files for group in yaml.safe_load(path.read_text())]
    assert groups == source
    # prometheusrule.yaml leaves this file out without the gateway: its name must stay what the template matches.
    assert [p.name for p in files if "-modelfleet-edge-gateway." in p.name] == ["04-modelfleet-edge-gateway.yaml"]
    assert "-modelfleet-edge-gateway." in (TEMPLATES / "prometheusrule.yaml").read_text()


def test_the_dashboard_copy_is_byte_for_byte():
    assert (CHART / "files/grafana/modelfleet-dashboard.json").read_bytes() == (REPO / chartgen.DASHBOARD).read_bytes()


@pytest.mark.parametrize("component", ["operator", "gateway"])
def test_cluster_roles_grant_exactly_the_rules_the_integration_tests_run_with(component):
    deployed = next(d for d in yaml.safe_load_all((REPO / f"deploy/{component}-rbac.yaml").read_text())
                    if d and d["kind"] == "ClusterRole")
    chart = yaml.safe_load((CHART / f"files/rbac/{component}-rules.yaml").read_text())
    assert chart == deployed["rules"]
    assert f'.Files.Get "files/rbac/{component}-rules.yaml"' in (TEMPLATES / f"{component}-clusterrole.yaml").read_text()


def test_chart_metadata_follows_pyproject():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert (chart["apiVersion"], chart["name"], chart["version"]) == ("v2", "modelfleet", "0.1.0")
    assert chart["appVersion"] == version


# --- values and their schema ----------------------------------------------------------------------------------


def test_default_values_validate_against_the_schema(schema, values):
    jsonschema.Draft7Validator.check_schema(schema)
    assert _errors(schema, values) == []


def _objects(node: dict, path: str = "$"):
    if isinstance(node, dict):
        if node.get("type") == "object" or "properties" in node:
            yield path, node
        for key, child in node.items():
            if isinstance(child, dict):
                yield from _objects(child, f"{path}.{key}")
            elif isinstance(child, list):
                for index, item in enumerate(child):
                    yield from _objects(item, f"{path}.{key}[{index}]")


def test_every_object_the_chart_defines_is_closed(schema):
    """additionalProperties false wherever the schema names properties; maps type their values; only
    Kubernetes' own structures (affinity terms, env valueFrom, network peers) pass through, and say so."""
    for path, node in _objects(schema):
        if "properties" in node:
            assert node.get("additionalProperties") is False, path
        elif isinstance(node.get("additionalProperties"), dict):
            continue  # a map: labels, annotations, resource quantities
        else:
            assert "passed through" in node.get("description", ""), path


@pytest.mark.parametrize("change, where", [
    ({"replicaCount": 2}, ""),  # unknown top-level key
    ({"operator": {"image": {"tga": "v1"}}}, "operator.image"),  # misspelt key
    ({"crds": {"enabled": "yes"}}, "crds.enabled"),
    ({"artifacts": {"uri": "file:///data"}}, "artifacts.uri"),
    ({"artifacts": {"uri": "pvc://Results"}}, "artifacts.uri"),
    ({"operator": {"image": {"pullPolicy": "Sometimes"}}}, "operator.image.pullPolicy"),
    ({"operator": {"metricsPort": 70000}}, "operator.metricsPort"),
    ({"operator": {"tritonServers": ["triton:8000"]}}, "operator.tritonServers.0"),
    ({"operator": {"resources": {"requests": {"cpu": "lots"}}}}, "operator.resources.requests.cpu"),
    ({"operator": {"securityContext": {"capabilities": {"drop": ["all"]}}}}, "operator.securityContext.capabilities.drop.0"),
    ({"gateway": {"bundleKeys": {"keys": []}}}, "gateway.bundleKeys.keys"),
    ({"gateway": {"service": {"port": "443"}}}, "gateway.service.port"),
    ({"agent": {"maintenanceWindow": "25:00-01:00"}}, "agent.maintenanceWindow"),
    ({"agent": {"gatewayUrl": "fleet.example.com"}}, "agent.gatewayUrl"),
    ({"agent": {"tolerations": [{"key": "edge", "effect": "Sometimes"}]}}, "agent.tolerations.0.effect"),
    ({"monitoring": {"serviceMonitor": {"interval": "30 seconds"}}}, "monitoring.serviceMonitor.interval"),
    ({"networkPolicy": {"metricsFrom": [{}]}}, "networkPolicy.metricsFrom.0"),
])
def test_wrong_values_are_refused_where_they_are(schema, values, change, where):
    def merged(base, extra):
        out = dict(base)
        for key, value in extra.items():
            out[key] = merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
        return out

    errors = _errors(schema, merged(values, change))
    assert errors and all(e.startswith(f"{where}:") for e in errors), errors


def test_the_s3_store_and_a_full_set_of_values_validate(schema, values):
    full = yaml.safe_load((CHART / "values.yaml").read_text())
    full["artifacts"] = {"uri": "s3://modelfleet/artifacts", "pvcRoot": "/mnt/pvc",
                         "s3": {"credentialsSecret": "modelfleet-s3", "jobSecret": "modelfleet-s3"}}
    full["operator"]["tritonServers"] = ["http://triton.serving.svc:8000"]
    full["operator"]["watchNamespaces"] = ["team-a", "team-b"]
    full["operator"]["extraEnv"] = [{"name": "AWS_REGION", "value": "eu-west-1"}]
    full["operator"]["tolerations"] = [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}]
    full["gateway"]["tls"]["secretName"] = "fleet-tls"
    full["gateway"]["service"]["port"] = 8443
    full["gateway"]["ingress"] |= {"enabled": True, "className": "nginx", "tlsSecretName": "fleet-ingress-tls"}
    full["agent"] |= {"enabled": True, "maintenanceWindow": "22:00-04:00", "gatewayUrl": "https://fleet.example.com"}
    full["agent"]["trustedKeys"]["caBundle"] = "ca.crt"
    full["monitoring"]["serviceMonitor"] |= {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}
    full["monitoring"]["prometheusRule"]["enabled"] = True
    full["monitoring"]["grafanaDashboard"]["enabled"] = True
    full["networkPolicy"] = {"enabled": True, "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
                             "gatewayFrom": []}
    assert _errors(schema, full) == []


# Keys whose children are Kubernetes' own fields, documented by the comment on the key itself.
_PASSTHROUGH = {"podSecurityContext", "securityContext", "capabilities", "seccompProfile", "requests", "limits",
                "deviceLabels", "labels", "nodeSelector"}


def test_every_value_in_values_yaml_is_commented():
    lines = (CHART / "values.yaml").read_text().splitlines()
    parents: list[tuple[int, str]] = []  # (indent, key) of the enclosing mappings
    uncommented = []
    for number, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z_][\w./-]*):", line)
        if not match:
            continue
        indent, key = len(match.group(1)), match.group(2)
        while parents and parents[-1][0] >= indent:
            parents.pop()
        previous = next((p for p in reversed(lines[:number]) if p.strip()), "")
        if not previous.strip().startswith("#") and not (parents and parents[-1][1] in _PASSTHROUGH):
            uncommented.append(f"{number + 1}: {line.strip()}")
        parents.append((indent, key))
    assert uncommented == []


# --- templates --------------------------------------------------------------------------------------------------


def _value_paths(values: dict, prefix: str = "") -> set[str]:
    paths = set()
    for key, value in values.items():
        paths.add(prefix + key)
        if isinstance(value, dict):
            paths |= _value_paths(value, f"{prefix}{key}.")
    return paths


def test_every_value_a_template_reads_exists(values):
    known = _value_paths(values)
    read = {(path.name, m) for path in TEMPLATES.iterdir()
            for m in re.findall(r"\.Values\.([A-Za-z0-9_.]+)", path.read_text())}
    assert read
    assert sorted(f"{name}: {m}" for name, m in read if m not in known) == []


def _define(name: str) -> str:
    helpers = (TEMPLATES / "_helpers.tpl").read_text()
    return re.search(r'\{\{- define "' + re.escape(name) + r'" -\}\}\n(.*?)\{\{- end -\}\}', helpers, re.S).group(1)


def test_component_labels_name_each_key_once():
    """componentLabels joins the common labels, the selector labels and the component: a key in two of them
    would be a duplicate mapping key, which helm refuses."""
    keys = [re.findall(r"^([\w./-]+):", _define(name), re.M) for name in ("modelfleet.labels", "modelfleet.selectorLabels")]
    keys.append(["app.kubernetes.io/component"])
    flat = [k for group in keys for k in group]
    assert len(flat) == len(set(flat)) and "app.kubernetes.io/name" in keys[1], keys


def test_template_actions_are_balanced():
    for path in TEMPLATES.iterdir():
        text = path.read_text()
        opened = len(re.findall(r"\{\{-?\s*(?:if|range|with|define)\b", text))
        closed = len(re.findall(r"\{\{-?\s*end\s*-?\}\}", text))
        assert opened == closed, path.name
        assert text.count("{{") == text.count("}}"), path.name


def test_containers_run_with_secure_defaults(values):
    for component in ("operator", "gateway", "agent"):
        pod, container = values[component]["podSecurityContext"], values[component]["securityContext"]
        assert pod["runAsNonRoot"] and pod["seccompProfile"] == {"type": "RuntimeDefault"}, component
        assert container == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                             "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}, component
        template = (TEMPLATES / f"{component}-{'daemonset' if component == 'agent' else 'deployment'}.yaml").read_text()
        assert f"toYaml .Values.{component}.securityContext" in template
        assert f"toYaml .Values.{component}.podSecurityContext" in template
    assert values["operator"]["resources"]["requests"]["cpu"] == "600m"
    assert (values["crds"], values["gateway"]["enabled"], values["agent"]["enabled"]) == (
        {"enabled": True, "keep": True}, True, False)
    assert not any(m["enabled"] for m in values["monitoring"].values())
