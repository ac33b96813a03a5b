"""Shared fixtures: the digits CNN trained once per session on scikit-learn's real digits."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DIGITS_MANIFEST = REPO / "examples" / "digits" / "compressedmodel.yaml"


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
        # Few timed runs keep the suite fast; latency figures are the benchmark's job.
        fast = {"benchmark": {"threads": 1, "warmupRuns": 2, "runs": 10}}
        path = tmp_path / name
        path.write_text(yaml.safe_dump(digits_example(digits_data, deep_update(fast, changes or {}))))
        return path

    return write


# --- a real Triton server ----------------------------------------------------------------------
# hack/triton/install.sh puts tritonserver 2.51 (from the nvidia-pytriton wheel, CPU, Python backend
# only) under ~/.cache/modelfleet and adds tests/triton_backend/onnxruntime, a TEST-ONLY
# Python-based backend named "onnxruntime", so the repositories modelfleet publishes (backend
# "onnxruntime", <version>/model.onnx) load unchanged. hack/triton/run-server.sh starts it on
# 127.0.0.1. Production servers use NVIDIA's C++ onnxruntime backend; nothing here is shipped.


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TritonProcess:
    """tritonserver on loopback ports, serving `repository`, stopped with SIGTERM."""

    def __init__(self, repository: Path, log: Path, *flags: str):
        import time
        import urllib.request

        self.repository = repository
        self.http_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.log = log
        ports = [str(self.http_port), str(free_port()), str(free_port())]
        with open(log, "wb") as out:
            self._process = subprocess.Popen(["bash", str(REPO / "hack/triton/run-server.sh"), str(repository),
                                              *ports, *flags], stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300  # the first call installs Triton (a 55 MB wheel)
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"tritonserver exited {self._process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/v2/health/live", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"tritonserver did not come up:\n{log.read_text()[-3000:]}")

    def stop(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


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
    changes = {"benchmark": {"threads": 1, "warmupRuns": 2, "runs": 10}, "targets": {"edge": []}}
    (workdir / "m.yaml").write_text(yaml.safe_dump(digits_example(digits_data, changes)))
    compress(load_manifest(workdir / "m.yaml"), workdir / "out", workdir, Progress(enabled=False))
    return workdir / "out"
