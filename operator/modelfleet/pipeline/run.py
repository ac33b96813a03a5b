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

from modelfleet.api.compressedmodel import CompressedModel, EdgeRuntime, EdgeTarget, Precision, SourceFormat
from modelfleet.api.result import (ArtifactResult, BaselineResult, LatencyResult, MixedPrecisionResult, ResultManifest,
                                   SourceResult, TargetFailure)
from modelfleet.domain.choice import choose_targets, compare_with_fp32, edge_name, edge_precisions, gate
from modelfleet.errors import InvalidManifest, ModelfleetError, UnsupportedModel, first_line
from modelfleet.gate import quality_violations
from modelfleet.pipeline import convert, dataset, fidelity, measure, mixed, quantize, source
from modelfleet.pipeline.signature import SMOKE_FILE, SMOKE_SAMPLES, onnx_signature, write_smoke
from modelfleet.runtimes import NcnnRunner, OnnxRuntimeRunner, Runner, TfliteRunner
from modelfleet.pipeline.tradeoff import TRADEOFF_FILE, plot_tradeoff
from modelfleet.pipeline.weights import fraction_quantized
from modelfleet.progress import Progress
from modelfleet.store import atomic_write_text, fetch, sha256_file

RESULT_FILE = "result.json"
MIXED, MIXED_FROM = "onnx-int8-mixed", "onnx-int8-static"
BASELINE = "onnx-fp32"
SOURCE_REFERENCE = "source"  # the baseline's name when the ONNX export failed and torch runs the source


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
    notes: list[str] = field(default_factory=list)
    mixed: MixedPrecisionResult | None = None


@dataclass
class Outcome:
    built: list[Built] = field(default_factory=list)
    failures: list[TargetFailure] = field(default_factory=list)

    def attempt(self, target: str, stage: str, build: Callable[[], Built | None]) -> None:
        """Run one variant's build (None: nothing to build); its failure is recorded and the other variants go on."""
        try:
            built = build()
            if built:
                self.built.append(built)
        except ModelfleetError as e:
            self.failures.append(TargetFailure(target=target, stage=stage, reason=e.reason, message=str(e),
                                               operator=getattr(e, "operator", None)))
        except Exception as e:  # a converter's own bug must not sink the other targets
            self.failures.append(TargetFailure(target=target, stage=stage, reason="ConversionFailed",
                                               message=f"{type(e).__name__}: {first_line(e)}"))


