"""Which artifact each target ships: a pure function of the measured figures and the SLOs.

int8 is not assumed faster (on many CPUs it is not): a target with precision `auto` gets the fastest
candidate, by median time, among those that meet the SLOs. Artifacts of one runtime are timed in the same
interleaved rounds, and a candidate whose speed-up interval against the fastest reaches into the tie band
(`timing.TIE`) is not shown to be slower: among such ties the smaller artifact wins. Every other candidate is
listed with why it lost.
"""

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from modelfleet.api.compressedmodel import AUTO, EDGE_PRECISIONS, SLO, CompressedModelSpec, Precision, Targets
from modelfleet.api.result import (ArtifactResult, LatencyResult, LostCandidate, ResultManifest, SLOVerdict,
                                   SLOViolation, TargetChoice, TargetFailure)
from modelfleet.domain import timing
from modelfleet.gate import Metric, artifact_violations, evaluate_slo

TRITON = "triton"
ONNX_RUNTIME = "onnxruntime"
LITTLE_QUANTIZED = 0.1  # a quantized variant with less int8 than this is noted as essentially fp32


def onnx_name(precision: str) -> str:
    return f"onnx-{precision}"


def edge_name(runtime: str, precision: str, target: str) -> str:
    return f"{runtime}-{precision}-{target}"


def edge_precisions(runtime: str, precision: str) -> tuple[str, ...]:
    """What an edge target builds: every precision of its runtime under auto, else the one it names."""
    return EDGE_PRECISIONS[runtime] if precision == AUTO else (precision,)


@dataclass(frozen=True)
class Candidate:
    """One measured artifact that a target could ship: its timed runs, in the rounds of its runtime."""

    name: str
    times_ms: tuple[float, ...]
    size_bytes: int
    misses: tuple[str, ...] = ()  # the SLOs it misses, in words ("drop 1.80 pt > 1.0")
    fp32_times_ms: tuple[float, ...] | None = None  # fp32's in the same runtime and rounds; None when none was built

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)


def timed_runs(latency: LatencyResult) -> tuple[float, ...]:
    """The timed runs of a result; for results written before the runs were kept, its p95 alone (what the choice
    compared then), so rejudging an old result chooses as it did."""
    return tuple(latency.samples_ms) if latency.samples_ms else (latency.p95_ms,)


def choose(target: str, runtime: str, candidates: Sequence[Candidate],
           failed: Mapping[str, str] | None = None) -> TargetChoice:
    """The fastest candidate that meets the SLOs (candidates not shown slower than it: the smallest), and why
    each other one lost. `failed`: candidates that could not be built or measured, with why."""
    eligible = [c for c in candidates if not c.misses]
    chosen = fastest = None
    if eligible:
        fastest = min(eligible, key=lambda c: (c.median_ms, c.size_bytes, c.name))
        ties = [c for c in eligible if c is fastest or timing.speedup(fastest.times_ms, c.times_ms).overlaps_tie()]
        chosen = min(ties, key=lambda c: (c.size_bytes, c.median_ms, c.name))
    losers = [LostCandidate(artifact=c.name, reason=_why_lost(c, chosen, fastest))
              for c in candidates if c is not chosen]
    losers += [LostCandidate(artifact=name, reason=f"failed: {why}") for name, why in (failed or {}).items()]
    return TargetChoice(target=target, runtime=runtime, mode="auto", chosen=chosen.name if chosen else None,
                        losers=losers)


def _why_lost(c: Candidate, chosen: Candidate | None, fastest: Candidate | None) -> str:
    if c.misses:
        return "; ".join(c.misses)
    behind = timing.speedup(fastest.times_ms, c.times_ms)  # how much faster the fastest is
    if c is fastest or behind.overlaps_tie():
        return (f"larger than {chosen.name} ({size_text(c.size_bytes)} > {size_text(chosen.size_bytes)}) "
                f"and not shown faster than it ({timing.speedup(c.times_ms, chosen.times_ms).text()})")
    if c.fp32_times_ms is not None and slower_than_fp32(timing.speedup(c.times_ms, c.fp32_times_ms)):
        return f"slower than fp32 ({timing.speedup(c.fp32_times_ms, c.times_ms).text()})"
    return f"median {c.median_ms:.3f} ms: {fastest.name} is {behind.text()} faster"


def choose_targets(artifacts: Sequence[ArtifactResult], failures: Sequence[TargetFailure], targets: Targets,
                   slo: SLO, metric: Metric = "top1") -> list[TargetChoice]:
    """The choice of every target (Triton first, then the edge targets in spec order); `metric` is the one the
    artifacts were measured by."""
    fp32 = fp32_references(artifacts)
    failed = {f.target: f"{f.stage} ({f.reason})" for f in failures}
    groups = []  # (target, runtime, requested precision, its artifacts, names of its failed candidates)
    if targets.triton:
        onnx = [a for a in artifacts if a.runtime == ONNX_RUNTIME]
        failed_onnx = {n for n in failed if n.startswith("onnx-")}
        groups.append((TRITON, ONNX_RUNTIME, targets.triton.precision, onnx, failed_onnx))
    for edge in targets.edge:
        built = [a for a in artifacts if a.target == edge.name]
        names = {edge_name(edge.runtime, p, edge.name) for p in edge_precisions(edge.runtime, edge.precision)}
        groups.append((edge.name, edge.runtime, edge.precision, built, names & failed.keys()))
    choices = []
    for target, runtime, precision, built, names in groups:
        if precision != AUTO:
            name = onnx_name(precision) if target == TRITON else edge_name(runtime, precision, target)
            choices.append(TargetChoice(target=target, runtime=runtime, mode="requested",
                                        chosen=name if any(a.name == name for a in built) else None))
            continue
        candidates = [Candidate(a.name, timed_runs(a.latency), a.size_bytes, misses(a, slo, metric),
                                timed_runs(fp32[a.name].latency) if fp32.get(a.name) else None) for a in built]
        choices.append(choose(target, runtime, candidates, {n: why for n, why in failed.items() if n in names}))
    return choices


