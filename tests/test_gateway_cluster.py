"""The gateway's Kubernetes backend on the real test cluster: enrolment creates the EdgeDevice with the
credential's hash, reports reach its status (the `kubectl get edgedevices` columns), watches bring other
writers' changes in, and a restarted gateway rebuilds devices and credentials from the EdgeDevices."""

import base64
import json

import pytest
import requests

from gateway_world import NOW, World, bearer, report, serve, until
from modelfleet.fleet.backend import KubernetesBackend
from modelfleet.fleet.gateway import BOOTSTRAP_KEY, BOOTSTRAP_SECRET
from modelfleet.fleet.state import CREDENTIAL_ANNOTATION
from modelfleet.k8s.client import Cluster

pytestmark = [pytest.mark.cluster]
CRD = "crds/edgedevices.modelfleet.io.yaml"


@pytest.fixture
def world(kube, namespace, tmp_path):
    from kubernetes import client

    kube.kubectl("apply", "--server-side", "-f", CRD)
    kube.kubectl("wait", "--for=condition=Established", "crd/edgedevices.modelfleet.io", "--timeout=60s")
    client.CoreV1Api(kube.api).create_namespaced_secret(namespace, {
        "metadata": {"name": BOOTSTRAP_SECRET}, "data": {BOOTSTRAP_KEY: base64.b64encode(b"cluster-token").decode()}})
    world = World(tmp_path / "store")
    world.api = KubernetesBackend(Cluster(kube.api))
    return world


def _enroll(url, namespace, device):
    response = requests.post(f"{url}/v1/enroll", headers=bearer("cluster-token"), timeout=30, json={
        "namespace": namespace, "device": device, "labels": {"modelfleet.io/class": "phone"}, "agentVersion": "0.1.0"})
    assert response.status_code == 201, response.text
    return response.json()["credential"]


def _edgedevice(kube, namespace, name) -> dict:
    return json.loads(kube.kubectl("get", "edgedevice", name, "-n", namespace, "-o", "json").stdout)


def test_enrol_report_and_restart_against_the_api_server(kube, namespace, world):
    with serve(world.gateway(clock=lambda: NOW)) as running:
        secret = _enroll(running.url, namespace, "pi-1")
        stored = _edgedevice(kube, namespace, "pi-1")
        assert CREDENTIAL_ANNOTATION in stored["metadata"]["annotations"]
        again = requests.post(f"{running.url}/v1/enroll", headers=bearer("cluster-token"), timeout=30, json={
            "namespace": namespace, "device": "pi-1", "agentVersion": "0.1.0"})
        assert again.status_code == 409

        url = f"{running.url}/v1/devices/{namespace}/pi-1"
        assert requests.post(f"{url}/report", json=report(2), headers=bearer(secret), timeout=30).status_code == 204
        status = until(lambda: _edgedevice(kube, namespace, "pi-1").get("status"), what="the status write")
        assert (status["installed"], status["health"]) == ("digits/phones=2", "Healthy")
        table = kube.kubectl("get", "edgedevices", "-n", namespace).stdout
        assert "pi-1" in table and "digits/phones=2" in table

        # Another writer (a second replica) changes the labels: the watch brings it in.
        kube.kubectl("label", "edgedevice", "pi-1", "-n", namespace, "modelfleet.io/class=tablet", "--overwrite")
        until(lambda: running.gateway.state.devices[(namespace, "pi-1")].labels.get("modelfleet.io/class") == "tablet",
              what="the label change to reach the gateway")

    with serve(world.gateway(clock=lambda: NOW)) as restarted:
        device = restarted.gateway.state.devices[(namespace, "pi-1")]
        assert device.status.installed == "digits/phones=2"
        response = requests.get(f"{restarted.url}/v1/devices/{namespace}/pi-1/desired-state",
                                headers=bearer(secret), timeout=30)
        assert response.status_code == 200
