"""The operator under a burst of 1,000 CompressedModels on the real control plane (hack/cluster.sh).

The operator runs as installed (deploy/operator.yaml, the operator image); the node is cordoned once
its pod runs, so worker pods stay Pending: what is measured is the operator's own work.

  apply -> first Job   per resource, from the create call returning to the Job's ADDED watch event
  all reconciled       from the first create until every resource's status carries Compressing
  operator RSS         peak resident memory of the operator's process (its container's, found
                       through the CRI), sampled every 0.2 s
  CPU seconds          used by the operator, this script and each control-plane process meanwhile
  API requests         the API server's own counters (apiserver_request_total, not WATCH), per
                       resource applied, by verb and resource, from the first apply until all reconciled
  reconciles           how many the operator ran (its log), their wall time p50/p95, and its CPU per
                       reconcile and per resource: the operator's own share of the burst
  cluster start        `hack/cluster.sh up` after `down` (warm), and after `down --purge` with --cold

Targets: apply->Job p95 <= 1 s, operator RSS <= 200 MB.
Usage: python bench/operator_burst.py [--count N] [--rate PER_SECOND] [--cold | --no-restart] [--json PATH]
"""

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import (KubeCluster, OperatorDeployment, cluster_env, digits_example, node_image,  # noqa: E402
                      store_claim)

NAMESPACE = "modelfleet-bench"
GROUP, VERSION, PLURAL = "modelfleet.io", "v1alpha1", "compressedmodels"


def timed_up(*down_args: str) -> float:
    subprocess.run(["bash", str(ROOT / "hack/cluster.sh"), "down", *down_args], check=True, capture_output=True)
    started = time.monotonic()
    subprocess.run(["bash", str(ROOT / "hack/cluster.sh"), "up"], check=True, capture_output=True)
    return time.monotonic() - started


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


