"""The Helm chart (charts/modelfleet) through a real helm (hack/helm.sh builds it from its Go module): `helm lint
--strict` and `helm template` with the default values and with ci/full-values.yaml (every optional part on),
assertions on the rendered objects, and the values schema's refusals as helm prints them. The cluster tests
send the full rendering to the real API server (server-side dry run) and install, upgrade and uninstall the
chart on hack/cluster.sh's cluster with a digits CompressedModel going Ready under the chart's operator.

tests/test_chart_files.py checks the chart's files without helm (generated copies, schema, comments)."""

import json
import os
import subprocess
import uuid

import pytest
import yaml

from conftest import REPO, STORE_CLAIM, hostpath_claim, wait_until
from test_cluster_operator import claim, conditions, get, inputs, jobs, resource, wait_for  # noqa: F401 (fixtures)
from test_cluster_s3 import sole_operator  # noqa: F401 (a fixture: the session's operator stopped meanwhile)

CHART = REPO / "charts" / "modelfleet"
FULL_VALUES = CHART / "ci" / "full-values.yaml"
RELEASE, NAMESPACE = "modelfleet", "modelfleet-system"
POD_KINDS = ("Deployment", "DaemonSet")


@pytest.fixture(scope="session")
def helm() -> str:
    """The helm binary (built from the Go module proxy on first use, a few minutes; then cached)."""
    out = subprocess.run(["bash", str(REPO / "hack/helm.sh")], check=True, timeout=1800, stdout=subprocess.PIPE,
                         text=True).stdout
    return out.strip().splitlines()[-1]


