"""The whole pipeline for one CompressedModel, writing artifacts and result.json into a directory.

Everything is built in `<output>/.staging` and moved into place only when the run finishes,
so a failed run leaves the previous run's finished artifacts untouched.
"""

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from modelfleet.api.compressedmodel import CompressedModel, EdgeRuntime, EdgeTarget, Precision
from modelfleet.api.result import ArtifactResult, BaselineResult, ResultManifest, SourceResult, TargetFailure
from modelfleet.errors import InvalidManifest, ModelfleetError, first_line
from modelfleet.gate import evaluate_slo
from modelfleet.pipeline import convert, dataset, measure, quantize, source
from modelfleet.pipeline.signature import SMOKE_FILE, onnx_signature, write_smoke
from modelfleet.pipeline.runtimes import NcnnRunner, OnnxRuntimeRunner, Runner, TfliteRunner
from modelfleet.progress import Progress
from modelfleet.store import atomic_write_text, fetch, sha256_file

RESULT_FILE = "result.json"
BASELINE = "onnx-fp32"


@dataclass
class Built:
    """An artifact on disk, before it is measured."""

    name: str
    runtime: str
    precision: str
    role: str
    files: list[Path]
    open_runner: Callable[[int], Runner]
    target: str | None = None


@dataclass
class Outcome:
    built: list[Built] = field(default_factory=list)
    failures: list[TargetFailure] = field(default_factory=list)

    def attempt(self, target: str, stage: str, build: Callable[[], Built]) -> None:
        """Run one variant's build; its failure is recorded and the other variants go on."""
        try:
            self.built.append(build())
        except ModelfleetError as e:
            self.failures.append(TargetFailure(target=target, stage=stage, reason=e.reason, message=str(e),
                                               operator=getattr(e, "operator", None)))
        except Exception as e:  # a converter's own bug must not sink the other targets
            self.failures.append(TargetFailure(target=target, stage=stage, reason="ConversionFailed",
                                               message=f"{type(e).__name__}: {first_line(e)}"))


def compress(model: CompressedModel, output: Path, base_dir: Path, progress: Progress) -> ResultManifest:
    spec = model.spec
    if len(spec.source.inputs) != 1:
        raise InvalidManifest("evaluation supports single-input models; the spec declares "
                              f"{len(spec.source.inputs)} inputs")
    input_spec = spec.source.inputs[0]
    started = time.monotonic()
    staging = output / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        progress.step("fetch", spec.source.uri)
        source_path = fetch(spec.source.uri, staging / "download", base_dir)
        loaded = source.load(spec.source, source_path)
        progress.step("fetch", f"{spec.source.format} source ok, sha256 {loaded.sha256[:12]}…")
        calibration = dataset.load_npz(fetch(spec.dataset.calibration.uri, staging / "download", base_dir),
                                       spec.dataset.calibration.uri, input_spec, need_labels=False)
        evaluation = dataset.load_npz(fetch(spec.dataset.evaluation.uri, staging / "download", base_dir),
                                      spec.dataset.evaluation.uri, input_spec, need_labels=True)
        progress.step("data", f"{len(calibration)} calibration, {len(evaluation)} evaluation samples")

        baseline = _build_baseline(spec, loaded, staging, progress)
        # Measured before any variant is built: labels that do not fit the model stop the run here.
        settings = measure.BenchmarkSettings(spec.benchmark.threads, spec.benchmark.warmup_runs, spec.benchmark.runs)
        baseline_result, reference = _measure_baseline(baseline, evaluation, settings, spec.dataset.evaluation.uri,
                                                       fp32_requested=Precision.fp32 in spec.compression.precisions)
        progress.step("evaluate", f"{BASELINE}: accuracy {baseline_result.accuracy:.2f}%, "
                                  f"p95 {baseline_result.latency.p95_ms:.3f} ms")
        batch = baseline_result.signature.inputs[0].shape[0]
        fixed_batch = batch if batch > 0 else None

        outcome = Outcome()
        fp32_onnx = baseline.files[0]
        for precision in dict.fromkeys(spec.compression.precisions):
            if precision == Precision.fp32:
                continue
            progress.step("quantize", f"onnx {precision}")
            outcome.attempt(f"onnx-{precision}", "quantize",
                            lambda p=Precision(precision): _build_onnx_variant(p, spec, fp32_onnx, calibration, input_spec,
                                                                               staging, fixed_batch))
        for target in spec.targets.edge:
            progress.step("convert", f"{target.runtime} {target.precision} for edge target {target.name}")
            outcome.attempt(f"{target.runtime}/{target.name}", "convert",
                            lambda t=target: _build_edge(t, loaded, fp32_onnx, input_spec, staging, progress))

        results = [baseline_result]
        for built in outcome.built:
            try:
                result = _measure(built, evaluation, reference, baseline_result.accuracy, settings)
            except Exception as e:
                outcome.failures.append(TargetFailure(target=built.name, stage="evaluate", reason="EvaluationFailed",
                                                      message=f"{type(e).__name__}: {first_line(e)}"))
                continue
            results.append(result)
            progress.step("evaluate", f"{built.name}: accuracy {result.accuracy:.2f}% "
                                      f"(drop {result.accuracy_drop_points:+.2f}), p95 {result.latency.p95_ms:.3f} ms")
        for failure in outcome.failures:
            progress.step("failed", f"{failure.target} ({failure.stage}): {failure.message}")

        verdict = evaluate_slo(results, outcome.failures, spec.slo)
        manifest = ResultManifest(
            model_name=model.metadata.name,
            generation=model.metadata.generation,
            source=SourceResult(uri=spec.source.uri, format=spec.source.format, sha256=loaded.sha256),
            baseline=BaselineResult(artifact=BASELINE, accuracy=baseline_result.accuracy,
                                    evaluated_samples=len(evaluation)),
            artifacts=results,
            failures=outcome.failures,
            verdict=verdict,
            duration_seconds=round(time.monotonic() - started, 3),
        )
        _publish(staging, output, [r.name for r in results])
        atomic_write_text(output / RESULT_FILE, manifest.model_dump_json(by_alias=True, exclude_none=True, indent=2))
        progress.step("done", f"{len(results)} artifacts, {len(outcome.failures)} failures, "
                              f"SLO {'met' if verdict.passed else 'missed'} -> {output / RESULT_FILE}")
        return manifest
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _build_baseline(spec, loaded, staging: Path, progress: Progress) -> Built:
    directory = staging / BASELINE
    directory.mkdir()
    exported = staging / "exported.onnx"
    progress.step("export", f"{spec.source.format} -> ONNX opset {spec.compression.opset}")
    source.export_onnx(spec.source, loaded, exported, spec.compression.opset, staging / "export.log")
    progress.step("optimize", "onnxslim")
    model = directory / "model.onnx"
    quantize.optimize(exported, model)
    return Built(BASELINE, "onnxruntime", "fp32", "baseline", [model], lambda threads: OnnxRuntimeRunner(model, threads))


