"""Fault trials on the real single-node cluster (hack/cluster.sh): the operator, the API server, publish pods
and the S3 store die at random points while CompressedModels are compressed and published.

  operator   the operator's pod is deleted at once (grace 0) at a random point; the Deployment starts another
  apiserver  kube-apiserver gets SIGKILL at a random point and is started again (`hack/cluster.sh up`)
  publish    the publish Job's pod is deleted at once at a random point of a publish to a real tritonserver
             (on the node IP, explicit model control); Kubernetes runs the Job's pod again
  minio      the S3 artifact store (MinIO) is stopped at a random point of a compress and started again

After each trial, for every resource it touched: it ends Ready; each stage has exactly one Job, and no Job
was created twice (JobCreated Events); result.json is valid and every artifact's sha256 matches the stored
file; the Triton repository holds only versions the publish record verified, and Triton serves only those.
Prints a table (trials, failures, seconds per trial) and the failures found. Not part of CI: it takes long.

Usage: python bench/chaos.py [--operator N] [--apiserver N] [--publish N] [--minio N] [--batch K] [--seed S]
"""

import argparse
import copy
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import (KubeCluster, MinioProcess, OperatorDeployment, TritonProcess, cluster_env,  # noqa: E402
                      deep_update, digits_example, free_port, node_image, store_claim, wait_until)

NAMESPACE = "modelfleet-chaos"
GROUP, VERSION, PLURAL = "modelfleet.io", "v1alpha1", "compressedmodels"
CLAIM = "modelfleet"
FAST = {"benchmark": {"threads": 1, "warmupRuns": 2, "runs": 20}, "targets": {"edge": []},
        "worker": {"resources": {"requests": {"cpu": "250m", "memory": "1Gi"}}, "backoffLimit": 6}}


