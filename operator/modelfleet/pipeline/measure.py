"""Accuracy, agreement with the fp32 reference, and latency of a runner."""

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from modelfleet.api.result import AgreementResult, LatencyResult
from modelfleet.pipeline.dataset import Inputs
from modelfleet.runtimes import Runner


def predict(runner: Runner, inputs: Inputs) -> list[np.ndarray]:
    """Every output, for every sample, one array per output with the samples along its first axis (each sample's
    output flattened), fed in the largest batches the runner takes (exactly its size when the model's batch is
    fixed: the padding's outputs are dropped; one sample a call when an input has no batch axis)."""
    per_call = [(runner.run(feed), real)
                for feed, real in inputs.feeds(runner.batch_size, runner.fixed_batch)]
    stacked = inputs.stackable
    return [np.concatenate([outputs[k][:real] if stacked else np.asarray(outputs[k])[None] for outputs, real in per_call])
            .reshape(len(inputs), -1).astype(np.float32) for k in range(len(per_call[0][0]))]


def top1_accuracy(outputs: list[np.ndarray], labels: np.ndarray) -> float:
    """Of the first output: the class scores."""
    return float(np.mean(outputs[0].argmax(axis=1) == labels) * 100.0)


def agreement(outputs: list[np.ndarray], reference: list[np.ndarray]) -> AgreementResult:
    """Top-1 agreement of the first output, and the largest difference in any output."""
    return AgreementResult(
        top1=float(np.mean(outputs[0].argmax(axis=1) == reference[0].argmax(axis=1)) * 100.0),
        max_abs_diff=max(float(np.max(np.abs(o - r))) for o, r in zip(outputs, reference, strict=True)),
    )


@dataclass(frozen=True)
class BenchmarkSettings:
    threads: int
    warmup_runs: int
    runs: int


def interleaved_latency(runners: Sequence[Runner], inputs: Inputs,
                        settings: BenchmarkSettings) -> list[LatencyResult | Exception]:
    """Latency of several runners of one runtime, timed interleaved: `settings.runs` rounds, each timing every
    runner once, the one that goes first rotating, so load that comes and goes on a shared node hits all
    alike. Calls take one sample, or the whole batch a model whose batch dimension is fixed takes (copies of
    the sample; each runner owns its thread count). A runner that raises gets its exception and leaves the
    rounds; the others go on."""
    feeds = [inputs.feed(0, 1, r.batch_size if r.fixed_batch else None) for r in runners]
    failed: dict[int, Exception] = {}

    def call(i: int) -> float:
        start = time.perf_counter()
        try:
            runners[i].run(feeds[i])
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
    return [failed.get(i) or _latency(timings[:, i], settings, runners[i].batch_size if runners[i].fixed_batch else 1)
            for i in range(len(runners))]


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