def compress(model: CompressedModel, output: Path, base_dir: Path, progress: Progress) -> ResultManifest:
    spec = model.spec
    specs = spec.source.inputs
    started = time.monotonic()
    staging = output / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        progress.step("fetch", spec.source.uri)
        source_path = fetch(spec.source.uri, staging / "download", base_dir)
        loaded = source.load(spec.source, source_path)
        progress.step("fetch", f"{spec.source.format} source ok, sha256 {loaded.sha256[:12]}…")
        metric = spec.dataset.metric
        calibration = dataset.load_npz(fetch(spec.dataset.calibration.uri, staging / "download", base_dir),
                                       spec.dataset.calibration.uri, specs, need_labels=False)
        evaluation = dataset.load_npz(fetch(spec.dataset.evaluation.uri, staging / "download", base_dir),
                                      spec.dataset.evaluation.uri, specs, need_labels=metric == "top1")
        progress.step("data", f"{len(calibration)} calibration, {len(evaluation)} evaluation samples")

        settings = measure.BenchmarkSettings(spec.benchmark.threads, spec.benchmark.warmup_runs, spec.benchmark.runs)
        outcome = Outcome()
        notes: list[str] = []
        results: list[ArtifactResult] = []
        try:
            baseline, source_opset = _build_baseline(spec, loaded, staging, progress, notes)
        except UnsupportedModel as e:
            if e.reason != source.EXPORT_FAILED:
                raise
            # The edge converters read torch (litert-torch) or TorchScript (pnnx) themselves.
            baseline = source_opset = None
            outcome.failures += _onnx_failures(spec, e)
            notes.append(f"no ONNX artifact: {e}; the torch source, run in torch, is the reference")
            progress.step("export", notes[-1])
        evaluated: list[Evaluated] = []
        if baseline:
            # Evaluated before any variant is built: labels that do not fit the model stop the run here.
            base, reference, baseline_accuracy = _evaluate_baseline(
                baseline, evaluation, settings, spec.dataset.evaluation.uri,
                fp32_requested=Precision.fp32 in spec.compression.precisions)
            evaluated.append(base)
            batch = onnx_signature(baseline.files[0]).inputs[0].shape
            fixed_batch = batch[0] if evaluation.inputs.stackable and batch and batch[0] > 0 else None
            pnnx_input = fp32_onnx = baseline.files[0]
            for precision in dict.fromkeys(spec.compression.precisions):
                if precision == Precision.fp32:
                    continue
                progress.step("quantize", f"onnx {precision}")
                outcome.attempt(f"onnx-{precision}", "quantize",
                                lambda p=Precision(precision): _build_onnx_variant(p, spec, fp32_onnx, calibration,
                                                                                   staging, fixed_batch))
            if spec.compression.mixed_precision.enabled and any(b.name == MIXED_FROM for b in outcome.built):
                outcome.attempt(MIXED, "quantize", lambda: _build_mixed(
                    spec, fp32_onnx, staging, calibration, evaluation, reference, baseline_accuracy, fixed_batch,
                    settings.threads, progress))
        else:
            reference, baseline_accuracy = _torch_reference(loaded, specs, evaluation, spec)
            pnnx_input = loaded.path if loaded.format == SourceFormat.torchscript else None
        edge_calibration = calibration.inputs.take(spec.compression.calibration_samples)  # int8 edge artifacts
        for target in spec.targets.edge:
            for precision in edge_precisions(target.runtime, target.precision):  # auto: every one, to choose from
                progress.step("convert", f"{target.runtime} {precision} for edge target {target.name}")
                outcome.attempt(edge_name(target.runtime, precision, target.name), "convert",
                                lambda t=target, p=precision: _build_edge(t, p, loaded, pnnx_input, specs, staging,
                                                                          progress, edge_calibration, len(reference)))

        for built in outcome.built:
            try:
                evaluated.append(_evaluate(built, evaluation, settings.threads))
            except Exception as e:
                outcome.failures.append(TargetFailure(target=built.name, stage="evaluate", reason="EvaluationFailed",
                                                      message=f"{type(e).__name__}: {first_line(e)}"))
        latencies = _time_interleaved(evaluated, evaluation.inputs, settings, progress, outcome.failures)
        output_names = [t.name for t in onnx_signature(baseline.files[0]).outputs] if baseline else None
        for item in evaluated:
            if item.built.name not in latencies:
                continue
            try:  # outputs that cannot be compared with the reference fail this artifact, not the run
                result = _artifact_result(item, evaluation, reference, baseline_accuracy, latencies[item.built.name],
                                      output_names)
            except Exception as e:
                outcome.failures.append(TargetFailure(target=item.built.name, stage="evaluate",
                                                      reason="EvaluationFailed",
                                                      message=f"{type(e).__name__}: {first_line(e)}"))
                continue
            results.append(result)
            progress.step("evaluate", f"{item.built.name}: {_quality(result)}, median {result.latency.p50_ms:.3f} ms, "
                                      f"p95 {result.latency.p95_ms:.3f} ms"
                                      + "".join(f"; {note}" for note in item.built.notes))
        for failure in outcome.failures:
            progress.step("failed", f"{failure.target} ({failure.stage}): {failure.message}")

        results = compare_with_fp32(results)
        choices = choose_targets(results, outcome.failures, spec.targets, spec.slo, spec.dataset.metric)
        verdict = gate(results, outcome.failures, choices, spec.slo, spec.dataset.metric)
        for choice in choices:
            progress.step("choose", f"{choice.target}: {choice.chosen or 'nothing qualifies'}"
                          + "".join(f"; {lost.artifact}: {lost.reason}" for lost in choice.losers))
        manifest = ResultManifest(
            model_name=model.metadata.name,
            generation=model.metadata.generation,
            source=SourceResult(uri=spec.source.uri, format=spec.source.format, sha256=loaded.sha256,
                                opset=source_opset),
            baseline=BaselineResult(artifact=BASELINE if baseline else SOURCE_REFERENCE, metric=metric,
                                    accuracy=baseline_accuracy, evaluated_samples=len(evaluation),
                                    opset=_graph_opset(baseline.files[0]) if baseline else None),
            artifacts=results,
            failures=outcome.failures,
            verdict=verdict,
            notes=notes,
            choices=choices,
            tradeoff=TRADEOFF_FILE if results else None,  # nothing to plot when every artifact failed
            duration_seconds=round(time.monotonic() - started, 3),
        )
        if results:
            plot_tradeoff(manifest, spec.slo, staging / TRADEOFF_FILE)
        _publish(staging, output, [r.name for r in results])
        if results:
            (staging / TRADEOFF_FILE).replace(output / TRADEOFF_FILE)
        else:
            (output / TRADEOFF_FILE).unlink(missing_ok=True)  # a previous run's picture would tell another story
        atomic_write_text(output / RESULT_FILE, manifest.model_dump_json(by_alias=True, exclude_none=True, indent=2))
        progress.step("done", f"{len(results)} artifacts, {len(outcome.failures)} failures, "
                              f"SLO {'met' if verdict.passed else 'missed'} -> {output / RESULT_FILE}")
        return manifest
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _build_baseline(spec, loaded, staging: Path, progress: Progress, notes: list[str]) -> tuple[Built, int | None]:
    """The optimized fp32 ONNX model, and an ONNX source's own opset; what was converted goes to `notes`."""
    directory = staging / BASELINE
    directory.mkdir()
    exported = staging / "exported.onnx"
    opset = spec.compression.opset
    if loaded.format != SourceFormat.onnx:
        progress.step("export", f"{spec.source.format} -> ONNX opset {opset}")
    source_opset = source.export_onnx(spec.source, loaded, exported, opset, staging / "export.log")
    if source_opset is not None and source_opset < opset:
        notes.append(f"source opset {source_opset} -> {opset} (onnx version converter)")
        progress.step("export", notes[-1])
    elif source_opset is not None:
        progress.step("export", f"onnx source at opset {source_opset}, kept")
    progress.step("optimize", "onnxslim")
    model = directory / "model.onnx"
    quantize.optimize(exported, model)
    stackable = _stackable(spec)
    return (Built(BASELINE, "onnxruntime", "fp32", "baseline", [model],
                  lambda threads: OnnxRuntimeRunner(model, threads, stackable)), source_opset)


