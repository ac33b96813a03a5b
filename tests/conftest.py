"""Shared fixtures: the digits CNN trained once per session on scikit-learn's real digits."""

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DIGITS_MANIFEST = REPO / "examples" / "digits" / "compressedmodel.yaml"


# Fixtures that build, download or start an external component (hack/'s scripts): a test that uses one is
# marked `component` and runs after the unit tier, once hack/prepare.sh has built them (hack/test.sh).
COMPONENT_FIXTURES = {"onnx2tf", "ncnn_tools", "promtool", "prometheus_operator_crds", "triton", "minio", "kube",
                      "helm", "kstatus_bin", "stack"}


def pytest_collection_modifyitems(items):
    for item in items:
        if COMPONENT_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.component)


@pytest.fixture(scope="session")
def digits_data(tmp_path_factory) -> Path:
    """A freshly trained digits model, its ExportedProgram twin, and calibration/evaluation sets."""
    out = tmp_path_factory.mktemp("digits-data")
    subprocess.run([sys.executable, "-W", "ignore", str(REPO / "examples/digits/train.py"), "--out", str(out)],
                   check=True, capture_output=True)
    return out


def deep_update(target: dict, changes: dict) -> dict:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            deep_update(target[key], value)
        else:
            target[key] = value
    return target


# What the tests that run the pipeline measure with: few timed runs keep the suite fast (latency figures are the
# benchmark's job). The example's 5 ms p95 bounds hold by a factor of 100 on an idle machine, but a p95 of 10
# timed runs on a loaded 2-core CI machine is one scheduler stall (9 ms seen): tests that are not about latency
# get bounds that cannot flip on load; tests about latency gating set their own.
FAST_RUNS = {"benchmark": {"threads": 1, "warmupRuns": 2, "runs": 10},
             "slo": {"latencyP95Ms": {"onnxruntime": 250, "ncnn": 250, "tflite": 250}}}


def digits_example(digits_data: Path, changes: dict | None = None) -> dict:
    """The example manifest pointed at the trained data, with `changes` merged into its spec."""
    manifest = yaml.safe_load(DIGITS_MANIFEST.read_text())
    spec = manifest["spec"]
    spec["source"]["uri"] = f"file://{digits_data / 'digits.torchscript.pt'}"
    spec["dataset"]["calibration"]["uri"] = f"file://{digits_data / 'calibration.npz'}"
    spec["dataset"]["evaluation"]["uri"] = f"file://{digits_data / 'evaluation.npz'}"
    deep_update(spec, copy.deepcopy(changes or {}))
    return manifest


@pytest.fixture
def digits_manifest(digits_data, tmp_path):
    """Write the example manifest for the trained data, with `changes` merged into spec."""

    def write(changes: dict | None = None, name: str = "manifest.yaml") -> Path:
        path = tmp_path / name
        fast = copy.deepcopy(FAST_RUNS)
        path.write_text(yaml.safe_dump(digits_example(digits_data, deep_update(fast, changes or {}))))
        return path

    return write


@pytest.fixture(scope="session")
def onnx2tf() -> str:
    """onnx2tf's executable, from the venv hack/onnx2tf-venv.sh makes once (first time: ~2 min, 2.6 GB)."""
    done = subprocess.run(["bash", str(REPO / "hack" / "onnx2tf-venv.sh")], check=True, stdout=subprocess.PIPE,
                          text=True, timeout=1800)
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def ncnn_tools() -> str:
    """ncnn2table and ncnn2int8, built once from ncnn's source by hack/ncnn-tools.sh (first time: minutes)."""
    done = subprocess.run(["bash", str(REPO / "hack" / "ncnn-tools.sh")], check=True, stdout=subprocess.PIPE,
                          text=True, timeout=3600)
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool, from Debian's prometheus package, installed by hack/prometheus.sh when missing (no daemon started)."""
    done = subprocess.run(["bash", str(REPO / "hack" / "prometheus.sh")], check=True, stdout=subprocess.PIPE,
                          text=True, timeout=900)
    return done.stdout.strip().splitlines()[-1].removeprefix("PROMTOOL=")


