"""Accuracy, agreement with the fp32 reference, and latency of a runner."""

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from modelfleet.api.result import AgreementResult, LatencyResult
from modelfleet.pipeline.dataset import batches, padded
from modelfleet.runtimes import Runner


def predict(runner: Runner, inputs: np.ndarray) -> np.ndarray:
    """Outputs for every sample, fed in the largest batches the runner takes (exactly its size when
    the model's batch is fixed: the padding's outputs are dropped)."""
    chunks = [runner.run(batch)[:real] for batch, real in batches(inputs, runner.batch_size, runner.fixed_batch)]
    return np.concatenate(chunks).reshape(len(inputs), -1).astype(np.float32)


def top1_accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(outputs.argmax(axis=1) == labels) * 100.0)


def agreement(outputs: np.ndarray, reference: np.ndarray) -> AgreementResult:
    return AgreementResult(
        top1=float(np.mean(outputs.argmax(axis=1) == reference.argmax(axis=1)) * 100.0),
        max_abs_diff=float(np.max(np.abs(outputs - reference))),
    )


@dataclass(frozen=True)
class BenchmarkSettings:
    threads: int
    warmup_runs: int
    runs: int


def interleaved_latency(runners: Sequence[Runner], sample: np.ndarray,
                        settings: BenchmarkSettings) -> list[LatencyResult | Exception]:
    """Latency of several runners of one runtime, timed interleaved: `settings.runs` rounds, each timing every
    runner once, the one that goes first rotating, so load that comes and goes on a shared node hits all
    alike. Calls take one sample, or the whole batch a model whose batch dimension is fixed takes (copies of
    the sample; each runner owns its thread count). A runner that raises gets its exception and leaves the
    rounds; the others go on."""
    batches = [padded(sample[None, ...], r.batch_size if r.fixed_batch else 1) for r in runners]
    failed: dict[int, Exception] = {}

    def call(i: int) -> float:
        start = time.perf_counter()
        try:
            runners[i].run(batches[i])
        except Exception as e:  # a runtime's own error: this runner is out, the others are still timed
            failed[i] = e
        return time.perf_counter() - start

    for _ in range(settings.warmup_runs):
        for i in range(len(runners)):
            if i not in failed:
                call(i)
    timings = np.zeros((settings.runs, len(runners)))
    for r in range(settings.runs):
        for k in range(len(runners)):
            i = (r + k) % len(runners)
            if i not in failed:
                timings[r, i] = call(i)
    return [failed.get(i) or _latency(timings[:, i], settings, len(batches[i])) for i in range(len(runners))]


def _latency(seconds: np.ndarray, settings: BenchmarkSettings, batch_size: int) -> LatencyResult:
    ms = seconds * 1000
    return LatencyResult(
        p50_ms=float(np.percentile(ms, 50)),
        p95_ms=float(np.percentile(ms, 95)),
        runs=settings.runs,
        threads=settings.threads,
        batch_size=batch_size,
        samples_ms=[round(float(t), 5) for t in ms],
    )