def run_helm(helm: str, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([helm, *args], capture_output=True, text=True, env=env, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}{result.stdout}")
    return result


def template(helm: str, *flags: str, release: str = RELEASE, namespace: str = NAMESPACE) -> str:
    return run_helm(helm, "template", release, str(CHART), "--namespace", namespace, *flags).stdout


def objects(manifest: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(manifest) if doc]


def render(helm: str, *flags: str, **kwargs) -> list[dict]:
    return objects(template(helm, *flags, **kwargs))


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str, name: str) -> dict:
    [found] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def env_of(container: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


@pytest.fixture(scope="module")
def default_objects(helm) -> list[dict]:
    return render(helm)


@pytest.fixture(scope="module")
def full_objects(helm) -> list[dict]:
    return render(helm, "-f", str(FULL_VALUES))


# --- lint and render ----------------------------------------------------------------------------------------------


def test_helm_is_the_pinned_release_and_assumes_a_current_kubernetes(helm):
    version = run_helm(helm, "version", "--short").stdout.strip()
    pinned = next(line.split("=", 1)[1].split()[0] for line in (REPO / "hack/helm.sh").read_text().splitlines()
                  if line.startswith("VERSION="))
    assert version.startswith(f"{pinned}+g"), version
    # Without a cluster helm assumes the Kubernetes its build stamps (hack/helm.sh); an older one than the
    # chart's kubeVersion (>=1.29) is refused, which is what an unstamped helm (1.20) would do by default.
    assert run_helm(helm, "template", RELEASE, str(CHART)).stdout
    old = run_helm(helm, "template", RELEASE, str(CHART), "--kube-version", "1.28.0", check=False)
    assert old.returncode != 0 and "chart requires kubeVersion: >=1.29.0-0" in old.stderr, old.stderr


@pytest.mark.parametrize("values", [[], ["-f", str(FULL_VALUES)]], ids=["default", "full"])
def test_lint_strict_passes(helm, values):
    result = run_helm(helm, "lint", "--strict", str(CHART), *values, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


@pytest.mark.parametrize("which", ["default", "full"])
def test_every_object_is_unique_labelled_and_in_the_release_namespace(request, which):
    docs = request.getfixturevalue(f"{which}_objects")
    keys = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
    assert len(keys) == len(set(keys)), keys
    cluster_scoped = {"CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}
    for doc in docs:
        meta = doc["metadata"]
        labels = meta["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm" and labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/part-of"] == "modelfleet" and labels["app.kubernetes.io/component"]
        if which == "full":
            assert labels["team"] == "ml-platform", meta["name"]  # commonLabels
        assert ("namespace" in meta) == (doc["kind"] not in cluster_scoped), meta["name"]
        if "namespace" in meta:
            assert meta["namespace"] == NAMESPACE, meta["name"]


def test_default_values_install_the_operator_gateway_and_crds_only(default_objects):
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in default_objects)
    assert kinds == sorted([
        ("CustomResourceDefinition", "compressedmodels.modelfleet.io"),
        ("CustomResourceDefinition", "edgedevices.modelfleet.io"),
        ("ServiceAccount", "modelfleet-operator"), ("ClusterRole", "modelfleet-operator"),
        ("ClusterRoleBinding", "modelfleet-operator"), ("Service", "modelfleet-operator"),
        ("Deployment", "modelfleet-operator"),
        ("ServiceAccount", "modelfleet-gateway"), ("ClusterRole", "modelfleet-gateway"),
        ("ClusterRoleBinding", "modelfleet-gateway"), ("Service", "modelfleet-gateway"),
        ("Deployment", "modelfleet-gateway"),
    ])


def test_names_follow_the_release_unless_it_says_modelfleet(helm):
    names = {d["metadata"]["name"] for d in render(helm, "--set", "gateway.enabled=false", release="fleet")}
    assert "fleet-modelfleet-operator" in names and not any(n.startswith("modelfleet-") for n in names)
    names = {d["metadata"]["name"] for d in render(helm, "--set", "fullnameOverride=mf", release="fleet")}
    assert {"mf-operator", "mf-gateway"} <= names


# --- CRDs -------------------------------------------------------------------------------------------------------


def test_crds_are_the_generated_crds_and_kept_on_uninstall(default_objects):
    crds = {d["metadata"]["name"]: d for d in of_kind(default_objects, "CustomResourceDefinition")}
    for path in sorted((REPO / "crds").glob("*.yaml")):
        source = yaml.safe_load(path.read_text())
        rendered = crds[source["metadata"]["name"]]
        assert rendered["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert rendered["metadata"]["labels"]["app.kubernetes.io/component"] == "crds"
        assert rendered["spec"] == source["spec"]


def test_crds_lose_the_keep_annotation_with_crds_keep_false(helm):
    crds = of_kind(render(helm, "--set", "crds.keep=false"), "CustomResourceDefinition")
    assert len(crds) == 2 and all("annotations" not in d["metadata"] for d in crds)


def test_crds_enabled_false_renders_no_crd(helm):
    docs = render(helm, "--set", "crds.enabled=false")
    assert of_kind(docs, "CustomResourceDefinition") == []
    assert one(docs, "Deployment", "modelfleet-operator")


# --- the operator ---------------------------------------------------------------------------------------------


def test_operator_is_one_replica_recreated_with_probes_on_kopfs_port(helm, default_objects):
    for docs, port in ((default_objects, 8081), (render(helm, "--set", "operator.probesPort=9555"), 9555)):
        deployment = one(docs, "Deployment", "modelfleet-operator")
        spec = deployment["spec"]
        assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
        [container] = spec["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"probes": port, "metrics": 8080}
        assert container["args"][:3] == ["operator", "--liveness", f"http://0.0.0.0:{port}/healthz"]
        for probe in ("livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"] == {"path": "/healthz", "port": "probes"}, probe


def test_operator_environment_and_store_mount_with_default_values(default_objects):
    pod = one(default_objects, "Deployment", "modelfleet-operator")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == "modelfleet/operator:dev"
    assert env_of(container) == {
        "MODELFLEET_WORKER_IMAGE": "modelfleet/worker:dev", "MODELFLEET_TORCH_WORKER_IMAGE": "modelfleet/worker-torch:dev",
        "MODELFLEET_TFLITE_WORKER_IMAGE": "modelfleet/worker-tflite:dev", "MODELFLEET_IMAGE_PULL_POLICY": "IfNotPresent",
        "MODELFLEET_ARTIFACTS": "pvc://modelfleet/results", "MODELFLEET_PVC_ROOT": "/mnt/pvc",
        "MODELFLEET_METRICS_PORT": "8080", "MODELFLEET_RESYNC_MINUTES": "10", "MODELFLEET_REQUEUE_BASE_SECONDS": "1",
        "MODELFLEET_REQUEUE_MAX_SECONDS": "300", "MODELFLEET_UNSCHEDULABLE_GRACE_SECONDS": "20",
        "MODELFLEET_SLO_WINDOW_SCALE": "1"}
    assert {"name": "artifacts", "mountPath": "/mnt/pvc/modelfleet"} in container["volumeMounts"]
    assert {"name": "artifacts", "persistentVolumeClaim": {"claimName": "modelfleet"}} in pod["volumes"]
    assert pod["serviceAccountName"] == "modelfleet-operator"


def test_full_values_reach_the_operator(full_objects):
    pod = one(full_objects, "Deployment", "modelfleet-operator")["spec"]["template"]
    [container] = pod["spec"]["containers"]
    digest = "sha256:" + "0123456789abcdef" * 4
    assert container["image"] == f"registry.example.com/modelfleet/operator@{digest}"
    assert container["imagePullPolicy"] == "Always"
    assert container["args"] == ["operator", "--liveness", "http://0.0.0.0:8081/healthz",
                                 "--namespace", "team-a", "--namespace", "team-b", "--verbose"]
    env = env_of(container)
    assert env["MODELFLEET_WORKER_IMAGE"] == "registry.example.com/modelfleet/worker@sha256:" + "fedcba9876543210" * 4
    assert env["MODELFLEET_TORCH_WORKER_IMAGE"] == "registry.example.com/modelfleet/worker-torch:0.1.0"
    assert env["MODELFLEET_TFLITE_WORKER_IMAGE"] == "registry.example.com/modelfleet/worker-tflite:0.1.0"
    assert env["MODELFLEET_WORKER_SERVICE_ACCOUNT"] == "modelfleet-worker"
    assert env["MODELFLEET_ARTIFACTS"] == "s3://modelfleet/artifacts"
    assert env["MODELFLEET_ARTIFACTS_SECRET"] == "modelfleet-s3"
    assert env["MODELFLEET_TRITON_SERVERS"] == "http://triton.serving.svc:8000,http://triton-b.serving.svc:8000"
    assert env["MODELFLEET_RESYNC_MINUTES"] == "5"
    assert env["AWS_REGION"] == "eu-west-1" and env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert container["envFrom"] == [{"secretRef": {"name": "modelfleet-s3"}}]
    # s3://: no claim to mount.
    assert [v["name"] for v in pod["spec"]["volumes"]] == ["tmp"]
    assert pod["metadata"]["annotations"] == {"example.com/owner": "ml-platform"}
    assert pod["metadata"]["labels"]["example.com/tier"] == "control"
    assert pod["spec"]["tolerations"][0]["key"] == "dedicated"
    assert pod["spec"]["priorityClassName"] == "system-cluster-critical"
    assert "nodeAffinity" in pod["spec"]["affinity"]
    account = one(full_objects, "ServiceAccount", "modelfleet-operator")
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith("role/modelfleet-operator")


@pytest.mark.parametrize("component", ["operator", "gateway"])
def test_cluster_roles_grant_exactly_deploys_rules(default_objects, component):
    deployed = next(d for d in yaml.safe_load_all((REPO / f"deploy/{component}-rbac.yaml").read_text())
                    if d and d["kind"] == "ClusterRole")
    role = one(default_objects, "ClusterRole", f"modelfleet-{component}")
    assert role["rules"] == deployed["rules"]
    binding = one(default_objects, "ClusterRoleBinding", f"modelfleet-{component}")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": f"modelfleet-{component}"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": f"modelfleet-{component}",
                                    "namespace": NAMESPACE}]


def test_rbac_create_false_renders_no_roles(helm):
    docs = render(helm, "--set", "operator.rbac.create=false", "--set", "gateway.rbac.create=false")
    assert of_kind(docs, "ClusterRole") == of_kind(docs, "ClusterRoleBinding") == []


# --- every pod: restricted ----------------------------------------------------------------------------------------


def _assert_restricted(pod: dict, name: str, root_init: set[str] = frozenset()) -> None:
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True and context["seccompProfile"] == {"type": "RuntimeDefault"}, name
    for container in pod.get("initContainers", []) + pod["containers"]:
        where = f"{name}/{container['name']}"
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, where
        assert sc["capabilities"]["drop"] == ["ALL"], where
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert not sc.get("privileged"), where
        if container["name"] in root_init:
            # The agent's state-dir init container: root, only to chown a hostPath directory.
            assert sc["runAsUser"] == 0 and sc["capabilities"]["add"] == ["CHOWN", "FOWNER"], where
        else:
            assert sc["runAsNonRoot"] is True and "add" not in sc["capabilities"], where


@pytest.mark.parametrize("which", ["default", "full"])
def test_every_pod_of_the_chart_runs_restricted(request, which):
    docs = request.getfixturevalue(f"{which}_objects")
    workloads = [d for d in docs if d["kind"] in POD_KINDS]
    assert len(workloads) == (2 if which == "default" else 3)
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        _assert_restricted(pod, workload["metadata"]["name"], root_init={"state-dir"})
        assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]


def test_the_agent_without_fix_permissions_has_no_root_container(helm):
    docs = render(helm, "--set", "agent.enabled=true", "--set", "agent.stateDir.fixPermissions=false")
    pod = one(docs, "DaemonSet", "modelfleet-agent")["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    _assert_restricted(pod, "modelfleet-agent")


# --- the agent, the gateway, monitoring ---------------------------------------------------------------------------


def test_agent_daemonset_is_off_by_default(default_objects):
    assert of_kind(default_objects, "DaemonSet") == []
    assert not [d for d in default_objects if d["metadata"]["labels"]["app.kubernetes.io/component"] == "agent"]


@pytest.mark.parametrize("flags, url", [
    ([], "http://modelfleet-gateway.modelfleet-system.svc:80"),
    (["--set", "gateway.tls.secretName=fleet-tls"], "https://modelfleet-gateway.modelfleet-system.svc:443"),
    (["--set", "gateway.service.port=8443"], "http://modelfleet-gateway.modelfleet-system.svc:8443"),
])
def test_the_agent_reaches_this_releases_gateway_by_default(helm, flags, url):
    docs = render(helm, "--set", "agent.enabled=true", *flags)
    [container] = one(docs, "DaemonSet", "modelfleet-agent")["spec"]["template"]["spec"]["containers"]
    assert container["args"][:3] == ["agent", f"--gateway={url}", "--dir=/var/lib/modelfleet"]
    assert "--label=modelfleet.io/class=k8s-node" in container["args"]
    service = one(docs, "Service", "modelfleet-gateway")
    assert url.endswith(f":{service['spec']['ports'][0]['port']}")


def test_the_agent_without_a_gateway_needs_a_url(helm):
    result = run_helm(helm, "template", RELEASE, str(CHART), "--set", "agent.enabled=true",
                      "--set", "gateway.enabled=false", check=False)
    assert result.returncode != 0
    assert "agent.enabled needs agent.gatewayUrl when gateway.enabled is false" in result.stderr


def test_full_values_render_the_agent_gateway_and_network_objects(full_objects):
    agent = one(full_objects, "DaemonSet", "modelfleet-agent")["spec"]["template"]["spec"]
    [container] = agent["containers"]
    digest = "sha256:" + "00112233445566778899aabbccddeeff" * 2
    assert container["image"] == f"registry.example.com/modelfleet/agent@{digest}"
    assert {"--namespace=fleet", "--maintenance-window=22:00-04:00", "--ca-file=/etc/modelfleet/trusted-keys/ca.crt",
            "--label=example.com/site=plant-1"} <= set(container["args"])
    assert agent["automountServiceAccountToken"] is False
    gateway = one(full_objects, "Deployment", "modelfleet-gateway")
    assert gateway["spec"]["replicas"] == 2
    [gw] = gateway["spec"]["template"]["spec"]["containers"]
    assert {"--tls-cert=/var/run/modelfleet/tls/tls.crt", "--artifacts=s3://modelfleet/artifacts"} <= set(gw["args"])
    service = one(full_objects, "Service", "modelfleet-gateway")
    assert service["spec"]["type"] == "LoadBalancer"
    assert {p["port"] for p in service["spec"]["ports"]} >= {8443}
    [ingress] = of_kind(full_objects, "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"hosts": ["fleet.example.com"], "secretName": "fleet-ingress-tls"}]
    policies = {d["metadata"]["name"]: d for d in of_kind(full_objects, "NetworkPolicy")}
    assert set(policies) == {"modelfleet-operator", "modelfleet-gateway"}
    for policy in policies.values():
        assert policy["spec"]["policyTypes"] == ["Ingress"]
    monitors = {d["metadata"]["name"]: d for d in of_kind(full_objects, "ServiceMonitor")}
    assert set(monitors) == {"modelfleet-operator", "modelfleet-gateway"}
    for monitor in monitors.values():
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert monitor["spec"]["endpoints"][0]["interval"] == "15s"


def test_the_prometheus_rule_is_the_rule_file_and_drops_the_gateway_group_without_it(helm, full_objects):
    source = yaml.safe_load((REPO / "deploy/prometheus/modelfleet-rules.groups.yaml").read_text())["groups"]
    [rule] = of_kind(full_objects, "PrometheusRule")
    assert rule["spec"]["groups"] == source
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    docs = render(helm, "--set", "monitoring.prometheusRule.enabled=true", "--set", "gateway.enabled=false")
    [rule] = of_kind(docs, "PrometheusRule")
    assert [g["name"] for g in rule["spec"]["groups"]] == [
        g["name"] for g in source if g["name"] != "modelfleet-edge-gateway"]
    assert "{{ $labels.namespace }}" in json.dumps(rule["spec"])  # .Files.Get leaves Prometheus' templates alone


def test_the_dashboard_configmap_holds_the_dashboard_byte_for_byte(full_objects):
    [dashboard] = [d for d in of_kind(full_objects, "ConfigMap") if d["metadata"]["name"] == "modelfleet-dashboard"]
    text = (REPO / "deploy/grafana/modelfleet-dashboard.json").read_text()
    assert dashboard["data"]["modelfleet-dashboard.json"] == text.rstrip("\n")
    assert json.loads(dashboard["data"]["modelfleet-dashboard.json"]) == json.loads(text)
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "modelfleet"}


# --- the schema, as helm applies it ----------------------------------------------------------------------------


@pytest.mark.parametrize("flags, expected", [
    (["--set", "replicaCount=2"], ["additional properties", "replicaCount"]),
    (["--set", "operator.image.tga=v1"], ["/operator/image", "tga"]),
    (["--set", "crds.enabled=yes"], ["/crds/enabled", "boolean"]),
    (["--set", "operator.metricsPort=70000"], ["/operator/metricsPort", "maximum", "want 65,535"]),
    (["--set", "artifacts.uri=file:///data"], ["/artifacts/uri"]),
    (["--set-json", 'gateway.service.port="443"'], ["/gateway/service/port"]),
])
def test_wrong_values_are_refused_with_where_and_why(helm, flags, expected):
    result = run_helm(helm, "template", RELEASE, str(CHART), *flags, check=False)
    assert result.returncode != 0 and result.stdout == ""
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr


# --- on the cluster -------------------------------------------------------------------------------------------


@pytest.mark.cluster
def test_full_rendering_is_accepted_by_the_api_server(kube, helm, namespace, monitoring_crds):
    """Every object of the full values, with strict field validation, through server-side apply's dry run:
    unknown fields, wrong types or invalid names would be refused here even when YAML parses."""
    manifest = template(helm, "-f", str(FULL_VALUES), release="mf-dry-run", namespace=namespace)
    kinds = sorted({d["kind"] for d in objects(manifest)})
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "ConfigMap", "CustomResourceDefinition", "DaemonSet",
                     "Deployment", "Ingress", "NetworkPolicy", "PrometheusRule", "Service", "ServiceAccount",
                     "ServiceMonitor"]
    result = kube.kubectl("apply", "--server-side", "--dry-run=server", "--force-conflicts",
                          "--field-manager=modelfleet-chart-test", "--validate=strict", "-f", "-",
                          input=manifest, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(server dry run)") == len(objects(manifest)), result.stdout


# --- install, upgrade, uninstall ----------------------------------------------------------------------------------


@pytest.fixture
def release_namespace(kube, artifact_root):
    """The release's namespace (restricted Pod Security Standard) with the pvc:// store's claim: a hostPath
    volume on the directory behind the test namespaces' claims, where the worker Jobs write."""
    from kubernetes import client

    core = client.CoreV1Api(kube.api)
    name = f"mf-helm-{uuid.uuid4().hex[:5]}"
    core.create_namespace({"metadata": {"name": name, "labels": {
        "modelfleet.io/test": "true", "pod-security.kubernetes.io/enforce": "restricted"}}})
    volume = hostpath_claim(kube, name, artifact_root)
    yield name
    core.delete_namespace(name)
    core.delete_persistent_volume(volume)


class Release:
    """One helm release on the test cluster."""

    def __init__(self, kube, helm: str, name: str, namespace: str):
        from kubernetes import client

        self.kube, self.bin, self.name, self.namespace = kube, helm, name, namespace
        self.env = {**os.environ, "KUBECONFIG": kube.kubeconfig, "PATH": kube.env["PATH"]}
        self.core = client.CoreV1Api(kube.api)

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run_helm(self.bin, *args, "--namespace", self.namespace, check=check, env=self.env)

    def exists(self) -> bool:
        return self.helm("status", self.name, check=False).returncode == 0

    def operator_pods(self) -> list:
        selector = f"app.kubernetes.io/instance={self.name},app.kubernetes.io/component=operator"
        return self.core.list_namespaced_pod(self.namespace, label_selector=selector).items

    def ready_operator_pod(self, other_than: str | None = None, timeout: float = 180):
        """The operator's one pod, Ready, once it is the only one (Recreate) and is not `other_than`."""
        def only_ready_pod():
            pods = self.operator_pods()
            if len(pods) != 1 or pods[0].metadata.name == other_than or pods[0].metadata.deletion_timestamp:
                return None
            ready = any(c.type == "Ready" and c.status == "True" for c in pods[0].status.conditions or [])
            return pods[0] if ready else None

        return wait_until(only_ready_pod, timeout, f"a Ready operator pod of release {self.name}")

    def logs(self, pod: str) -> str:
        return self.core.read_namespaced_pod_log(pod, self.namespace, container="operator",
                                                 _preload_content=False).data.decode()

    def uninstall(self) -> str:
        """helm uninstall, unless the release's CRDs would go with it (they hold every test's resources):
        then the release is dropped from helm's records and its other objects deleted by hand."""
        manifest = objects(self.helm("get", "manifest", self.name).stdout)
        if all(d["metadata"].get("annotations", {}).get("helm.sh/resource-policy") == "keep"
               for d in of_kind(manifest, "CustomResourceDefinition")):
            return self.helm("uninstall", self.name, "--wait", "--timeout", "3m").stdout
        self.kube.kubectl("delete", "secret", "-n", self.namespace, "-l", f"owner=helm,name={self.name}")
        self.kube.kubectl("delete", "clusterrole,clusterrolebinding", "-l", f"app.kubernetes.io/instance={self.name}")
        raise AssertionError(f"release {self.name} would delete the CRDs on uninstall: dropped without uninstalling")


# The conditions an operator restart must leave alone (progress conditions such as Reconciling may move).
_SETTLED = ("SpecValid", "Compressed", "SLOMet", "Bundled", "Ready")


def _model_record(kube, namespace: str) -> dict:
    body = get(kube, namespace, "digits")
    status = body["status"]
    return {"uid": body["metadata"]["uid"], "artifacts": status["artifacts"], "evaluation": status["evaluation"],
            "conditions": {t: (c["status"], c["reason"], c["lastTransitionTime"])
                           for t, c in conditions(body).items() if t in _SETTLED},
            "jobs": sorted((j.metadata.name, j.metadata.uid) for j in jobs(kube, namespace))}


@pytest.mark.cluster
@pytest.mark.slow
def test_helm_install_runs_digits_an_upgrade_rolls_the_operator_only_and_uninstall_keeps_crds_and_models(
        kube, helm, sole_operator, release_namespace, namespace, claim, inputs, operator_image, worker_images,
        tmp_path):
    """The chart as users install it, as the only operator: its pod becomes Ready under the restricted Pod
    Security Standard; the digits example goes Ready from worker Jobs; `helm upgrade` with a changed value
    replaces the operator pod, which resumes without running any Job again; `helm uninstall` removes the
    operator but keeps the CRDs (helm.sh/resource-policy: keep) and with them the CompressedModel."""
    from kubernetes import client

    def image(tag: str) -> dict:
        repository, _, version = tag.rpartition(":")
        return {"repository": repository, "tag": version}

    values = {
        "artifacts": {"uri": f"pvc://{STORE_CLAIM}/results"},
        "operator": {"image": {**image(operator_image), "pullPolicy": "Never"},
                     "worker": {"image": image(worker_images["MODELFLEET_WORKER_IMAGE"]),
                                "torchImage": image(worker_images["MODELFLEET_TORCH_WORKER_IMAGE"]),
                                "tfliteImage": image(worker_images["MODELFLEET_TFLITE_WORKER_IMAGE"]),
                                "pullPolicy": "Never"},
                     "watchNamespaces": [namespace]},
        "gateway": {"enabled": False},  # it needs signing keys; tests/test_cluster_fleet.py runs it
    }
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    release = Release(kube, helm, "mf-helm", release_namespace)
    chart = [str(CHART), "-f", str(tmp_path / "values.yaml")]
    try:
        # --take-ownership: the CRDs exist already (hack/cluster.sh applies crds/); the release adopts them.
        installed = release.helm("install", release.name, *chart, "--take-ownership", "--wait", "--timeout", "5m")
        # NOTES.txt: where the operator runs, what the store needs, the next command
        notes = installed.stdout[installed.stdout.index("NOTES:"):]
        assert f"kubectl -n {release.namespace} get deploy,pods -l app.kubernetes.io/instance={release.name}," in notes
        assert f"the claim {STORE_CLAIM} must exist in\n{release.namespace} and in every namespace" in notes
        assert "kubectl apply -n models -f examples/gitops/base/compressedmodel.yaml" in notes
        pod = release.ready_operator_pod()
        [container] = pod.spec.containers
        assert container.image == operator_image
        env = {e.name: e.value for e in container.env}
        assert worker_images.items() <= env.items()  # digits, a torch source, compresses in the torch image

        model = resource(inputs)
        applied = kube.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(model))
        assert "compressedmodel.modelfleet.io/digits created" in applied.stdout
        wait_for(kube, namespace, "digits", "Ready", "True")
        wait_for(kube, namespace, "digits", "Bundled", "False", timeout=300)  # no signing Secret: the last Job ran
        before = _model_record(kube, namespace)
        assert sorted(j.metadata.labels["modelfleet.io/stage"] for j in jobs(kube, namespace)) == ["bundle", "compress"]
        assert f"reconciled {namespace}/digits " in release.logs(pod.metadata.name)

        release.helm("upgrade", release.name, *chart, "--set", "operator.resyncMinutes=7", "--wait", "--timeout", "5m")
        new_pod = release.ready_operator_pod(other_than=pod.metadata.name)
        assert {e.name: e.value for e in new_pod.spec.containers[0].env}["MODELFLEET_RESYNC_MINUTES"] == "7"
        wait_until(lambda: f"reconciled {namespace}/digits " in release.logs(new_pod.metadata.name), 120,
                   f"the new operator pod {new_pod.metadata.name} to resume digits")
        assert _model_record(kube, namespace) == before  # same artifacts, conditions and Jobs: nothing ran again
        history = release.helm("history", release.name, "-o", "json").stdout
        assert [r["status"] for r in json.loads(history)] == ["superseded", "deployed"]

        out = release.uninstall()
        assert "These resources were kept due to the resource policy" in out, out
        for crd in ("compressedmodels.modelfleet.io", "edgedevices.modelfleet.io"):
            assert f"[CustomResourceDefinition] {crd}" in out, out
            found = client.ApiextensionsV1Api(kube.api).read_custom_resource_definition(crd)
            assert not found.metadata.deletion_timestamp
        assert not release.exists()
        wait_until(lambda: not release.operator_pods(), 120, "the operator pod to go")
        assert client.AppsV1Api(kube.api).list_namespaced_deployment(release_namespace).items == []
        assert kube.kubectl("get", "clusterrole", "mf-helm-modelfleet-operator", check=False).returncode != 0
        kept = get(kube, namespace, "digits")
        assert kept["metadata"]["uid"] == before["uid"] and not kept["metadata"].get("deletionTimestamp")
        assert _model_record(kube, namespace) == before
    finally:
        if release.exists():
            release.uninstall()
        # No operator is left to release the model's finalizer: drop it, so the namespace can go.
        kube.kubectl("patch", "compressedmodels.modelfleet.io", "digits", "-n", namespace, "--type=merge",
                     "-p", '{"metadata": {"finalizers": null}}', check=False)
        kube.kubectl("delete", "compressedmodels.modelfleet.io", "digits", "-n", namespace, "--ignore-not-found",
                     "--wait=false", check=False)
        # The kept CRDs as hack/cluster.sh applied them: without the release's ownership and labels.
        crds = ["crd/compressedmodels.modelfleet.io", "crd/edgedevices.modelfleet.io"]
        kube.kubectl("annotate", *crds, "meta.helm.sh/release-name-", "meta.helm.sh/release-namespace-",
                     "helm.sh/resource-policy-", check=False)
        kube.kubectl("label", *crds, "helm.sh/chart-", *(f"app.kubernetes.io/{key}-" for key in (
            "version", "managed-by", "part-of", "name", "instance", "component")), check=False)
