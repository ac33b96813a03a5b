"""The main job end to end: the digits CNN (real data) through every runtime, via the CLI."""

import json

import pytest
import yaml

from conftest import digits_example

from modelfleet.cli import main
from modelfleet.store import sha256_file

pytestmark = pytest.mark.slow

EXPECTED = {"onnx-fp32", "onnx-fp16", "onnx-int8-dynamic", "onnx-int8-static",
            "ncnn-fp32-arm-boards", "ncnn-fp16-arm-boards", "tflite-fp32-phones"}


@pytest.fixture(scope="module")
def digits_run(digits_data, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("digits-run")
    (workdir / "m.yaml").write_text(yaml.safe_dump(digits_example(digits_data)))
    return workdir, main(["run", "-q", "-f", str(workdir / "m.yaml"), "-o", str(workdir / "out")])


def test_digits_pipeline_meets_its_slos(digits_run):
    _, exit_code = digits_run
    assert exit_code == 0


def test_digits_accuracy_is_real_and_int8_close_to_fp32(digits_run):
    workdir, _ = digits_run
    result = json.loads((workdir / "out/result.json").read_text())
    artifacts = {a["name"]: a for a in result["artifacts"]}
    # arm-boards is auto: ncnn int8 is a candidate too, built where hack/ncnn-tools.sh has run
    failed = {f["target"] for f in result["failures"]}
    assert set(artifacts) - {"ncnn-int8-arm-boards"} == EXPECTED and failed <= {"ncnn-int8-arm-boards"}
    assert result["baseline"]["accuracy"] >= 95.0
    assert result["baseline"]["evaluatedSamples"] == 540
    int8 = artifacts["onnx-int8-static"]
    assert int8["accuracyDropPoints"] <= 1.0
    assert int8["agreement"]["top1"] >= 98.0
    for name in ("ncnn-fp16-arm-boards", "tflite-fp32-phones", "onnx-fp16"):
        assert artifacts[name]["accuracyDropPoints"] <= 0.5, name
    # TFLite and ONNX fp32 compute the same function: outputs agree to float rounding.
    assert artifacts["tflite-fp32-phones"]["agreement"]["maxAbsDiff"] < 1e-3


def test_digits_artifacts_on_disk_match_the_manifest(digits_run):
    workdir, _ = digits_run
    out = workdir / "out"
    result = json.loads((out / "result.json").read_text())
    for artifact in result["artifacts"]:
        files = [out / f for f in artifact["files"]]
        assert all(f.is_file() for f in files), artifact["files"]
        assert artifact["sizeBytes"] == sum(f.stat().st_size for f in files)
        if len(files) == 1:
            assert artifact["sha256"] == sha256_file(files[0])
        assert artifact["latency"]["p95Ms"] >= artifact["latency"]["p50Ms"] > 0
    sizes = {a["name"]: a["sizeBytes"] for a in result["artifacts"]}
    assert sizes["onnx-int8-static"] < 0.4 * sizes["onnx-fp32"]
    assert sizes["onnx-fp16"] < 0.6 * sizes["onnx-fp32"]
    assert not (out / ".staging").exists()


def test_run_prints_the_result_table(digits_data, digits_manifest, tmp_path, capsys):
    manifest = digits_manifest({"compression": {"precisions": ["int8-static"]}, "targets": {"edge": []}})
    assert main(["run", "-q", "-f", str(manifest), "-o", str(tmp_path / "out")]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:4] == ["ARTIFACT", "RUNTIME", "PRECISION", "SIZE"]
    assert "onnx-int8-static" in table and "SLO met" in table
