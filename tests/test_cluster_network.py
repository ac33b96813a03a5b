"""The test cluster's Service network (hack/cluster.sh): kube-proxy turns ClusterIPs into pod and host
endpoints, CoreDNS answers for cluster.local, and pods reach the API server as `kubernetes.default.svc`
(what an operator in a pod relies on). Pods run the local base image, restricted-compliant."""

import json

import pytest
from kubernetes import client

from conftest import wait_until

pytestmark = pytest.mark.cluster

# Only what the restricted Pod Security Standard demands (the test namespaces enforce it).
SECURITY = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
            "runAsUser": 65534, "runAsGroup": 65534, "seccompProfile": {"type": "RuntimeDefault"}}

# Resolves the API server's Service name, then asks it for /version without and with the pod's token,
# over TLS checked against the cluster CA; prints one JSON line.
API_PROBE = """
import json, socket, ssl, urllib.error, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
address = socket.getaddrinfo("kubernetes.default.svc.cluster.local", 443, type=socket.SOCK_STREAM)[0][4][0]
tls = ssl.create_default_context(cafile=f"{sa}/ca.crt")
def get(headers):
    request = urllib.request.Request("https://kubernetes.default.svc/version", headers=headers)
    try:
        with urllib.request.urlopen(request, context=tls, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as e:
        return e.code, None
anonymous = get({})
token = open(f"{sa}/token").read()
authenticated = get({"Authorization": f"Bearer {token}"})
print(json.dumps({"address": address, "anonymous": anonymous[0], "authenticated": authenticated[0],
                  "version": authenticated[1]}))
"""

SERVER = """
import http.server, socket
class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = socket.gethostname().encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.HTTPServer(("", 8080), Hello).serve_forever()
"""

# Asks the Service by name and by ClusterIP; retries while kube-proxy catches up with the new endpoint.
CLIENT = """
import json, socket, sys, time, urllib.request
name, cluster_ip = sys.argv[1], sys.argv[2]
deadline, answers = time.monotonic() + 60, {}
while time.monotonic() < deadline and len(answers) < 2:
    for key, url in (("byName", f"http://{name}/"), ("byClusterIP", f"http://{cluster_ip}/")):
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                answers[key] = response.read().decode()
        except OSError:
            time.sleep(0.5)
answers["resolved"] = socket.gethostbyname(name)
print(json.dumps(answers))
"""


def python_pod(name: str, image: str, script: str, *args: str, labels: dict | None = None,
               restart: str = "Never") -> dict:
    return {"metadata": {"name": name, "labels": labels or {}},
            "spec": {"restartPolicy": restart, "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "main", "image": image, "imagePullPolicy": "Never",
                                     "command": ["python3", "-c", script, *args], "securityContext": SECURITY}]}}


def finished_output(core: client.CoreV1Api, namespace: str, name: str, timeout: float = 120) -> dict:
    """The JSON line a pod printed, once it succeeded."""
    def phase():
        current = core.read_namespaced_pod(name, namespace).status.phase
        return current if current in ("Succeeded", "Failed") else None

    ended = wait_until(phase, timeout, f"pod {name} to finish")
    log = core.read_namespaced_pod_log(name, namespace, _preload_content=False).data.decode()  # raw: no JSON parsing
    assert ended == "Succeeded", log
    return json.loads(log.strip().splitlines()[-1])


def test_a_pod_resolves_the_api_servers_service_name_and_reaches_it_over_tls(kube, namespace):
    core = client.CoreV1Api(kube.api)
    core.create_namespaced_pod(namespace, python_pod("api-probe", kube.env["MODELFLEET_CLUSTER_BASE_IMAGE"], API_PROBE))
    seen = finished_output(core, namespace, "api-probe")
    assert seen["address"] == core.read_namespaced_service("kubernetes", "default").spec.cluster_ip == "10.96.0.1"
    assert seen["anonymous"] == 401  # anonymous access is off
    assert seen["authenticated"] == 200 and seen["version"]["gitVersion"].startswith("v1.")


def test_a_pod_reaches_another_through_a_cluster_ip_service_by_name(kube, namespace):
    core = client.CoreV1Api(kube.api)
    image = kube.env["MODELFLEET_CLUSTER_BASE_IMAGE"]
    core.create_namespaced_pod(namespace, python_pod("hello", image, SERVER, labels={"app": "hello"},
                                                     restart="Always"))
    service = core.create_namespaced_service(namespace, {
        "metadata": {"name": "hello"},
        "spec": {"selector": {"app": "hello"}, "ports": [{"port": 80, "targetPort": 8080}]}})
    cluster_ip = service.spec.cluster_ip
    core.create_namespaced_pod(namespace, python_pod("caller", image, CLIENT, f"hello.{namespace}.svc", cluster_ip))
    seen = finished_output(core, namespace, "caller")
    assert seen == {"byName": "hello", "byClusterIP": "hello", "resolved": cluster_ip}
    server = core.read_namespaced_pod("hello", namespace)
    assert server.status.pod_ip != cluster_ip and server.status.pod_ip.startswith("10.244.")