@pytest.fixture(scope="session")
def prometheus_operator_crds() -> Path:
    """The prometheus-operator's PrometheusRule and ServiceMonitor CRDs (pinned release, from the Go module proxy
    by hack/prometheus-operator-crds.sh; cached)."""
    done = subprocess.run(["bash", str(REPO / "hack" / "prometheus-operator-crds.sh")], check=True,
                          stdout=subprocess.PIPE, text=True, timeout=600)
    return Path(done.stdout.strip().splitlines()[-1])


MONITORING_CRDS = ("monitoring.coreos.com_prometheusrules.yaml", "monitoring.coreos.com_servicemonitors.yaml")


@pytest.fixture(scope="session")
def monitoring_crds(kube, prometheus_operator_crds) -> None:
    """prometheus-operator's PrometheusRule and ServiceMonitor CRDs on the test cluster (they stay; applying
    them again changes nothing). No prometheus-operator runs: the API server validates, nothing acts."""
    for crd in MONITORING_CRDS:
        # Server-side: the ServiceMonitor CRD is too large for client-side apply's last-applied annotation.
        kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(prometheus_operator_crds / crd))
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                 "crd/prometheusrules.monitoring.coreos.com", "crd/servicemonitors.monitoring.coreos.com")


def export_digits_onnx(digits_data: Path, out: Path, fixed_batch: int | None = None, opset: int = 17) -> Path:
    """The digits CNN as ONNX (torch's TorchScript exporter): a dynamic batch dimension, or one fixed at
    `fixed_batch`; at `opset`, as files exported by older tools come."""
    import torch

    module = torch.jit.load(str(digits_data / "digits.torchscript.pt"))
    axes = None if fixed_batch else {"input": {0: "n"}, "logits": {0: "n"}}
    torch.onnx.export(module, (torch.zeros(fixed_batch or 2, 1, 8, 8),), str(out), input_names=["input"],
                      output_names=["logits"], dynamic_axes=axes, opset_version=opset, dynamo=False)
    return out


@pytest.fixture(scope="session")
def digits_denoiser(tmp_path_factory) -> Path:
    """A model that is not a classifier, trained on scikit-learn's digits: a tiny fully convolutional denoiser
    (noisy 8x8 digit in, clean digit out; a U-Net-like skip around a pooled branch), exported to ONNX with
    dynamic batch, height and width. Writes denoiser.onnx, calibration.npz and evaluation.npz (inputs only,
    no labels: the 30% held out)."""
    import numpy as np
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    class Denoiser(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encode = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU())
            self.pooled = torch.nn.Sequential(torch.nn.MaxPool2d(2), torch.nn.Conv2d(16, 16, 3, padding=1),
                                              torch.nn.ReLU(), torch.nn.Upsample(scale_factor=2))
            self.decode = torch.nn.Conv2d(16, 1, 3, padding=1)

        def forward(self, x):
            features = self.encode(x)
            return self.decode(features + self.pooled(features))

    out = tmp_path_factory.mktemp("denoiser")
    # The same weights on every machine: seeded, one thread, deterministic kernels (what int8 calibration of it
    # measures then depends only on the quantizer, not on how this CPU scheduled the training).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(0)
    clean = (load_digits().images / 16.0).astype(np.float32)[:, None]
    noisy = np.clip(clean + rng.normal(0, 0.25, clean.shape), 0, 1).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(noisy, clean, test_size=0.3, random_state=0)
    torch.manual_seed(0)
    model = Denoiser()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = torch.from_numpy(x_train), torch.from_numpy(y_train)
    for _ in range(40):
        for i in range(0, len(x), 64):
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(x[i:i + 64]), y[i:i + 64]).backward()
            optimizer.step()
    model.eval()
    torch.use_deterministic_algorithms(False)
    torch.set_num_threads(threads)
    with torch.no_grad():
        denoised = model(torch.from_numpy(x_test)).numpy()
    # A real model: it removes about half of the held-out noise (what clipping to [0, 1] left of it).
    assert np.mean((denoised - y_test) ** 2) < 0.6 * np.mean((x_test - y_test) ** 2)
    axes = {"noisy": {0: "n", 2: "h", 3: "w"}, "clean": {0: "n", 2: "h", 3: "w"}}
    torch.onnx.export(model, (torch.zeros(2, 1, 8, 8),), str(out / "denoiser.onnx"), input_names=["noisy"],
                      output_names=["clean"], dynamic_axes=axes, opset_version=17, dynamo=False)
    np.savez(out / "calibration.npz", inputs=x_train[:256])
    np.savez(out / "evaluation.npz", inputs=x_test)
    return out