class Trials:
    def __init__(self, kube: KubeCluster, root: Path, rng: random.Random):
        from kubernetes import client

        self.kube, self.root, self.rng = kube, root, rng
        self.custom, self.batch, self.core = (client.CustomObjectsApi(kube.api), client.BatchV1Api(kube.api),
                                              client.CoreV1Api(kube.api))
        self.failures: list[str] = []
        self.rows: list[tuple] = []

    # --- resources -------------------------------------------------------------------------------------

    def create(self, name: str, changes: dict) -> None:
        on_claim = {"source": {"uri": f"pvc://{CLAIM}/inputs/digits.torchscript.pt"},
                    "dataset": {"calibration": {"uri": f"pvc://{CLAIM}/inputs/calibration.npz"},
                                "evaluation": {"uri": f"pvc://{CLAIM}/inputs/evaluation.npz"}}}
        body = digits_example(Path("/unused"), deep_update(deep_update(copy.deepcopy(FAST), on_claim), changes))
        body["metadata"]["name"] = name
        self.custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body)

    def get(self, name: str) -> dict:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)

    def ready(self, name: str) -> bool:
        conditions = {c["type"]: c for c in (self.get(name).get("status") or {}).get("conditions", [])}
        return conditions.get("Ready", {}).get("status") == "True"

    def clear(self) -> None:
        self.kube.kubectl("delete", "compressedmodels", "--all", "-n", NAMESPACE, "--wait=true", "--timeout=180s")
        self.kube.kubectl("delete", "jobs", "--all", "-n", NAMESPACE, "--wait=true", "--timeout=180s")
        self.kube.kubectl("delete", "events", "--all", "-n", NAMESPACE, check=False)

    # --- checks ----------------------------------------------------------------------------------------

    def check(self, kind: str, name: str, stages: list[str], store: "Store") -> None:
        """Everything the trial must leave true for resource `name`; failures are recorded, not raised."""
        def fail(what: str) -> None:
            self.failures.append(f"{kind} {name}: {what}")

        try:
            wait_until(lambda: self.ready(name), 900, f"{name} Ready")
        except AssertionError:
            fail(f"not Ready: {(self.get(name).get('status') or {}).get('conditions')}")
            return
        jobs = [j for j in self.batch.list_namespaced_job(NAMESPACE).items
                if j.metadata.labels.get("modelfleet.io/compressedmodel") == name]
        found = sorted(j.metadata.labels["modelfleet.io/stage"] for j in jobs)
        if found != sorted(stages):
            fail(f"Jobs by stage {found}, expected {sorted(stages)}")
        events = self.core.list_namespaced_event(NAMESPACE, field_selector=f"involvedObject.name={name}").items
        created = [e.message for e in events if e.reason == "JobCreated"]
        if len(created) > len(stages):
            fail(f"{len(created)} JobCreated events: {created}")
        status = self.get(name)["status"]
        result = store.read(f"results/{NAMESPACE}/{name}/{status['specHashes']['compress']}/result.json")
        if result is None:
            fail("no result.json")
            return
        manifest = json.loads(result)
        for artifact in manifest["artifacts"]:
            data = store.read_bytes(f"results/{NAMESPACE}/{name}/{status['specHashes']['compress']}/{artifact['files'][0]}")
            if data is None or (len(artifact["files"]) == 1 and hashlib.sha256(data).hexdigest() != artifact["sha256"]):
                fail(f"artifact {artifact['name']} missing or corrupt")

    def check_triton(self, name: str, model: str, triton: "NodeTriton") -> None:
        record_path = self.root / CLAIM / "triton" / NAMESPACE / model / "modelfleet.json"
        record = json.loads(record_path.read_text()) if record_path.is_file() else {"versions": []}
        verified = {v["version"] for v in record["versions"] if v["state"] in ("served", "written")}
        on_disk = {int(p.name) for p in record_path.parent.iterdir() if p.name.isdigit()} if record_path.is_file() else set()
        served = set(triton.served(model))
        if not served <= verified:
            self.failures.append(f"publish {name}: Triton serves unverified versions {sorted(served - verified)}")
        if not on_disk <= verified:
            self.failures.append(f"publish {name}: unverified versions on disk {sorted(on_disk - verified)}")
        if not served:
            self.failures.append(f"publish {name}: nothing served (record {record['versions']})")

    # --- the trials ------------------------------------------------------------------------------------

    def run(self, kind: str, count: int, batch: int, fault, changes, stages: list[str], store: "Store",
            after=None) -> None:
        started, rounds = time.monotonic(), 0
        failures_before = len(self.failures)
        done = 0
        while done < count:
            size = min(batch, count - done)
            names = [f"{kind}-{done + i:03d}" for i in range(size)]
            for name in names:
                self.create(name, changes(name))
                time.sleep(self.rng.uniform(0, 2))  # staggered: the fault meets each at another point
            fault()
            for name in names:
                self.check(kind, name, stages, store)
                if after:
                    after(name)
            self.clear()
            done += size
            rounds += 1
            print(f"  {kind}: {done}/{count} trials, {len(self.failures) - failures_before} failures", flush=True)
        elapsed = time.monotonic() - started
        self.rows.append((kind, count, len(self.failures) - failures_before, round(elapsed / max(count, 1), 1), rounds))


class Store:
    """Reads the artifact store the trials use (the claim's host directory, or MinIO)."""

    def __init__(self, root: Path | None = None, minio: MinioProcess | None = None):
        self.root, self.minio = root, minio

    def read_bytes(self, key: str) -> bytes | None:
        if self.minio is not None:
            try:
                return self.minio.client().get_object(Bucket=self.minio.bucket, Key=key)["Body"].read()
            except Exception:  # noqa: BLE001 - missing is what the check reports
                return None
        path = self.root / CLAIM / key
        return path.read_bytes() if path.is_file() else None

    def read(self, key: str) -> str | None:
        data = self.read_bytes(key)
        return data.decode() if data is not None else None


class RestartableMinio(MinioProcess):
    """MinIO that can be stopped and started again on the same address and data (an outage)."""

    def _start(self, *args, **kwargs) -> None:
        self._args = args, kwargs
        super()._start(*args, **kwargs)

    def restart(self) -> None:
        args, kwargs = self._args
        super()._start(*args, **kwargs)


