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