# --- a real Triton server ----------------------------------------------------------------------
# hack/triton/install.sh puts tritonserver 2.51 (from the nvidia-pytriton wheel, CPU, Python backend
# only) under ~/.cache/modelfleet and adds tests/triton_backend/onnxruntime, a TEST-ONLY
# Python-based backend named "onnxruntime", so the repositories modelfleet publishes (backend
# "onnxruntime", <version>/model.onnx) load unchanged. hack/triton/run-server.sh starts it on
# 127.0.0.1. Production servers use NVIDIA's C++ onnxruntime backend; nothing here is shipped.


def free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerProcess:
    """A server started by one of hack/'s scripts, awaited on its health URL, stopped with SIGTERM."""

    def _start(self, command: list[str], log: Path, health_url: str, timeout_s: float, env: dict | None = None) -> None:
        import time
        import urllib.request

        self.log = log
        with open(log, "wb") as out:
            self._process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"{command[1]} exited {self._process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(health_url, timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{command[1]} did not come up:\n{log.read_text()[-3000:]}")

    def stop(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


class TritonProcess(ServerProcess):
    """tritonserver on loopback ports, serving `repository`."""

    def __init__(self, repository: Path, log: Path, *flags: str):
        self.repository = repository
        self.http_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        ports = [str(self.http_port), str(free_port()), str(free_port())]
        self.metrics_address = f"127.0.0.1:{ports[2]}"  # Prometheus' /metrics (tests/test_slo_alerts_e2e.py)
        # The first call installs Triton (a 55 MB wheel).
        self._start(["bash", str(REPO / "hack/triton/run-server.sh"), str(repository), *ports, *flags], log,
                    f"{self.url}/v2/health/live", timeout_s=300)


@pytest.fixture(scope="session")
def triton(tmp_path_factory):
    """One explicit-mode server for the session; tests use distinct model names."""
    directory = tmp_path_factory.mktemp("triton")
    (directory / "repository").mkdir()
    server = TritonProcess(directory / "repository", directory / "tritonserver.log")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def digits_result(digits_data, tmp_path_factory) -> Path:
    """The digits pipeline run once: a result directory with result.json and every artifact."""
    from modelfleet.manifest import load_manifest
    from modelfleet.pipeline.run import compress
    from modelfleet.progress import Progress

    workdir = tmp_path_factory.mktemp("digits-result")
    changes = {**FAST_RUNS, "targets": {"edge": []}}
    (workdir / "m.yaml").write_text(yaml.safe_dump(digits_example(digits_data, changes)))
    compress(load_manifest(workdir / "m.yaml"), workdir / "out", workdir, Progress(enabled=False))
    return workdir / "out"


# --- a real MinIO (S3) ----------------------------------------------------------------------------
# hack/minio.sh builds github.com/minio/minio (a pinned release) from the Go module proxy on first use
# (several minutes; cached under ~/.cache/modelfleet) and serves a directory on a loopback port, or
# on another local address (the cluster's node IP, for pods).


class MinioProcess(ServerProcess):
    """`minio server` on `host` (loopback unless told) with a bucket `bucket`; `env` holds what boto3
    needs to reach it."""

    def __init__(self, directory: Path, bucket: str = "modelfleet", host: str = "127.0.0.1"):
        port = free_port(host)
        self.endpoint = f"http://{host}:{port}"
        self.bucket = bucket
        self.env = {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "modelfleet",
                    "AWS_SECRET_ACCESS_KEY": "modelfleet-secret", "AWS_DEFAULT_REGION": "us-east-1"}
        # The first call builds MinIO from source (minutes).
        self._start(["bash", str(REPO / "hack/minio.sh"), "server", str(directory / "data"), str(port), host],
                    directory / "minio.log", f"{self.endpoint}/minio/health/ready", timeout_s=1800,
                    env={**os.environ, "MINIO_ROOT_USER": self.env["AWS_ACCESS_KEY_ID"],
                         "MINIO_ROOT_PASSWORD": self.env["AWS_SECRET_ACCESS_KEY"]})
        self.client().create_bucket(Bucket=bucket)

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")


@pytest.fixture(scope="session")
def minio(tmp_path_factory) -> MinioProcess:
    server = MinioProcess(tmp_path_factory.mktemp("minio"))
    yield server
    server.stop()


@pytest.fixture
def minio_env(minio, monkeypatch) -> MinioProcess:
    """MinIO's endpoint and credentials in this test's environment (what boto3, hence the store, reads)."""
    for key, value in minio.env.items():
        monkeypatch.setenv(key, value)
    return minio


# --- a real single-node Kubernetes (hack/cluster.sh: API server, controller manager, scheduler,
# kubelet, containerd, kube-proxy and CoreDNS as local processes; see hack/cluster/README.md) ----


class KubeCluster:
    def __init__(self, env: dict[str, str]):
        from kubernetes import config

        self.env = env
        self.kubeconfig = env["KUBECONFIG"]
        self.api = config.new_client_from_config(config_file=self.kubeconfig)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["kubectl", *args], input=input, text=True, capture_output=True, check=check,
                              env={**os.environ, "KUBECONFIG": self.kubeconfig, "PATH": self.env["PATH"]})