class NodeTriton(TritonProcess):
    """tritonserver on the node IP, so publish pods reach it, serving the claim's triton/ directory."""

    def __init__(self, repository: Path, log: Path, host: str):
        self.repository, self.http_port = repository, free_port(host)
        self.url = f"http://{host}:{self.http_port}"
        ports = [str(self.http_port), str(free_port()), str(free_port())]
        self._start(["bash", str(ROOT / "hack/triton/run-server.sh"), str(repository), *ports,
                     f"--http-address={host}"], log, f"{self.url}/v2/health/live", timeout_s=300)

    def _post(self, path: str) -> bytes:
        import urllib.request

        request = urllib.request.Request(f"{self.url}{path}", data=b"{}", method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.read()

    def served(self, model: str) -> list[int]:
        index = json.loads(self._post("/v2/repository/index"))
        return [int(m["version"]) for m in index if m.get("name") == model and m.get("state") == "READY"]

    def unload(self, model: str) -> None:
        """Each loaded model is a Python stub process in this test server: unload what was checked."""
        self._post(f"/v2/repository/models/{model}/unload")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--operator", type=int, default=100)
    parser.add_argument("--apiserver", type=int, default=30)
    parser.add_argument("--publish", type=int, default=50)
    parser.add_argument("--minio", type=int, default=20)
    parser.add_argument("--batch", type=int, default=5, help="resources per fault (each is a trial)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    kube = KubeCluster(cluster_env())
    node_ip = kube.env["MODELFLEET_CLUSTER_NODE_IP"]
    root = Path(tempfile.mkdtemp(prefix="modelfleet-chaos-"))
    root.chmod(0o755)
    (root / CLAIM / "inputs").mkdir(parents=True)
    (root / CLAIM / "triton" / NAMESPACE).mkdir(parents=True)
    for directory in (root / CLAIM, root / CLAIM / "triton", root / CLAIM / "triton" / NAMESPACE):
        directory.chmod(0o777)
    subprocess.run([sys.executable, "-W", "ignore", str(ROOT / "examples/digits/train.py"), "--out",
                    str(root / CLAIM / "inputs")], check=True, capture_output=True)
    kube.kubectl("delete", "namespace", NAMESPACE, "--wait=true", check=False)
    kube.kubectl("create", "namespace", NAMESPACE)
    kube.kubectl("label", "namespace", NAMESPACE, "pod-security.kubernetes.io/enforce=restricted")
    claim_manifest = [
        {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"{NAMESPACE}-{CLAIM}"},
         "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
                  "persistentVolumeReclaimPolicy": "Retain",
                  "hostPath": {"path": str(root / CLAIM), "type": "Directory"},
                  "claimRef": {"namespace": NAMESPACE, "name": CLAIM}}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": CLAIM, "namespace": NAMESPACE},
         "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": f"{NAMESPACE}-{CLAIM}",
                  "resources": {"requests": {"storage": "10Gi"}}}}]
    import yaml

    kube.kubectl("delete", "pv", f"{NAMESPACE}-{CLAIM}", "--ignore-not-found", "--wait=true")
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(claim_manifest))
    kube.kubectl("apply", "-f", str(ROOT / "deploy/operator-rbac.yaml"))
    worker, torch_worker, operator_image = node_image("worker"), node_image("worker-torch"), node_image("operator")
    triton = NodeTriton(root / CLAIM / "triton" / NAMESPACE, root / "tritonserver.log", node_ip)
    base_env = {"MODELFLEET_WORKER_IMAGE": worker, "MODELFLEET_TORCH_WORKER_IMAGE": torch_worker,
                "MODELFLEET_ARTIFACTS": f"pvc://{CLAIM}/results",
                "MODELFLEET_IMAGE_PULL_POLICY": "Never", "MODELFLEET_TRITON_SERVERS": triton.url,
                "MODELFLEET_REQUEUE_MAX_SECONDS": "10"}
    operator = OperatorDeployment(kube, operator_image, base_env, name="modelfleet-operator-chaos",
                                  namespaces=(NAMESPACE,))
    operator.delete()
    store_claim(kube, root)
    operator.apply()
    trials = Trials(kube, root, rng)
    local = Store(root=root)
    written = lambda name: {"targets": {"edge": [], "triton": {  # noqa: E731
        "repository": f"pvc://{CLAIM}/triton/{NAMESPACE}", "modelName": name}}}

    def kill_operator() -> None:
        time.sleep(rng.uniform(0, 25))  # compress ~15 s, publish a few more
        operator.kill(9)
        operator.start()

    def restart_apiserver() -> None:
        time.sleep(rng.uniform(0, 25))
        pid = int(Path("/var/lib/modelfleet-cluster/pids/kube-apiserver.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        # until it is reaped: `up` takes a zombie for a running API server
        wait_until(lambda: not Path(f"/proc/{pid}").exists(), 60, "the killed API server to be reaped")
        subprocess.run(["bash", str(ROOT / "hack/cluster.sh"), "up"], check=True, capture_output=True)

    def kill_publish_pod() -> None:
        def publish_pods():
            return [p for p in trials.core.list_namespaced_pod(NAMESPACE, label_selector="modelfleet.io/stage=publish").items
                    if p.status.phase == "Running"]

        wait_until(publish_pods, 600, "a running publish pod")
        time.sleep(rng.uniform(0, 8))  # load, verify and measure take a few seconds
        for pod in publish_pods():
            trials.core.delete_namespaced_pod(pod.metadata.name, NAMESPACE, grace_period_seconds=0)

    served = lambda name: {"targets": {"edge": [], "triton": {  # noqa: E731
        "repository": f"pvc://{CLAIM}/triton/{NAMESPACE}", "modelName": name, "serverUrl": triton.url,
        "verification": {"latencyRequests": 20}}}}
    try:
        if args.operator:
            trials.run("operator", args.operator, args.batch, kill_operator, written, ["compress", "publish"], local)
        if args.apiserver:
            trials.run("apiserver", args.apiserver, args.batch, restart_apiserver, written, ["compress", "publish"], local)
        if args.publish:
            trials.run("publish", args.publish, 1, kill_publish_pod, served, ["compress", "publish"], local,
                       after=lambda name: (trials.check_triton(name, name, triton), triton.unload(name)))
        if args.minio:
            (root / "minio").mkdir()
            minio = RestartableMinio(root / "minio", host=node_ip)
            secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3", "namespace": NAMESPACE},
                      "stringData": minio.env}
            kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(secret))
            minio_store = Store(minio=minio)
            for name in ("digits.torchscript.pt", "calibration.npz", "evaluation.npz"):
                minio.client().upload_file(str(root / CLAIM / "inputs" / name), minio.bucket, f"inputs/{name}")
            operator.delete()
            operator = OperatorDeployment(kube, operator_image, {
                **base_env, **minio.env, "MODELFLEET_ARTIFACTS": f"s3://{minio.bucket}/results",
                "MODELFLEET_ARTIFACTS_SECRET": "s3"}, name="modelfleet-operator-chaos", namespaces=(NAMESPACE,))
            operator.apply()
            on_s3 = lambda name: {  # noqa: E731
                "source": {"uri": f"s3://{minio.bucket}/inputs/digits.torchscript.pt"},
                "dataset": {"calibration": {"uri": f"s3://{minio.bucket}/inputs/calibration.npz"},
                            "evaluation": {"uri": f"s3://{minio.bucket}/inputs/evaluation.npz"}},
                "targets": {"edge": []}}

            def restart_minio() -> None:
                time.sleep(rng.uniform(0, 20))
                minio.stop()
                time.sleep(rng.uniform(2, 10))
                minio.restart()

            trials.run("minio", args.minio, args.batch, restart_minio, on_s3, ["compress"], minio_store)
            minio.stop()
    finally:
        operator.delete()
        triton.stop()
    print("\nKIND       TRIALS  FAILURES  S/TRIAL  FAULTS")
    for kind, count, failed, per_trial, rounds in trials.rows:
        print(f"{kind:<10} {count:>6}  {failed:>8}  {per_trial:>7}  {rounds:>6}")
    for failure in trials.failures:
        print("FAIL", failure)
    shutil.rmtree(root, ignore_errors=True)
    return 1 if trials.failures else 0


if __name__ == "__main__":
    sys.exit(main())
