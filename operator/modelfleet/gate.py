"""The SLO gate: a pure function of measured results and `spec.slo`."""

from typing import Literal

from modelfleet.api.compressedmodel import SLO
from modelfleet.api.result import ArtifactResult, FidelityResult, SLOVerdict, SLOViolation, TargetFailure

Metric = Literal["top1", "fidelity"]


def evaluate_slo(artifacts: list[ArtifactResult], failures: list[TargetFailure], slo: SLO,
                 metric: Metric = "top1") -> SLOVerdict:
    """Check every candidate artifact against the SLOs; a requested target that failed is a violation too.
    `metric` is the one the artifacts were measured by (the result's baseline.metric)."""
    violations = [v for artifact in artifacts if artifact.role == "candidate"
                  for v in artifact_violations(artifact, slo, metric)]
    for failure in failures:
        violations.append(SLOViolation(
            artifact=failure.target, slo="target",
            message=f"{failure.target}: {failure.stage} failed ({failure.reason}): {failure.message}",
        ))
    return SLOVerdict(passed=not violations, violations=violations)


def artifact_violations(artifact: ArtifactResult, slo: SLO, metric: Metric = "top1") -> list[SLOViolation]:
    """The SLOs one artifact misses: its quality by `metric`, its runtime's p95 budget, the size limit."""
    violations = quality_violations(artifact.name, artifact.fidelity, artifact.accuracy_drop_points, slo, metric)
    budget = getattr(slo.latency_p95_ms, artifact.runtime)
    if budget is not None and artifact.latency.p95_ms > budget:
        violations.append(SLOViolation(
            artifact=artifact.name, slo="latencyP95", limit=budget, measured=artifact.latency.p95_ms,
            message=f"{artifact.name}: p95 latency {artifact.latency.p95_ms:.3f} ms exceeds {budget:.3f} ms",
        ))
    if slo.max_size_bytes is not None and artifact.size_bytes > slo.max_size_bytes:
        violations.append(SLOViolation(
            artifact=artifact.name, slo="size", limit=slo.max_size_bytes, measured=artifact.size_bytes,
            message=f"{artifact.name}: size {artifact.size_bytes} bytes exceeds {slo.max_size_bytes}",
        ))
    return violations


def quality_violations(name: str, fidelity: FidelityResult | None, drop: float | None, slo: SLO,
                       metric: Metric) -> list[SLOViolation]:
    """The quality SLOs missed by an artifact named `name` with this fidelity (metric fidelity) or accuracy drop
    (metric top1)."""
    if metric == "fidelity":
        violations = []
        cosine, snr = fidelity.cosine, fidelity.snr_db
        if cosine < slo.min_fidelity_cosine:
            violations.append(SLOViolation(
                artifact=name, slo="fidelityCosine", limit=slo.min_fidelity_cosine, measured=cosine,
                message=f"{name}: mean cosine similarity {cosine:.6f} with the fp32 outputs is below "
                        f"{slo.min_fidelity_cosine:.6f} (worst sample {fidelity.min_cosine_sample}: "
                        f"{fidelity.min_cosine:.6f})",
            ))
        if slo.min_fidelity_snr_db is not None and snr < slo.min_fidelity_snr_db:
            violations.append(SLOViolation(
                artifact=name, slo="fidelitySnr", limit=slo.min_fidelity_snr_db, measured=snr,
                message=f"{name}: mean SNR {snr:.2f} dB against the fp32 outputs is below "
                        f"{slo.min_fidelity_snr_db:.2f} dB (worst sample {fidelity.min_snr_sample}: "
                        f"{fidelity.min_snr_db:.2f} dB)",
            ))
        return violations
    if drop > slo.max_accuracy_drop_points:
        return [SLOViolation(
            artifact=name, slo="accuracyDrop", limit=slo.max_accuracy_drop_points, measured=drop,
            message=f"{name}: accuracy drop {drop:.2f} points exceeds {slo.max_accuracy_drop_points:.2f}",
        )]
    return []
