"""Human-readable summaries of a result manifest."""

from modelfleet.api.result import ResultManifest

_COLUMNS = ("ARTIFACT", "RUNTIME", "PRECISION", "SIZE", "ACCURACY", "DROP", "P50 MS", "P95 MS", "SLO")


def result_table(result: ResultManifest) -> str:
    violated = {v.artifact for v in result.verdict.violations}
    rows = [_COLUMNS]
    for a in result.artifacts:
        slo = "-" if a.role == "baseline" else ("MISSED" if a.name in violated else "ok")
        rows.append((a.name, a.runtime, a.precision, _size(a.size_bytes), f"{a.accuracy:.2f}%",
                     f"{a.accuracy_drop_points:+.2f}", f"{a.latency.p50_ms:.3f}", f"{a.latency.p95_ms:.3f}", slo))
    for f in result.failures:
        rows.append((f.target, "-", "-", "-", "-", "-", "-", "-", f"FAILED ({f.reason})"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    verdict = "SLO met" if result.verdict.passed else "SLO MISSED:\n" + "\n".join(
        f"  - {v.message}" for v in result.verdict.violations)
    return "\n".join([*lines, "", f"baseline accuracy {result.baseline.accuracy:.2f}% on "
                                  f"{result.baseline.evaluated_samples} samples; {verdict}"])


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
