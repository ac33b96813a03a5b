"""Accuracy, agreement with the fp32 reference, and latency of a runner."""

import time
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


def latency(runner: Runner, sample: np.ndarray, settings: BenchmarkSettings) -> LatencyResult:
    """p50/p95 after warm-up of calls with one sample, or with the whole batch a model whose batch
    dimension is fixed takes (copies of the sample; the runner owns its thread count)."""
    batch = padded(sample[None, ...], runner.batch_size if runner.fixed_batch else 1)
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
        batch_size=len(batch),
    )
