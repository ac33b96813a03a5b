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


def scored(name="onnx-int8-static", cosine=0.999, snr_db=30.0, p95=1.0):
    """An artifact measured under metric fidelity: no accuracy, outputs compared with the fp32 ones."""
    from modelfleet.api.result import FidelityResult

    return artifact(name=name, p95=p95).model_copy(update={
        "accuracy": None, "accuracy_drop_points": None,
        "fidelity": FidelityResult(cosine=cosine, snr_db=snr_db, min_cosine=cosine - 0.01, min_cosine_sample=7,
                                   min_snr_db=snr_db - 5, min_snr_sample=3)})


FIDELITY_SLO = SLO.model_validate({"minFidelityCosine": 0.995, "minFidelitySnrDb": 25.0,
                                   "latencyP95Ms": {"onnxruntime": 2.0}})


@pytest.mark.parametrize(("artifact_", "slo", "violated"), [
    (scored(), FIDELITY_SLO, []),
    (scored(cosine=0.99), FIDELITY_SLO, ["fidelityCosine"]),
    (scored(cosine=0.995), FIDELITY_SLO, []),  # the limit itself passes
    (scored(snr_db=20.0), FIDELITY_SLO, ["fidelitySnr"]),
    (scored(cosine=0.5, snr_db=1.0, p95=3.0), FIDELITY_SLO, ["fidelityCosine", "fidelitySnr", "latencyP95"]),
    (scored(cosine=0.991, snr_db=1.0), SLO(), []),  # defaults: cosine 0.99, SNR unchecked
    (scored(cosine=0.98), SLO(), ["fidelityCosine"]),
], ids=["met", "cosine", "cosine-at-limit", "snr", "all-three", "defaults", "default-cosine"])
def test_fidelity_gate_uses_the_fidelity_bounds_not_accuracy(artifact_, slo, violated):
    verdict = evaluate_slo([artifact_], [], slo, metric="fidelity")
    assert [v.slo for v in verdict.violations] == violated


def test_fidelity_violation_names_the_worst_sample():
    (cosine, snr) = evaluate_slo([scored(cosine=0.9, snr_db=12.0)], [], FIDELITY_SLO, "fidelity").violations
    assert (cosine.limit, cosine.measured) == (0.995, 0.9)
    assert "mean cosine similarity 0.900000 with the fp32 outputs is below 0.995000 (worst sample 7: 0.890000)" \
        in cosine.message
    assert "mean SNR 12.00 dB against the fp32 outputs is below 25.00 dB (worst sample 3: 7.00 dB)" in snr.message


def test_top1_gate_ignores_fidelity_bounds():
    # A classifier whose logits drift (cosine 0.5) but whose top-1 holds is judged by accuracy alone.
    lax = artifact().model_copy(update={"fidelity": scored(cosine=0.5).fidelity})
    assert evaluate_slo([lax], [], FIDELITY_SLO).passed