def cluster_env() -> dict[str, str]:
    """`hack/cluster.sh up` (idempotent: seconds when it runs already), then the variables of `env`."""
    subprocess.run(["bash", str(REPO / "hack/cluster.sh"), "up"], check=True, timeout=3600)
    exports = subprocess.run(["bash", str(REPO / "hack/cluster.sh"), "env"], check=True, capture_output=True,
                             text=True).stdout
    env = {}
    for line in exports.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value.replace("$PATH", os.environ["PATH"])
    return env


@pytest.fixture(scope="session")
def kube() -> KubeCluster:
    return KubeCluster(cluster_env())


@pytest.fixture
def namespace(kube, request) -> str:
    """A fresh namespace per test, deleted afterwards: its CompressedModels first, while an operator
    still runs to release their finalizers, then the namespace (without waiting)."""
    import re
    import uuid

    from kubernetes import client

    name = f"t-{re.sub(r'[^a-z0-9]+', '-', request.node.name.lower())[:40].strip('-')}-{uuid.uuid4().hex[:5]}"
    core = client.CoreV1Api(kube.api)
    # `restricted`: what the operator runs (worker Jobs) must pass the strictest Pod Security Standard.
    core.create_namespace({"metadata": {"name": name, "labels": {
        "modelfleet.io/test": "true", "pod-security.kubernetes.io/enforce": "restricted"}}})
    yield name
    delete_models(kube, name)
    core.delete_namespace(name)


def hostpath_claim(kube: "KubeCluster", namespace: str, artifact_root: Path) -> str:
    """The store's claim (STORE_CLAIM) in `namespace`, bound to a hostPath volume on the directory behind every
    test namespace's claim, where the worker Jobs write; returns the volume's name (delete it after)."""
    from kubernetes import client

    core = client.CoreV1Api(kube.api)
    volume = f"{namespace}-{STORE_CLAIM}"
    core.create_persistent_volume({
        "metadata": {"name": volume, "labels": {"modelfleet.io/test": "true"}},
        "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteMany"],
                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                 "hostPath": {"path": str(artifact_root / STORE_CLAIM), "type": "Directory"},
                 "claimRef": {"namespace": namespace, "name": STORE_CLAIM}}})
    core.create_namespaced_persistent_volume_claim(namespace, {
        "metadata": {"name": STORE_CLAIM},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": volume,
                 "resources": {"requests": {"storage": "10Gi"}}}})
    return volume


def delete_models(kube: "KubeCluster", namespace: str, timeout: float = 60) -> None:
    """Delete every CompressedModel in `namespace` and wait until they are gone (finalizers released)."""
    kube.kubectl("delete", "compressedmodels.modelfleet.io", "--all", "-n", namespace, "--wait=true",
                 f"--timeout={timeout:.0f}s", check=False)