def _build_onnx_variant(precision: Precision, spec, fp32: Path, calibration, input_spec, staging: Path,
                        fixed_batch: int | None) -> Built:
    name = f"onnx-{precision.value}"
    directory = staging / name
    directory.mkdir()
    model = directory / "model.onnx"
    quantize.make_variant(precision, fp32, model, spec.compression, calibration.inputs, input_spec.name, staging,
                          fixed_batch)
    return Built(name, "onnxruntime", precision.value, "candidate", [model],
                 lambda threads: OnnxRuntimeRunner(model, threads))


def _build_edge(target: EdgeTarget, loaded, fp32: Path, input_spec, staging: Path, progress: Progress) -> Built:
    name = f"{target.runtime}-{target.precision}-{target.name}"
    directory = staging / name
    directory.mkdir()
    if target.runtime == EdgeRuntime.ncnn:
        fp16 = target.precision == "fp16"
        param, weights = convert.to_ncnn(fp32, input_spec, fp16, staging / f"{name}.work")
        files = [directory / "model.ncnn.param", directory / "model.ncnn.bin"]
        param.replace(files[0])
        weights.replace(files[1])
        return Built(name, "ncnn", target.precision, "candidate", files,
                     lambda threads: NcnnRunner(files[0], files[1], threads, fp16), target.name)
    model = directory / "model.tflite"
    convert.to_tflite(loaded, input_spec, model, staging / f"{name}.log", progress)
    return Built(name, "tflite", target.precision, "candidate", [model],
                 lambda threads: TfliteRunner(model, threads), target.name)


def _measure_baseline(baseline: Built, evaluation, settings, uri: str, fp32_requested: bool):
    runner = baseline.open_runner(settings.threads)
    reference = measure.predict(runner, evaluation.inputs)
    dataset.check_labels_fit(evaluation, uri, reference.shape[1])
    accuracy = measure.top1_accuracy(reference, evaluation.labels)
    result = _artifact_result(baseline, runner, evaluation, reference, reference, accuracy, settings)
    if fp32_requested:  # the user ships fp32 too, so it is held to the SLOs like any candidate
        result = result.model_copy(update={"role": "candidate"})
    return result, reference


def _measure(built: Built, evaluation, reference: np.ndarray, baseline_accuracy: float, settings) -> ArtifactResult:
    runner = built.open_runner(settings.threads)
    outputs = measure.predict(runner, evaluation.inputs)
    return _artifact_result(built, runner, evaluation, outputs, reference, baseline_accuracy, settings)


def _artifact_result(built: Built, runner: Runner, evaluation, outputs, reference, baseline_accuracy, settings):
    accuracy = measure.top1_accuracy(outputs, evaluation.labels)
    signature = smoke = None
    if built.runtime == "onnxruntime":  # what publishing to Triton needs to configure and verify it
        signature = onnx_signature(built.files[0])
        write_smoke(built.files[0].parent / SMOKE_FILE, evaluation.inputs, outputs,
                    runner.batch_size if runner.fixed_batch else None)
        smoke = f"{built.name}/{SMOKE_FILE}"
    return ArtifactResult(
        name=built.name, runtime=built.runtime, precision=built.precision, role=built.role, target=built.target,
        files=[f"{built.name}/{f.name}" for f in built.files],
        sha256=_artifact_digest(built.files),
        size_bytes=sum(f.stat().st_size for f in built.files),
        accuracy=round(accuracy, 4),
        accuracy_drop_points=round(baseline_accuracy - accuracy, 4) + 0.0,  # + 0.0 turns -0.0 into 0.0
        agreement=measure.agreement(outputs, reference),
        latency=measure.latency(runner, evaluation.inputs[0], settings),
        signature=signature,
        smoke=smoke,
    )


def _artifact_digest(files: list[Path]) -> str:
    if len(files) == 1:
        return sha256_file(files[0])
    import hashlib

    listing = "".join(f"{f.name} {sha256_file(f)}\n" for f in sorted(files))
    return hashlib.sha256(listing.encode()).hexdigest()


def _publish(staging: Path, output: Path, names: list[str]) -> None:
    """Swap each finished artifact directory into `output` (rename is atomic per directory)."""
    for name in names:
        new, final, old = staging / name, output / name, staging / f"{name}.previous"
        if final.exists():
            final.rename(old)
        new.rename(final)
        shutil.rmtree(old, ignore_errors=True)