def slower_than_fp32(gain: timing.Ratio) -> bool:
    """Slower than fp32 beyond the tie band, over the whole interval of the speed-up."""
    return gain.clearly_below(1 / (1 + timing.TIE))


def fp32_references(artifacts: Iterable[ArtifactResult]) -> dict[str, ArtifactResult]:
    """Per artifact, the fp32 artifact of the same runtime it is compared with: the ONNX baseline for ONNX
    variants, the same edge target's fp32 for edge artifacts. Artifacts without one are left out."""
    artifacts = list(artifacts)
    fp32 = {(a.runtime, a.target): a for a in artifacts if a.precision == Precision.fp32}
    return {a.name: fp32[(a.runtime, a.target)] for a in artifacts if (a.runtime, a.target) in fp32}


def compare_with_fp32(artifacts: Sequence[ArtifactResult]) -> list[ArtifactResult]:
    """Every artifact with its speed-up versus fp32 in the same runtime, marked and noted when it is slower, and
    noted when it is a quantized variant that stores under a tenth of its weights as int8."""
    fp32 = fp32_references(artifacts)
    compared = []
    for a in artifacts:
        reference = fp32.get(a.name)
        gain = timing.speedup(timed_runs(a.latency), timed_runs(reference.latency)) if reference else None
        slower = gain is not None and slower_than_fp32(gain)
        notes = [*a.notes]
        if slower:
            notes.append(f"slower than fp32: median {a.latency.p50_ms:.3f} ms vs {reference.latency.p50_ms:.3f} ms "
                         f"({reference.name}), speed-up {gain.text()}")
        if a.fraction_quantized is not None and a.fraction_quantized < LITTLE_QUANTIZED:
            notes.append(f"only {a.fraction_quantized:.0%} of the weights are stored as int8: "
                         "the variant stays essentially fp32")
        compared.append(a.model_copy(update={
            "speedup_vs_fp32": gain.value if gain else None,
            "speedup_interval": [gain.low, gain.high] if gain else None,
            "slower_than_fp32": slower, "notes": notes}))
    return compared


def misses(artifact: ArtifactResult, slo: SLO, metric: Metric = "top1") -> tuple[str, ...]:
    """The SLOs an artifact misses, in words; whatever its role (under auto the baseline is a candidate too)."""
    return tuple(_in_words(v) for v in artifact_violations(artifact, slo, metric))


def _in_words(v: SLOViolation) -> str:
    if v.slo == "accuracyDrop":
        return f"drop {v.measured:.2f} pt > {v.limit:g}"
    if v.slo == "fidelityCosine":
        return f"cosine {v.measured:.4f} < {v.limit:g}"
    if v.slo == "fidelitySnr":
        return f"SNR {v.measured:.1f} dB < {v.limit:g} dB"
    if v.slo == "latencyP95":
        return f"p95 {v.measured:.3f} ms > SLO {v.limit:g} ms"
    if v.slo == "size":
        return f"size {size_text(v.measured)} > {size_text(v.limit)}"
    return v.message.removeprefix(f"{v.artifact}: ")  # an SLO this module has no short form for


def gate(artifacts: Sequence[ArtifactResult], failures: Sequence[TargetFailure], choices: Sequence[TargetChoice],
         slo: SLO, metric: Metric = "top1") -> SLOVerdict:
    """The SLO verdict once the targets have chosen: a candidate an `auto` target passed over (for missing an
    SLO, or failing) is not shipped, so it is no violation; an `auto` target left without a candidate is one.
    Every other candidate artifact and failure counts as `evaluate_slo` says."""
    passed_over = {lost.artifact for c in choices if c.mode == AUTO for lost in c.losers}
    verdict = evaluate_slo([a for a in artifacts if a.name not in passed_over],
                           [f for f in failures if f.target not in passed_over], slo, metric)
    empty = [SLOViolation(artifact=c.target, slo="target",
                          message=f"{c.target}: no candidate meets the SLOs ("
                                  + "; ".join(f"{lost.artifact}: {lost.reason}" for lost in c.losers) + ")")
             for c in choices if c.mode == AUTO and c.chosen is None]
    violations = [*verdict.violations, *empty]
    return SLOVerdict(passed=not violations, violations=violations)


def rejudged(result: ResultManifest, spec: CompressedModelSpec) -> ResultManifest:
    """The result with its choices and verdict made again under the spec's targets and SLOs, which may have
    changed since it was written (changing the SLOs does not recompress): what the status shows and what
    publishing ships."""
    metric = result.baseline.metric
    choices = choose_targets(result.artifacts, result.failures, spec.targets, spec.slo, metric)
    return result.model_copy(update={"choices": choices,
                                     "verdict": gate(result.artifacts, result.failures, choices, spec.slo, metric)})


def triton_artifact(result: ResultManifest, precision: str) -> str | None:
    """The ONNX artifact Triton serves: the one `precision` names, or under auto the result's choice."""
    if precision != AUTO:
        return onnx_name(precision)
    return next((c.chosen for c in result.choices if c.target == TRITON), None)


def summary(choices: Sequence[TargetChoice]) -> str:
    """One line for `kubectl get`: `triton=onnx-fp32 phones=ncnn-fp16-phones`."""
    return " ".join(f"{c.target}={c.chosen or 'none'}" for c in choices)


def size_text(n: float) -> str:
    if n < 1024:
        return f"{n:.0f} B"
    return f"{n / 1024:.1f} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.1f} MiB"
