"""The SLO gate: table tests on hand-built results."""

import pytest

from modelfleet.api import SLO, AgreementResult, ArtifactResult, LatencyResult, TargetFailure
from modelfleet.gate import evaluate_slo


def artifact(name="onnx-int8-static", runtime="onnxruntime", role="candidate", drop=0.2, p95=1.0, size=1000):
    return ArtifactResult(
        name=name, runtime=runtime, precision="int8-static", role=role, files=[f"{name}/model.onnx"],
        sha256="0" * 64, size_bytes=size, accuracy=99.0 - drop, accuracy_drop_points=drop,
        agreement=AgreementResult(top1=99.0, max_abs_diff=0.1),
        latency=LatencyResult(p50_ms=p95 / 2, p95_ms=p95, runs=10, threads=1, batch_size=1),
    )


SLO_ALL = SLO.model_validate({"maxAccuracyDropPoints": 1.0, "latencyP95Ms": {"onnxruntime": 2.0, "ncnn": 3.0},
                              "maxSizeBytes": 5000})


@pytest.mark.parametrize(("artifacts", "failures", "slo", "violated"), [
    ([artifact()], [], SLO_ALL, []),
    ([artifact(drop=1.5)], [], SLO_ALL, ["accuracyDrop"]),
    ([artifact(drop=1.0)], [], SLO_ALL, []),  # the limit itself passes
    ([artifact(p95=2.5)], [], SLO_ALL, ["latencyP95"]),
    ([artifact(runtime="ncnn", p95=2.5)], [], SLO_ALL, []),  # ncnn has its own, larger budget
    ([artifact(runtime="tflite", p95=99.0)], [], SLO_ALL, []),  # no tflite budget: not gated
    ([artifact(size=6000)], [], SLO_ALL, ["size"]),
    ([artifact(drop=5, p95=9, size=9000)], [], SLO_ALL, ["accuracyDrop", "latencyP95", "size"]),
    ([artifact(role="baseline", p95=9, size=9000)], [], SLO_ALL, []),  # the baseline is a reference only
    ([artifact()], [TargetFailure(target="ncnn/phones", stage="convert", reason="UnsupportedOperator",
                                  message="Det", operator="Det")], SLO_ALL, ["target"]),
    ([artifact(drop=0.9, p95=50, size=10**9)], [], SLO(), []),  # defaults: only the 1-point drop limit
], ids=["all-met", "drop", "drop-at-limit", "latency", "other-runtime-budget", "no-budget", "size",
        "all-three", "baseline-exempt", "failed-target", "defaults"])
def test_gate_reports_exactly_the_violated_slos(artifacts, failures, slo, violated):
    verdict = evaluate_slo(artifacts, failures, slo)
    assert [v.slo for v in verdict.violations] == violated
    assert verdict.passed is (not violated)


def test_violation_messages_name_the_artifact_and_figures():
    (violation,) = evaluate_slo([artifact(p95=2.5)], [], SLO_ALL).violations
    assert violation.artifact == "onnx-int8-static"
    assert (violation.limit, violation.measured) == (2.0, 2.5)
    assert "2.500 ms exceeds 2.000 ms" in violation.message
