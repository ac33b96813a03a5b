"""The edge fleet end to end on the real test cluster: the operator compresses the digits model, a bundle Job
signs an ncnn and a TFLite bundle, and a real fleet gateway (`modelfleet gateway`, Kubernetes backend) takes
them to 20 real device agents (`modelfleet agent`, each its own directory, ncnn and LiteRT runtimes) in two
device classes, through a canary and waves; then a version whose on-device latency breaches its gate halts
after the canary and the canary goes back to the previous bundle.

The gateway and the agents run as processes on this machine (loopback), as a fleet outside the cluster does.
"""

import base64
import copy
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes import client

from conftest import REPO, deep_update, free_port, wait_until
from test_cluster_operator import FAST, claim, inputs, resource  # noqa: F401 - claim and inputs are fixtures

from modelfleet import signing

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

GROUP, VERSION = "modelfleet.io", "v1alpha1"
CLASS = "modelfleet.io/class"
DEVICES = 20  # ten phones (TFLite), ten boards (ncnn)
ROLLOUT = {"canary": {"count": 1}, "waves": [50, 100], "bakeSeconds": 3, "reportTimeoutSeconds": 120}
EDGE = {"targets": {"edge": [
    {"name": "boards", "runtime": "ncnn", "precision": "fp32", "deviceSelector": {CLASS: "arm-board"},
     "rollout": ROLLOUT},
    {"name": "phones", "runtime": "tflite", "precision": "fp32", "deviceSelector": {CLASS: "phone"},
     "rollout": ROLLOUT},
]}}


class Process:
    def __init__(self, command: list[str], log: Path, env: dict | None = None):
        self.log = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                            env={**os.environ, **(env or {})})

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def write_key(directory: Path, name: str):
    key = signing.generate_private_key()
    (directory / f"{name}.pem").write_bytes(signing.private_key_pem(key))
    (directory / f"{name}.pub").write_bytes(signing.public_key_pem(key))
    return key


def gateway_kubeconfig(kube, path: Path) -> Path:
    """A kubeconfig for the gateway's own ServiceAccount (deploy/gateway-rbac.yaml and nothing else), so the
    test proves that RBAC is enough."""
    import yaml

    kube.kubectl("apply", "-f", str(REPO / "deploy/gateway-rbac.yaml"))
    token = kube.kubectl("create", "token", "modelfleet-gateway", "-n", "modelfleet-system",
                         "--duration", "2h").stdout.strip()
    admin = yaml.safe_load(Path(kube.kubeconfig).read_text())
    admin["users"] = [{"name": "modelfleet-gateway", "user": {"token": token}}]
    for context in admin["contexts"]:
        context["context"]["user"] = "modelfleet-gateway"
    path.write_text(yaml.safe_dump(admin))
    return path


def model_status(kube, namespace: str, name: str = "digits") -> dict:
    body = client.CustomObjectsApi(kube.api).get_namespaced_custom_object(GROUP, VERSION, namespace,
                                                                          "compressedmodels", name)
    return body.get("status") or {}


def condition(status: dict, kind: str) -> dict:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def devices(kube, namespace: str) -> dict[str, dict]:
    items = client.CustomObjectsApi(kube.api).list_namespaced_custom_object(GROUP, VERSION, namespace,
                                                                            "edgedevices")["items"]
    return {d["metadata"]["name"]: d for d in items}


def installed(device: dict, target: str) -> int | None:
    for entry in (device.get("status") or {}).get("targets", []):
        if entry["target"] == target and entry.get("installed") and entry.get("health") == "Healthy":
            return entry["installed"]["version"]
    return None