def _stackable(spec) -> bool:
    """Whether one call may take several samples: every input has a batch axis."""
    return all(i.batched for i in spec.source.inputs)


def _onnx_failures(spec, error: UnsupportedModel) -> list[TargetFailure]:
    """Every ONNX artifact, and Triton which serves one, fails with the exporter's reason."""
    names = [BASELINE, *(f"onnx-{p}" for p in dict.fromkeys(spec.compression.precisions) if p != Precision.fp32)]
    if spec.targets.triton:
        names.append("triton")
    return [TargetFailure(target=name, stage="export", reason=error.reason, message=str(error)) for name in names]


def _torch_reference(loaded, specs, evaluation, spec) -> tuple[list[np.ndarray], float | None]:
    """The source's own outputs in torch, and its accuracy (metric top1): the reference without an ONNX baseline."""
    reference = measure.predict(source.TorchRunner(loaded, specs), evaluation.inputs)
    if spec.dataset.metric != "top1":
        return reference, None
    dataset.check_labels_fit(evaluation, spec.dataset.evaluation.uri, reference[0].shape[1])
    return reference, round(measure.top1_accuracy(reference, evaluation.labels), 4)


def _graph_opset(model: Path) -> int:
    import onnx

    return source.onnx_opset(onnx.load(str(model), load_external_data=False))