CONTROL_PLANE = ("kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def container_pid(kube: KubeCluster, pod: str) -> int:
    """The host pid of the pod's first container (this machine is the node)."""
    env = {**os.environ, "PATH": kube.env["PATH"], "CRI_CONFIG_FILE": kube.env["CRI_CONFIG_FILE"]}
    [container] = subprocess.run(["crictl", "ps", "-q", "--label", f"io.kubernetes.pod.name={pod}"], env=env,
                                 check=True, capture_output=True, text=True).stdout.split()
    info = subprocess.run(["crictl", "inspect", container], env=env, check=True, capture_output=True, text=True).stdout
    return int(json.loads(info)["info"]["pid"])


def processes(operator_pid: int) -> dict[str, int]:
    found = {"operator": operator_pid, "benchmark": os.getpid()}
    for name in CONTROL_PLANE:
        pids = subprocess.run(["pgrep", "-x", name[:15]], capture_output=True, text=True).stdout.split()
        if pids:
            found[name] = int(pids[0])
    return found


def api_requests(kube) -> collections.Counter:
    """apiserver_request_total summed over response codes, keyed by `VERB resource[/subresource]`."""
    counts: collections.Counter = collections.Counter()
    for line in kube.kubectl("get", "--raw", "/metrics").stdout.splitlines():
        if line.startswith("apiserver_request_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            if labels.get("verb") != "WATCH":
                key = f"{labels.get('verb')} {labels.get('resource')}{'/' + labels['subresource'] if labels.get('subresource') else ''}"
                counts[key] += float(line.rsplit(" ", 1)[1])
    return counts


def resource(index: int) -> dict:
    body = digits_example(Path("/bench"), {
        "source": {"uri": "pvc://modelfleet/inputs/digits.torchscript.pt"},
        "dataset": {"calibration": {"uri": "pvc://modelfleet/inputs/calibration.npz"},
                    "evaluation": {"uri": "pvc://modelfleet/inputs/evaluation.npz"}}})
    body["metadata"]["name"] = f"model-{index:04d}"
    return body


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--cold", action="store_true", help="also time `up` after `down --purge` (state rebuilt)")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="apply at most this many per second (default: a burst, as fast as 8 threads go)")
    parser.add_argument("--no-restart", action="store_true", help="skip the cluster start timings (no down/up)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    figures: dict = {}
    if args.cold:
        figures["clusterColdUpSeconds"] = round(timed_up("--purge"), 1)
    if not args.no_restart:
        figures["clusterWarmUpSeconds"] = round(timed_up(), 1)
    kube = KubeCluster(cluster_env())
    from kubernetes import client, watch

    kube.kubectl("apply", "-f", str(ROOT / "deploy/operator-rbac.yaml"))
    kube.kubectl("delete", "namespace", NAMESPACE, "--wait=true", check=False)
    kube.kubectl("create", "namespace", NAMESPACE)
    workdir = Path(tempfile.mkdtemp(prefix="modelfleet-bench-operator-"))
    (workdir / "modelfleet").mkdir()
    operator = OperatorDeployment(kube, node_image("operator"), {
        "MODELFLEET_WORKER_IMAGE": "modelfleet/worker:bench", "MODELFLEET_ARTIFACTS": "pvc://modelfleet/results"},
        name="modelfleet-operator-bench")
    operator.delete()
    store_claim(kube, workdir)
    operator.apply()
    kube.kubectl("cordon", kube.env["MODELFLEET_CLUSTER_NODE"])  # after the operator's own pod started
    operator_pid = container_pid(kube, operator.pod)
    time.sleep(3)  # kopf's watches are up
    applied: dict[str, float] = {}
    first_job: dict[str, float] = {}
    peak = [0.0]
    done = threading.Event()

    def watch_jobs() -> None:
        batch = client.BatchV1Api(kube.api)
        stream = watch.Watch()
        # Plain JSON: the client's model classes would cost this script CPU the cluster shares.
        for event in stream.stream(batch.list_namespaced_job, NAMESPACE, timeout_seconds=600, deserialize=False):
            if event["type"] == "ADDED":
                owner = event["object"]["metadata"]["labels"].get("modelfleet.io/compressedmodel")
                first_job.setdefault(owner, time.monotonic())
            if done.is_set() or len(first_job) >= args.count:
                stream.stop()

    def sample_rss() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb(operator_pid))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch_jobs, daemon=True)
    watcher.start()
    threading.Thread(target=sample_rss, daemon=True).start()
    time.sleep(1)
    custom = client.CustomObjectsApi(kube.api)

    def apply(index: int) -> None:
        body = resource(index)
        custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body)
        applied[body["metadata"]["name"]] = time.monotonic()

    requests_before = api_requests(kube)
    watched = processes(operator_pid)
    cpu_before = {name: cpu_seconds(pid) for name, pid in watched.items()}
    started = time.monotonic()

    def paced(index: int) -> None:
        if args.rate:
            time.sleep(max(0.0, started + index / args.rate - time.monotonic()))
        apply(index)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(paced, range(args.count)))
    figures["applySeconds"] = round(time.monotonic() - started, 1)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        items = custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)["items"]
        reconciled = sum(1 for i in items if any(c["type"] == "Compressed" for c in (i.get("status") or {}).get("conditions", [])))
        if reconciled == args.count:
            break
        time.sleep(0.5)
    figures["allReconciledSeconds"] = round(time.monotonic() - started, 1)
    requests = api_requests(kube) - requests_before
    cpu = {name: round(cpu_seconds(pid) - cpu_before[name], 1) for name, pid in watched.items()}
    watcher.join(timeout=60)
    done.set()
    latencies = np.array([first_job[n] - applied[n] for n in applied if n in first_job])
    reconciles = np.array([float(ms) for ms in re.findall(r"reconciled \S+ in (\d+) ms", operator.logs())])
    figures.update({
        "resources": args.count, "applyRatePerSecond": args.rate or "burst", "jobsSeen": int(len(latencies)),
        "applyToJobP50Seconds": round(float(np.percentile(latencies, 50)), 3),
        "applyToJobP95Seconds": round(float(np.percentile(latencies, 95)), 3),
        "applyToJobMaxSeconds": round(float(latencies.max()), 3),
        "operatorPeakRssMb": round(peak[0], 1),
        "reconciles": int(len(reconciles)),
        "reconcileWallP50Ms": round(float(np.percentile(reconciles, 50)), 1) if len(reconciles) else None,
        "reconcileWallP95Ms": round(float(np.percentile(reconciles, 95)), 1) if len(reconciles) else None,
        "operatorCpuMsPerReconcile": round(1000 * cpu["operator"] / max(len(reconciles), 1), 1),
        "operatorCpuMsPerResource": round(1000 * cpu["operator"] / args.count, 1),
        "cpuSeconds": cpu,
        "apiRequestsPerResource": {key: round(n / args.count, 2) for key, n in requests.most_common(12)},
    })
    print(json.dumps(figures, indent=2))
    print("TARGETS")
    print(f"{'PASS' if figures['applyToJobP95Seconds'] <= 1.0 else 'FAIL'}  apply->first Job p95 <= 1 s: "
          f"{figures['applyToJobP95Seconds']:.3f} s")
    print(f"{'PASS' if figures['operatorPeakRssMb'] <= 200 else 'FAIL'}  operator RSS <= 200 MB: "
          f"{figures['operatorPeakRssMb']:.0f} MB")
    # Clean up while the operator still runs: it removes its finalizers.
    kube.kubectl("delete", "namespace", NAMESPACE, "--wait=true", "--timeout=600s", check=False)
    operator.delete()
    kube.kubectl("uncordon", kube.env["MODELFLEET_CLUSTER_NODE"])
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