def node_image(name: str) -> str:
    """modelfleet/<name>:<hash>, built offline (hack/images.sh, cached by content) and loaded into the node."""
    # The tag the build printed: the tree may change while it builds (an edit), and `tag` would then name another.
    tag = subprocess.run(["bash", str(REPO / "hack/images.sh"), "build", name], check=True, timeout=3600,
                         stdout=subprocess.PIPE, text=True).stdout.strip().splitlines()[-1]
    subprocess.run(["bash", str(REPO / "hack/cluster.sh"), "load-image", tag], check=True, timeout=1800)
    return tag


@pytest.fixture(scope="session")
def worker_images(kube) -> dict[str, str]:
    """The operator's worker image settings, each image on the node: the torch-free worker (ONNX sources,
    publish, bundle), worker-torch (compressing torch sources) and worker-tflite (ONNX sources to TFLite).

    MODELFLEET_TEST_WORKER_IMAGE, MODELFLEET_TEST_TORCH_WORKER_IMAGE and MODELFLEET_TEST_TFLITE_WORKER_IMAGE
    name images already on the node instead (quicker while only operator code changes; CI always builds).
    """
    return {f"MODELFLEET_{kind}WORKER_IMAGE": os.environ.get(f"MODELFLEET_TEST_{kind}WORKER_IMAGE") or node_image(image)
            for kind, image in (("", "worker"), ("TORCH_", "worker-torch"), ("TFLITE_", "worker-tflite"))}


@pytest.fixture(scope="session")
def operator_image(kube) -> str:
    """The operator image on the node (small: a source change rebuilds and reloads in seconds)."""
    return node_image("operator")


@pytest.fixture(scope="session")
def artifact_root(tmp_path_factory) -> Path:
    """The host directory behind every test namespace's `modelfleet` claim (a hostPath PV)."""
    root = tmp_path_factory.mktemp("pvc")
    (root / "modelfleet").mkdir()
    root.chmod(0o755)
    # The worker runs as uid 10001. Tests (root) also create directories under triton/: made here,
    # writable by all, it stays writable for the publish Jobs of later tests.
    (root / "modelfleet" / "triton").mkdir()
    for shared in (root / "modelfleet", root / "modelfleet" / "triton"):
        shared.chmod(0o777)
    return root


SYSTEM_NAMESPACE = "modelfleet-system"
STORE_CLAIM = "modelfleet"


def wait_until(predicate, timeout: float, what: str, interval: float = 0.5):
    """predicate()'s first truthy value, polled until `timeout` seconds have passed."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


class OperatorDeployment:
    """The operator as users install it: deploy/operator.yaml (its ServiceAccount, in-cluster config, the
    operator image, restricted security context), with the test's image, settings and namespace scope
    patched in. Tests stop, kill and restart it through its pods."""

    def __init__(self, kube: KubeCluster, image: str, env: dict[str, str], name: str = "modelfleet-operator",
                 namespaces: tuple[str, ...] = ()):
        from kubernetes import client

        self.kube, self.name = kube, name
        self._core, self._apps = client.CoreV1Api(kube.api), client.AppsV1Api(kube.api)
        manifest = yaml.safe_load((REPO / "deploy/operator.yaml").read_text())
        labels = {"app.kubernetes.io/name": name}
        manifest["metadata"].update(name=name, labels=labels)
        manifest["spec"]["selector"]["matchLabels"] = labels
        manifest["spec"]["template"]["metadata"]["labels"] = labels
        container = manifest["spec"]["template"]["spec"]["containers"][0]
        container.update(image=image, imagePullPolicy="Never")
        scope = [arg for namespace in namespaces for arg in ("-n", namespace)]  # default: every namespace
        container["args"] = [container["args"][0], *scope, *container["args"][1:]]
        self.env = {e["name"]: e["value"] for e in container["env"]} | env
        container["env"] = [{"name": key, "value": value} for key, value in self.env.items()]
        self.manifest = manifest
        self._selector = f"app.kubernetes.io/name={name}"
        self._started: set[str] = set()  # uids of the pods start() has seen running
        self.pod: str | None = None

    def _pods(self) -> list:
        return self._core.list_namespaced_pod(SYSTEM_NAMESPACE, label_selector=self._selector).items

    def _scale(self, replicas: int) -> None:
        self._apps.patch_namespaced_deployment_scale(self.name, SYSTEM_NAMESPACE, {"spec": {"replicas": replicas}})

    def apply(self) -> None:
        self.kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(self.manifest))
        self.start()

    def start(self, timeout: float = 180) -> None:
        """Run one replica and wait until a pod not seen before has its container ready."""
        self._scale(1)

        def new_ready_pod():
            for pod in self._pods():
                ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
                if ready and not pod.metadata.deletion_timestamp and pod.metadata.uid not in self._started:
                    return pod
            return None

        pod = wait_until(new_ready_pod, timeout, f"a new ready pod of Deployment {self.name}")
        self._started.add(pod.metadata.uid)
        self.pod = pod.metadata.name

    def kill(self, signal_number: int = 9) -> None:
        """9: the pod is deleted at once (grace 0), as if its node lost it; the Deployment starts another.
        15: the Deployment is scaled to 0 and the operator stops on SIGTERM; start() brings it back."""
        if signal_number == 9:
            self._core.delete_namespaced_pod(self.pod, SYSTEM_NAMESPACE, grace_period_seconds=0)
        else:
            self._scale(0)
            wait_until(lambda: not self._pods(), 120, f"the pods of {self.name} to stop")

    def alive(self) -> bool:
        return any(p.metadata.name == self.pod and not p.metadata.deletion_timestamp and p.status.phase == "Running"
                   for p in self._pods())

    def logs(self) -> str:
        """The current pod's log (the one start() waited for)."""
        return self._core.read_namespaced_pod_log(self.pod, SYSTEM_NAMESPACE, container="operator",
                                                  _preload_content=False).data.decode()

    def delete(self) -> None:
        self.kube.kubectl("delete", "deployment", self.name, "-n", SYSTEM_NAMESPACE, "--ignore-not-found",
                          "--wait=true")
        wait_until(lambda: not self._pods(), 120, f"the pods of {self.name} to stop")