def _quality(result: ArtifactResult) -> str:
    if result.accuracy is None:
        return f"cosine {result.fidelity.cosine:.6f}, SNR {result.fidelity.snr_db:.1f} dB"
    return f"accuracy {result.accuracy:.2f}% (drop {result.accuracy_drop_points:+.2f})"


def _build_onnx_variant(precision: Precision, spec, fp32: Path, calibration, staging: Path,
                        fixed_batch: int | None) -> Built:
    name = f"onnx-{precision.value}"
    directory = staging / name
    directory.mkdir()
    model = directory / "model.onnx"
    notes = quantize.make_variant(precision, fp32, model, spec.compression, calibration.inputs, staging, fixed_batch)
    stackable = _stackable(spec)
    return Built(name, "onnxruntime", precision.value, "candidate", [model],
                 lambda threads: OnnxRuntimeRunner(model, threads, stackable), notes=notes)


def _build_mixed(spec, fp32: Path, staging: Path, calibration, evaluation, reference: list[np.ndarray],
                 baseline_accuracy: float | None, fixed_batch: int | None, threads: int,
                 progress: Progress) -> Built | None:
    """int8-static with its most sensitive nodes kept in float, when int8-static misses the quality SLOs (else
    None: there is nothing to mix)."""
    prepared, _ = quantize._prepared(fp32, staging)
    metric, slo, budget = spec.dataset.metric, spec.slo, spec.compression.mixed_precision
    stackable = _stackable(spec)

    def build(order: str, float_nodes: list[str]) -> mixed.Trial:
        path = staging / f"{MIXED}.{order}.{len(float_nodes)}.onnx"
        quantize.int8_static_keeping_float(prepared, path, spec.compression, float_nodes)
        outputs = measure.predict(OnnxRuntimeRunner(path, threads, stackable), evaluation.inputs)
        quality = fidelity.fidelity(outputs, reference)
        drop = None if baseline_accuracy is None else baseline_accuracy - measure.top1_accuracy(outputs, evaluation.labels)
        misses = [v.message for v in quality_violations(MIXED, quality, drop, slo, metric)]
        words = (f"cosine {quality.cosine:.4f}, SNR {quality.snr_db:.1f} dB" if drop is None
                 else f"drop {drop:.2f} pt")
        progress.step("quantize", f"{MIXED}: {len(float_nodes)} nodes in float ({order} order): {words}"
                                  + (" (misses the SLOs)" if misses else " (meets the SLOs)"))
        return mixed.Trial(order, float_nodes, path, misses, words, path.stat().st_size)

    all_int8 = build("all-int8", [])
    if not all_int8.misses:
        return None
    feeds = [feed for feed, _ in calibration.inputs.take(mixed.SENSITIVITY_SAMPLES).feeds(
        fixed_batch or 1, exact=fixed_batch is not None)]
    ranked = mixed.sensitivity(prepared, all_int8.model, feeds)
    progress.step("quantize", f"{MIXED}: {len(ranked)} quantized nodes ranked; most sensitive: "
                              + ", ".join(f"{s.node} ({s.op_type}, adds {s.added:.2%})" for s in ranked[:3]))
    in_graph_order = mixed.graph_order(all_int8.model)
    chosen, trials = mixed.search({"sensitivity": [s.node for s in ranked], "graph": in_graph_order},
                                  build, budget.max_trials, budget.max_seconds)
    if chosen is None:
        raise UnsupportedModel(mixed.why_not(ranked, [all_int8, *trials]), reason="MixedPrecisionMissed")
    quantizable = len(in_graph_order)
    directory = staging / MIXED
    directory.mkdir()
    model = directory / "model.onnx"
    shutil.copyfile(chosen.model, model)
    quantize.compact(model)
    note = (f"int8-static with {len(chosen.float_nodes)} of {quantizable} quantized nodes kept in float "
            f"({'the most sensitive' if chosen.order == 'sensitivity' else 'the first from the input'}; "
            f"{len(trials) + 1} builds)")
    return Built(MIXED, "onnxruntime", "int8-mixed", "candidate", [model],
                 lambda threads: OnnxRuntimeRunner(model, threads, stackable), notes=[note],
                 mixed=mixed.summary(quantizable, ranked, chosen, [all_int8, *trials]))


