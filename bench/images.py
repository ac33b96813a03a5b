"""Size of each modelfleet image and the time to load it into the test cluster's node, side by side.

For each image (hack/images.sh): builds it unless docker has it (a cache hit is instant), reads its size
from docker, the size of its venv(s) from inside the image, then removes it from the node's containerd and
times `hack/cluster.sh load-image` (docker save | ctr import: what a node without a registry does instead of
a pull; layers the node already holds for another image, such as the worker's under worker-tflite, are
imported again by `ctr import` but stored once). Prints one row per image and the targets of issue 13:
operator <= 300 MB, agent <= 400 MB, the image an ONNX-source Job runs <= 1.5 GB.

Needs root, a running test cluster (`hack/cluster.sh up`) and the caches hack/images.sh fills.

Usage: python bench/images.py [IMAGE ...]   (default: every image)
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
IMAGES = ["operator", "agent", "worker", "worker-tflite", "worker-torch"]
TARGETS_MB = {"operator": 300, "agent": 400, "worker": 1500}
VENVS = ["/opt/modelfleet", "/opt/onnx2tf"]


def sh(*args: str, **kwargs) -> str:
    return subprocess.run(args, check=True, stdout=subprocess.PIPE, text=True, **kwargs).stdout.strip()


def build(image: str) -> tuple[str, float]:
    start = time.monotonic()
    tag = sh("bash", str(REPO / "hack/images.sh"), "build", image).splitlines()[-1]
    return tag, time.monotonic() - start


def venv_sizes(tag: str) -> str:
    script = "for d in " + " ".join(VENVS) + "; do [ -d $d ] && du -sm $d; done; true"
    out = sh("docker", "run", "--rm", "--network", "none", "--entrypoint", "sh", tag, "-c", script)
    return ", ".join(f"{line.split()[1]} {line.split()[0]} MB" for line in out.splitlines())


def cold_load_seconds(tag: str) -> float:
    env = dict(line.removeprefix("export ").split("=", 1) for line in
               sh("bash", str(REPO / "hack/cluster.sh"), "env").splitlines() if "=" in line)
    sock = Path(env["MODELFLEET_CLUSTER_DIR"]) / "containerd/containerd.sock"
    # containerd names docker's modelfleet/<image>:<tag> as docker.io/modelfleet/<image>:<tag>
    subprocess.run(["ctr", "-n", "k8s.io", "-a", str(sock), "images", "rm", f"docker.io/{tag}"], check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    start = time.monotonic()
    subprocess.run(["bash", str(REPO / "hack/cluster.sh"), "load-image", tag], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="*", metavar="IMAGE", help=f"default: all of {', '.join(IMAGES)}")
    images = parser.parse_args().images or IMAGES
    if unknown := set(images) - set(IMAGES):
        parser.error(f"unknown image(s) {', '.join(sorted(unknown))}")
    print(f"{'IMAGE':<14} {'SIZE MB':>8} {'TARGET':>7} {'LOAD S':>7} {'BUILD S':>8}  VENVS")
    failed = False
    for image in images:
        tag, built = build(image)
        size_mb = int(sh("docker", "image", "inspect", "-f", "{{.Size}}", tag)) / 1e6
        load = cold_load_seconds(tag)
        target = TARGETS_MB.get(image)
        verdict = "-" if target is None else ("PASS" if size_mb <= target else "FAIL")
        failed |= verdict == "FAIL"
        print(f"{image:<14} {size_mb:>8.0f} {str(target or '-'):>7} {load:>7.1f} {built:>8.1f}  "
              f"{venv_sizes(tag)}  {verdict}  {tag}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