@pytest.fixture
def fleet(kube, namespace, claim, operator, artifact_root, tmp_path):
    """Secrets in the namespace, a gateway on loopback and 20 enrolled agents."""
    core = client.CoreV1Api(kube.api)
    bundle_key = write_key(tmp_path, "bundle")
    write_key(tmp_path, "gateway")
    token = secrets.token_urlsafe(24)
    (tmp_path / "token").write_text(token)
    core.create_namespaced_secret(namespace, {"metadata": {"name": "modelfleet-bundle-signing"},
                                              "data": {"signing-key.pem": base64.b64encode(
                                                  signing.private_key_pem(bundle_key)).decode()}})
    core.create_namespaced_secret(namespace, {"metadata": {"name": "modelfleet-bootstrap"},
                                              "stringData": {"token": token}})
    port, metrics_port = free_port(), free_port()
    gateway = Process([sys.executable, "-m", "modelfleet", "gateway", "--host", "127.0.0.1", "--port", str(port),
                       "--metrics-port", str(metrics_port), "--backend", "kubernetes",
                       "--artifacts", f"file://{artifact_root}/modelfleet/results",
                       "--signing-key", str(tmp_path / "gateway.pem"), "--bundle-keys", str(tmp_path / "bundle.pub"),
                       "--state-period", "60", "--heartbeat", "5"],
                      tmp_path / "gateway.log",
                      env={"KUBECONFIG": str(gateway_kubeconfig(kube, tmp_path / "gateway.kubeconfig"))})
    url = f"http://127.0.0.1:{port}"
    agents = []
    try:
        wait_until(lambda: _healthy(url), 60, "the gateway to answer /healthz")
        for i in range(DEVICES):
            kind = "phone" if i % 2 == 0 else "arm-board"
            directory = tmp_path / f"device-{i:02d}"
            agents.append(Process([
                sys.executable, "-m", "modelfleet", "agent", "--gateway", url, "--dir", str(directory),
                "--namespace", namespace, "--device", f"{kind}-{i:02d}", "--label", f"{CLASS}={kind}",
                "--bootstrap-token-file", str(tmp_path / "token"), "--state-keys", str(tmp_path / "gateway.pub"),
                "--bundle-keys", str(tmp_path / "bundle.pub"), "--poll-seconds", "2"],
                tmp_path / f"agent-{i:02d}.log"))
        wait_until(lambda: len(devices(kube, namespace)) == DEVICES, 120, f"{DEVICES} EdgeDevices")
        yield {"url": url, "dir": tmp_path, "gateway": gateway, "agents": agents}
    finally:
        for process in [*agents, gateway]:
            process.stop()


def _healthy(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def test_bundles_roll_out_to_the_fleet_and_a_latency_breach_rolls_the_canary_back(kube, namespace, inputs, fleet):
    api = client.CustomObjectsApi(kube.api)
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, "compressedmodels",
                                        resource(inputs, changes=deep_update(copy.deepcopy(FAST), EDGE)))

    def rolled_out():
        status = model_status(kube, namespace)
        return status if condition(status, "RolledOut").get("status") == "True" else None

    try:
        status = wait_until(rolled_out, 1200, "RolledOut=True", interval=2)
    except AssertionError:
        print(model_status(kube, namespace), (fleet["dir"] / "gateway.log").read_text()[-3000:])
        raise
    assert condition(status, "Bundled")["status"] == "True"
    assert {(r["target"], r["version"], r["completed"], r["desired"], r["updated"], r["healthy"])
            for r in status["rollouts"]} == {("boards", 1, True, 10, 10, 10), ("phones", 1, True, 10, 10, 10)}
    fleet_view = devices(kube, namespace)
    assert {name: installed(d, "phones" if name.startswith("phone") else "boards")
            for name, d in fleet_view.items()} == {name: 1 for name in fleet_view}
    for i in range(DEVICES):  # the active model on disk is the one reported
        current = fleet["dir"] / f"device-{i:02d}" / "models" / "digits"
        assert any(p.name == "current" and p.resolve().name == "1" for p in current.rglob("current"))

    # Version 2 (a new compress result) with a latency gate no phone can meet: the phones' canary installs it,
    # measures its own p95 over the gate, and the rollout halts and sends the canary back to version 1.
    slow_phones = copy.deepcopy(EDGE)
    slow_phones["targets"]["edge"][1]["rollout"] = ROLLOUT | {"gates": {"maxP95Ms": 0.0001}}
    patch = deep_update(copy.deepcopy(FAST), slow_phones)
    patch["benchmark"]["runs"] = FAST["benchmark"]["runs"] + 1  # another compress result: version 2
    api.patch_namespaced_custom_object(GROUP, VERSION, namespace, "compressedmodels", "digits", {"spec": patch})

    def halted():
        status = model_status(kube, namespace)
        phones = next((r for r in status.get("rollouts", []) if r["target"] == "phones"), {})
        return status if phones.get("version") == 2 and phones.get("halted") else None

    status = wait_until(halted, 1200, "the phones' rollout of version 2 to halt", interval=2)
    phones = next(r for r in status["rollouts"] if r["target"] == "phones")
    assert (phones["halted"], phones["rolledBack"], phones["currentWave"], phones["previousVersion"]) == (
        "LatencyGate", True, 0, 1)
    halted_condition = condition(status, "RolloutHalted")
    assert (halted_condition["status"], halted_condition["reason"]) == ("True", "LatencyGate")

    def phones_back_on_one():
        view = devices(kube, namespace)
        versions = {name: installed(d, "phones") for name, d in view.items() if name.startswith("phone")}
        return versions if set(versions.values()) == {1} else None

    wait_until(phones_back_on_one, 300, "every phone on version 1 again", interval=2)
    boards = next(r for r in model_status(kube, namespace)["rollouts"] if r["target"] == "boards")
    assert boards["version"] == 2 and not boards.get("halted")