def _build_edge(target: EdgeTarget, precision: str, loaded, pnnx_input: Path | None, specs, staging: Path,
                progress: Progress, calibration: dataset.Inputs, outputs: int) -> Built:
    """`pnnx_input`: the fp32 ONNX model, or a TorchScript source when its ONNX export failed. int8 is quantized
    from the fp32 conversion with `calibration`. Edge artifacts take one input and give one output."""
    calibration = calibration.only()  # a named reason (MultipleInputs) for the others, before converting
    if outputs != 1:
        raise UnsupportedModel(f"the edge runtimes' runners and bundles carry one output; the model has {outputs}",
                               reason="MultipleOutputs")
    input_spec = specs[0]
    name = edge_name(target.runtime, precision, target.name)
    directory = staging / name
    directory.mkdir()
    if target.runtime == EdgeRuntime.ncnn:
        fp16 = precision == "fp16"
        if pnnx_input is None:
            raise UnsupportedModel("pnnx reads ONNX or TorchScript: the ONNX export failed and the source is an "
                                   "ExportedProgram", reason=source.EXPORT_FAILED)
        param, weights = convert.to_ncnn(pnnx_input, input_spec, fp16, staging / f"{name}.work")
        if precision == "int8":
            param, weights = convert.to_ncnn_int8(param, weights, calibration, staging / f"{name}.work")
        files = [directory / "model.ncnn.param", directory / "model.ncnn.bin"]
        param.replace(files[0])
        weights.replace(files[1])
        return Built(name, "ncnn", precision, "candidate", files,
                     lambda threads: NcnnRunner(files[0], files[1], threads, fp16), target.name)
    model = directory / "model.tflite"
    converted = staging / f"tflite-{target.name}.fp32.tflite"  # converted once per target (auto builds fp32 and int8)
    if not converted.is_file():
        convert.to_tflite(loaded, input_spec, converted, staging / f"tflite-{target.name}.log", progress)
    if precision == "int8":
        convert.to_tflite_int8(converted, calibration, model, staging / f"{name}.log")
    else:
        shutil.copyfile(converted, model)
    return Built(name, "tflite", precision, "candidate", [model],
                 lambda threads: TfliteRunner(model, threads), target.name)


@dataclass
class Evaluated:
    """A built artifact, open in its runtime, with its outputs on the evaluation set; timed later."""

    built: Built
    runner: Runner
    outputs: list[np.ndarray]  # per output, the samples along the first axis
    role: str


def _evaluate_baseline(baseline: Built, evaluation, settings, uri: str, fp32_requested: bool):
    """The baseline's evaluation, the reference outputs, and its accuracy (metric top1; else None)."""
    item = _evaluate(baseline, evaluation, settings.threads)
    accuracy = None
    if len(evaluation.labels):  # metric top1 (fidelity reads no labels)
        dataset.check_labels_fit(evaluation, uri, item.outputs[0].shape[1])
        accuracy = round(measure.top1_accuracy(item.outputs, evaluation.labels), 4)
    if fp32_requested:  # the user ships fp32 too, so it is held to the SLOs like any candidate
        item.role = "candidate"
    return item, item.outputs, accuracy


