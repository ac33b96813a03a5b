"""Bad input gets a clear message and a permanent exit code, early, and destroys nothing."""

import json

import numpy as np
import pytest
import yaml

from modelfleet.cli import main


def corrupt(kind: str, digits_data, tmp_path) -> dict:
    """Spec changes that break one thing each; files they need are written to tmp_path."""
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x00this is not a model\xff" * 64)
    data = np.load(digits_data / "evaluation.npz")

    def npz(name, **arrays):
        np.savez(tmp_path / name, **arrays)
        return {"dataset": {"evaluation": {"uri": f"file://{tmp_path / name}"}}}

    return {
        "missing-source": {"source": {"uri": f"file://{tmp_path}/nope.pt"}},
        "sha256-mismatch": {"source": {"sha256": "0" * 64}},
        "not-a-torchscript": {"source": {"uri": f"file://{garbage}"}},
        "not-an-onnx": {"source": {"uri": f"file://{garbage}", "format": "onnx"}},
        "wrong-channels": {"source": {"inputs": [{"name": "input", "shape": [-1, 3, 8, 8]}]}},
        "wrong-dtype": {"source": {"inputs": [{"name": "input", "shape": [-1, 1, 8, 8], "dtype": "int64"}]}},
        "empty-dataset": npz("empty.npz", inputs=data["inputs"][:0], labels=data["labels"][:0]),
        "no-labels": npz("nolabels.npz", inputs=data["inputs"]),
        "label-out-of-range": npz("mislabelled.npz", inputs=data["inputs"], labels=data["labels"] + 10),
        "float-labels": npz("floatlabels.npz", inputs=data["inputs"], labels=data["labels"].astype(np.float32)),
        "sample-shape": npz("shape.npz", inputs=data["inputs"][:, :, :4, :], labels=data["labels"]),
        "not-npz": {"dataset": {"calibration": {"uri": f"file://{garbage}"}}},
    }[kind]


@pytest.mark.parametrize(("kind", "exit_code", "message"), [
    ("missing-source", 4, "no such file"),
    ("sha256-mismatch", 5, "the spec expects 0000"),
    ("not-a-torchscript", 4, "not a torchscript model"),
    ("not-an-onnx", 4, "not a valid ONNX model"),
    ("wrong-channels", 4, "does not accept the declared inputs (input[-1, 3, 8, 8]:float32)"),
    ("wrong-dtype", 4, "does not accept the declared inputs (input[-1, 1, 8, 8]:int64)"),
    ("empty-dataset", 6, "the dataset is empty"),
    ("no-labels", 6, "missing the 'labels' array"),
    ("label-out-of-range", 6, "label 19 is out of range for a model with 10 outputs"),
    ("float-labels", 6, "'labels' must be integers"),
    ("sample-shape", 6, "samples have shape [1, 4, 8], the model input 'input' expects [1, 8, 8]"),
    ("not-npz", 6, "not a readable .npz file"),
])
def test_bad_input_fails_with_a_clear_permanent_error(kind, exit_code, message, digits_data, digits_manifest,
                                                      tmp_path, capsys):
    manifest = digits_manifest(corrupt(kind, digits_data, tmp_path))
    assert main(["run", "-q", "-f", str(manifest), "-o", str(tmp_path / "out")]) == exit_code
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "result.json").exists()
    assert list((tmp_path / "out").glob("*")) == []  # nothing half-written, staging removed


@pytest.mark.parametrize(("text", "message"), [
    ("spec: [unclosed", "not valid YAML"),
    ("kind: Deployment\n", "expected exactly one CompressedModel document, found 0"),
    (yaml.safe_dump({"apiVersion": "modelfleet.io/v1alpha1", "kind": "CompressedModel",
                     "metadata": {"name": "Bad_Name"}, "spec": {}}), "metadata.name"),
])
def test_invalid_manifest_is_refused_before_any_work(text, message, tmp_path, capsys):
    path = tmp_path / "m.yaml"
    path.write_text(text)
    assert main(["run", "-f", str(path), "-o", str(tmp_path / "out")]) == 3
    err = capsys.readouterr().err
    assert message in err and "[InvalidSpec]" in err
    assert not (tmp_path / "out").exists()


def test_a_failed_run_keeps_the_previous_artifacts(digits_manifest, tmp_path):
    out = tmp_path / "out"
    good = digits_manifest({"compression": {"precisions": ["int8-static"]}, "targets": {"edge": []}})
    assert main(["run", "-q", "-f", str(good), "-o", str(out)]) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    bad = digits_manifest({"source": {"sha256": "f" * 64}}, name="bad.yaml")
    assert main(["run", "-q", "-f", str(bad), "-o", str(out)]) == 5
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert json.loads((out / "result.json").read_text())["verdict"]["passed"] is True


def test_validate_command_accepts_the_example(capsys):
    from conftest import DIGITS_MANIFEST

    assert main(["validate", "-f", str(DIGITS_MANIFEST)]) == 0
    assert "CompressedModel digits is valid" in capsys.readouterr().out
