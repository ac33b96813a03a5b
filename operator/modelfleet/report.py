"""Human-readable summaries of a result manifest."""

from modelfleet.api.result import ResultManifest
from modelfleet.domain.choice import size_text

_COLUMNS = ("ARTIFACT", "RUNTIME", "PRECISION", "SIZE", "ACCURACY", "DROP", "P50 MS", "P95 MS", "VS FP32", "SLO",
            "CHOSEN FOR")


def result_table(result: ResultManifest) -> str:
    violated = {v.artifact for v in result.verdict.violations}
    lost = {loser.artifact for c in result.choices if c.mode == "auto" for loser in c.losers}
    chosen_for: dict[str, list[str]] = {}
    for choice in result.choices:
        if choice.chosen:
            chosen_for.setdefault(choice.chosen, []).append(choice.target)
    rows = [_COLUMNS]
    for a in result.artifacts:
        if a.name in violated:
            slo = "MISSED"
        elif a.name in lost:
            slo = "lost"  # not shipped: the choices below say why
        else:
            slo = "-" if a.role == "baseline" else "ok"
        rows.append((a.name, a.runtime, a.precision, size_text(a.size_bytes), _quality(a),
                     "-" if a.accuracy_drop_points is None else f"{a.accuracy_drop_points:+.2f}",
                     f"{a.latency.p50_ms:.3f}", f"{a.latency.p95_ms:.3f}",
                     _versus_fp32(a), slo, ",".join(chosen_for.get(a.name, [])) or "-"))
    for f in result.failures:
        rows.append((f.target, "-", "-", "-", "-", "-", "-", "-", "-", f"FAILED ({f.reason})", "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    choices = [f"{c.target} ({c.mode}): {c.chosen or 'NOTHING QUALIFIES'}"
               + "".join(f"\n  - {loser.artifact}: {loser.reason}" for loser in c.losers) for c in result.choices]
    notes = [*(f"note: {note}" for note in result.notes),
             *(f"note: {a.name}: {note}" for a in result.artifacts for note in a.notes)]
    verdict = "SLO met" if result.verdict.passed else "SLO MISSED:\n" + "\n".join(
        f"  - {v.message}" for v in result.verdict.violations)
    baseline = (f"baseline accuracy {result.baseline.accuracy:.2f}%" if result.baseline.accuracy is not None
                else f"baseline {result.baseline.artifact} (metric {result.baseline.metric})")
    return "\n".join([*lines, "", *choices, *notes,
                      f"{baseline} on {result.baseline.evaluated_samples} samples; {verdict}"])


def _quality(artifact) -> str:
    """Top-1 accuracy, or for metric fidelity the mean cosine similarity with the fp32 outputs."""
    if artifact.accuracy is not None:
        return f"{artifact.accuracy:.2f}%"
    return f"cos {artifact.fidelity.cosine:.4f}" if artifact.fidelity else "-"


def _versus_fp32(artifact) -> str:
    """Speed-up versus fp32 in the same runtime with its 95% interval, SLOWER when the interval lies below 1."""
    if artifact.speedup_vs_fp32 is None:
        return "-"
    interval = (f" [{artifact.speedup_interval[0]:.2f}-{artifact.speedup_interval[1]:.2f}]"
                if artifact.speedup_interval else "")
    return f"{artifact.speedup_vs_fp32:.2f}x{interval}" + (" SLOWER" if artifact.slower_than_fp32 else "")