def _evaluate(built: Built, evaluation, threads: int) -> Evaluated:
    runner = built.open_runner(threads)
    return Evaluated(built, runner, measure.predict(runner, evaluation.inputs), built.role)


def _time_interleaved(evaluated: list[Evaluated], inputs: dataset.Inputs, settings, progress: Progress,
                      failures: list[TargetFailure]) -> dict[str, LatencyResult]:
    """Latency of every artifact, those of one runtime and target timed in the same rounds; an artifact whose
    runtime fails while timed is recorded as a failure."""
    groups: dict[tuple[str, str | None], list[Evaluated]] = {}
    for item in evaluated:
        groups.setdefault((item.built.runtime, item.built.target), []).append(item)
    latencies = {}
    for (runtime, target), items in groups.items():
        progress.step("benchmark", f"{runtime}{f' ({target})' if target else ''}: {len(items)} artifacts, "
                                   f"{settings.runs} interleaved rounds")
        for item, latency in zip(items, measure.interleaved_latency([i.runner for i in items], inputs, settings)):
            if isinstance(latency, Exception):
                failures.append(TargetFailure(target=item.built.name, stage="benchmark", reason="EvaluationFailed",
                                              message=f"{type(latency).__name__}: {first_line(latency)}"))
            else:
                latencies[item.built.name] = latency
    return latencies


def _artifact_result(item: Evaluated, evaluation, reference, baseline_accuracy, latency: LatencyResult,
                     output_names: list[str] | None):
    """`baseline_accuracy` is None under metric fidelity: no accuracy is measured then."""
    built, runner, outputs = item.built, item.runner, item.outputs
    accuracy = drop = None
    if baseline_accuracy is not None:
        accuracy = measure.top1_accuracy(outputs, evaluation.labels)
        drop = round(baseline_accuracy - accuracy, 4) + 0.0  # + 0.0 turns -0.0 into 0.0
        accuracy = round(accuracy, 4)
    signature = smoke = None
    if built.runtime == "onnxruntime":  # what publishing to Triton needs to configure and verify it
        signature = onnx_signature(built.files[0])
        # One sample a call, as the smoke test sends them to Triton: int8-dynamic's activation scales
        # depend on the whole batch, so outputs of a 64-sample batch would not match.
        smoke_outputs = outputs if runner.fixed_batch else _one_by_one(runner, evaluation.inputs, SMOKE_SAMPLES)
        write_smoke(built.files[0].parent / SMOKE_FILE, evaluation.inputs, smoke_outputs,
                    runner.batch_size if runner.fixed_batch else None)
        smoke = f"{built.name}/{SMOKE_FILE}"
    return ArtifactResult(
        name=built.name, runtime=built.runtime, precision=built.precision, role=item.role, target=built.target,
        files=[f"{built.name}/{f.name}" for f in built.files],
        sha256=_artifact_digest(built.files),
        size_bytes=sum(f.stat().st_size for f in built.files),
        accuracy=accuracy,
        accuracy_drop_points=drop,
        agreement=measure.agreement(outputs, reference),
        fidelity=fidelity.fidelity(outputs, reference, output_names),
        notes=built.notes,
        mixed_precision=built.mixed,
        latency=latency,
        signature=signature,
        smoke=smoke,
        fraction_quantized=(round(fraction_quantized(built.files[0]), 4)
                            if built.runtime == "onnxruntime" and built.precision.startswith("int8") else None),
    )


def _one_by_one(runner: Runner, inputs: dataset.Inputs, count: int) -> list[np.ndarray]:
    """Every output of the first `count` samples, one sample a call, each flattened."""
    calls = [runner.run(inputs.feed(i, i + 1)) for i in range(min(count, len(inputs)))]
    return [np.stack([np.asarray(call[k]).reshape(-1) for call in calls]) for k in range(len(calls[0]))]


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