def store_claim(kube: KubeCluster, artifact_root: Path) -> None:
    """The claim `modelfleet` in modelfleet-system, for the operator's pvc:// store: a hostPath volume on
    the directory behind every test namespace's claim of that name. Replaces one a previous session left."""
    volume = f"{SYSTEM_NAMESPACE}-{STORE_CLAIM}"
    kube.kubectl("delete", "pvc", STORE_CLAIM, "-n", SYSTEM_NAMESPACE, "--ignore-not-found", "--wait=true")
    kube.kubectl("delete", "pv", volume, "--ignore-not-found", "--wait=true")
    claim = [
        {"apiVersion": "v1", "kind": "PersistentVolume",
         "metadata": {"name": volume, "labels": {"modelfleet.io/test": "true"}},
         "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteMany"],
                  "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                  "hostPath": {"path": str(artifact_root / STORE_CLAIM), "type": "Directory"},
                  "claimRef": {"namespace": SYSTEM_NAMESPACE, "name": STORE_CLAIM}}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
         "metadata": {"name": STORE_CLAIM, "namespace": SYSTEM_NAMESPACE},
         "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": volume,
                  "resources": {"requests": {"storage": "10Gi"}}}},
    ]
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(claim))


@pytest.fixture(scope="session")
def operator(kube, operator_image, worker_images, artifact_root, monitoring_crds):
    """The operator Deployment for the session, watching every namespace, results on the pvc:// store; with
    prometheus-operator's CRDs installed first, so it writes each Triton-served model's PrometheusRule."""
    kube.kubectl("apply", "-f", str(REPO / "deploy/operator-rbac.yaml"))
    deployment = OperatorDeployment(kube, operator_image, {
        **worker_images, "MODELFLEET_ARTIFACTS": f"pvc://{STORE_CLAIM}/results",
        "MODELFLEET_IMAGE_PULL_POLICY": "Never"})
    deployment.delete()  # one an interrupted session left behind still mounts the old claim
    store_claim(kube, artifact_root)
    deployment.apply()
    yield deployment
    deployment.delete()


@pytest.fixture(scope="session")
def cluster_minio(kube, tmp_path_factory) -> MinioProcess:
    """MinIO for pods: it listens on the node IP (the pod bridge's gateway address, local to this
    machine), which pods and host processes such as the operator both reach."""
    server = MinioProcess(tmp_path_factory.mktemp("cluster-minio"), host=kube.env["MODELFLEET_CLUSTER_NODE_IP"])
    yield server
    server.stop()
