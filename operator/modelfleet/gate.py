"""The SLO gate: a pure function of measured results and `spec.slo`."""

from modelfleet.api.compressedmodel import SLO
from modelfleet.api.result import ArtifactResult, SLOVerdict, SLOViolation, TargetFailure


def evaluate_slo(artifacts: list[ArtifactResult], failures: list[TargetFailure], slo: SLO) -> SLOVerdict:
    """Check every candidate artifact against the SLOs; a requested target that failed is a violation too."""
    violations: list[SLOViolation] = []
    for artifact in artifacts:
        if artifact.role != "candidate":
            continue
        if artifact.accuracy_drop_points > slo.max_accuracy_drop_points:
            violations.append(SLOViolation(
                artifact=artifact.name, slo="accuracyDrop",
                limit=slo.max_accuracy_drop_points, measured=artifact.accuracy_drop_points,
                message=f"{artifact.name}: accuracy drop {artifact.accuracy_drop_points:.2f} points "
                        f"exceeds {slo.max_accuracy_drop_points:.2f}",
            ))
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
    for failure in failures:
        violations.append(SLOViolation(
            artifact=failure.target, slo="target",
            message=f"{failure.target}: {failure.stage} failed ({failure.reason}): {failure.message}",
        ))
    return SLOVerdict(passed=not violations, violations=violations)
