"""Accuracy, agreement with the fp32 reference, and latency of a runner."""

import time
from dataclasses import dataclass

import numpy as np

from modelfleet.api.result import AgreementResult, LatencyResult
from modelfleet.pipeline.runtimes import Runner


def predict(runner: Runner, inputs: np.ndarray) -> np.ndarray:
    """Outputs for every sample, fed in the largest batches the runner takes."""
    chunks = [runner.run(inputs[i : i + runner.batch_size]) for i in range(0, len(inputs), runner.batch_size)]
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


def latency(runner: Runner, sample: np.ndarray, settings: BenchmarkSettings) -> LatencyResult:
    """p50/p95 of single-batch calls after warm-up (the runner owns its thread count)."""
    batch = sample[None, ...]
    for _ in range(settings.warmup_runs):
        runner.run(batch)
    timings = np.empty(settings.runs)
    for i in range(settings.runs):
        start = time.perf_counter()
        runner.run(batch)
        timings[i] = time.perf_counter() - start
    return LatencyResult(
        p50_ms=float(np.percentile(timings, 50) * 1000),
        p95_ms=float(np.percentile(timings, 95) * 1000),
        runs=settings.runs,
        threads=settings.threads,
        batch_size=1,
    )
