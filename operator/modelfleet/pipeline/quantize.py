"""ONNX graph optimization and the quantized / half-precision variants."""

import contextlib
from pathlib import Path

import numpy as np

from modelfleet.api.compressedmodel import CalibrationMethod, Compression, Precision
from modelfleet.errors import UnsupportedModel, first_line
from modelfleet.pipeline.dataset import Inputs

_CALIBRATION_BATCH = 32  # most samples per calibration call when the model's batch dimension is dynamic
# What int8-static calibration may hold beyond the model and onnxruntime itself: half for one batch in the
# calibrating session, half for the chunk of samples whose tensors entropy and percentile keep until they are
# made into histograms. PaddleOCR's text recognizer computes 194 MiB of tensors per 48x320 sample: fed 32
# at a time and kept to the end, 32 samples took 6.4 to 6.5 GB with every method and 64 passed 12 GB; in
# this budget, 128 samples take 0.6 GB (minmax) and 0.4 GB (entropy, percentile) (bench/calibration_memory.py).
CALIBRATION_MEMORY_BYTES = 512 * 2**20


def optimize(src: Path, out: Path) -> None:
    """Simplify the graph (constant folding, fusions) with onnxslim; the result stays fp32."""
    import onnx
    import onnxslim

    model = onnxslim.slim(onnx.load(str(src)))
    onnx.checker.check_model(model)
    onnx.save(model, str(out))


def make_variant(precision: Precision, fp32: Path, out: Path, compression: Compression,
                 calibration: Inputs, workdir: Path, fixed_batch: int | None) -> list[str]:
    """Write the ONNX variant for one precision from the optimized fp32 model (`fixed_batch`: the size of
    its batch dimension when that is fixed, so calibration feeds batches of exactly that size). Returns
    notes on what had to be worked around."""
    if precision == Precision.fp16:
        _to_fp16(fp32, out)
        return []
    prepared, notes = _prepared(fp32, workdir)
    if precision == Precision.int8_dynamic:
        _int8_dynamic(prepared, out, compression.per_channel)
    elif precision == Precision.int8_static:
        _int8_static(prepared, out, compression, calibration, fixed_batch)
    else:
        raise ValueError(f"no ONNX variant for {precision}")
    return notes


def _to_fp16(src: Path, out: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    # keep_io_types: callers keep feeding and reading float32.
    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(out))


def _prepared(src: Path, workdir: Path) -> tuple[Path, list[str]]:
    """onnxruntime's quantization pre-processing (shape inference, fusions), once per run, and a note when
    its symbolic shape inference failed on the graph and the plain pre-processing (ONNX shape inference
    only) was used instead: foreign graphs trip it, and quantization does not need it."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = (workdir / f"{src.stem}.quant-pre.onnx").resolve()
    note = prepared.with_suffix(".note")  # the fall-back's note, for the second variant that reuses the file
    if not prepared.exists():
        try:
            # A failing symbolic shape inference saves its partial graph into the working directory.
            with contextlib.chdir(workdir):
                quant_pre_process(str(src.resolve()), str(prepared), skip_symbolic_shape=False)
        except Exception as e:
            quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
            note.write_text(f"quantization pre-processing without symbolic shape inference, which failed: "
                            f"{type(e).__name__}: {first_line(e)}")
    return prepared, [note.read_text()] if note.exists() else []


def _int8_dynamic(src: Path, out: Path, per_channel: bool) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Dynamic quantization of convolutions is many times slower on CPU than fp32, so only
    # MatMul/Gemm weights are quantized.
    ops = {n.op_type for n in onnx.load(str(src)).graph.node}
    if not ops & {"MatMul", "Gemm"}:
        raise UnsupportedModel("int8-dynamic quantizes MatMul/Gemm only and the model has none", reason="NothingToQuantize")
    quantize_dynamic(str(src), str(out), op_types_to_quantize=["MatMul", "Gemm"],
                     per_channel=per_channel, weight_type=QuantType.QInt8)


_CALIBRATION = {
    CalibrationMethod.minmax: "MinMax",
    CalibrationMethod.entropy: "Entropy",
    CalibrationMethod.percentile: "Percentile",
}


def _int8_static(src: Path, out: Path, compression: Compression, calibration: Inputs,
                 fixed_batch: int | None, memory: int = CALIBRATION_MEMORY_BYTES) -> None:
    from onnxruntime.quantization import CalibrationMethod as OrtMethod
    from onnxruntime.quantization import quantize_static
    samples = calibration.take(compression.calibration_samples)
    method = CalibrationMethod(compression.calibration_method)
    batch, chunk = calibration_plan(_bytes_per_sample(src, samples, fixed_batch), len(samples), method,
                                    fixed_batch, memory)
    calibration_cache(src).unlink(missing_ok=True)  # a cache hit would skip calibrating these samples
    quantize_static(str(src), str(out), _Chunks(samples, batch, chunk, exact=fixed_batch is not None),
                    calibrate_method=getattr(OrtMethod, _CALIBRATION[method]),
                    calibration_cache_path=str(calibration_cache(src)), **_static_options(compression))
    compact(out)


def calibration_cache(prepared: Path) -> Path:
    """Where int8-static leaves the ranges it calibrated, for the mixed-precision builds that reuse them."""
    return prepared.with_suffix(".calibration.json")


def int8_static_keeping_float(prepared: Path, out: Path, compression: Compression, float_nodes: list[str]) -> None:
    """int8-static from the calibration `_int8_static` made of `prepared`, with `float_nodes` left in float; not
    compacted, so node names stay those of the fp32 graph."""
    from onnxruntime.quantization import quantize_static

    quantize_static(str(prepared), str(out), None, calibration_cache_path=str(calibration_cache(prepared)),
                    nodes_to_exclude=float_nodes, **_static_options(compression))


def _static_options(compression: Compression) -> dict:
    from onnxruntime.quantization import QuantFormat, QuantType

    return dict(
        quant_format=QuantFormat.QDQ,
        per_channel=compression.per_channel,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        # Biases stay fp32 (int32 biases plus their scale tensors cost more bytes than they save
        # and change no kernel on CPU); activation ranges stay asymmetric for uint8.
        # CalibStridedMinMax, despite its name, is onnxruntime's streaming for every method: it collects the
        # reader's items (our chunks) one at a time, merging ranges (minmax: exactly) or histograms (entropy,
        # percentile) as it goes. CalibMaxIntermediateOutputs would be the other way, but onnxruntime's minmax
        # clears the outputs without taking their ranges (1.32, MinMaxCalibrater.collect_data: 16 batches with
        # N=4 fail with "No data is collected", 15 keep the last 3 batches' ranges), and its histogram
        # calibrators ignore it.
        extra_options={"CalibTensorRangeSymmetric": False, "QuantizeBias": False, "CalibStridedMinMax": 1},
    )


def calibration_plan(per_sample: int, samples: int, method: CalibrationMethod, fixed_batch: int | None,
                     memory: int = CALIBRATION_MEMORY_BYTES) -> tuple[int, int]:
    """(batch, chunk): samples per calibration call and per collection, from the bytes of tensors calibration
    holds per sample. The session running a batch holds every tensor of it (measured with minmax's graph too,
    whose outputs are only ranges); entropy and percentile keep every tensor of a chunk's batches until its
    histograms are made, minmax only two numbers per tensor and batch, so its chunk is everything. A fixed batch
    dimension sets the batch; a chunk is whole batches, or all samples."""
    share = memory // 2 // max(per_sample, 1)
    batch = fixed_batch or max(1, min(_CALIBRATION_BATCH, share, samples))
    if method == CalibrationMethod.minmax:
        return batch, samples
    return batch, min(samples, batch * max(1, share // batch))


def _bytes_per_sample(model: Path, samples: Inputs, fixed_batch: int | None) -> int:
    """Bytes of the tensors calibration looks at (every float tensor the graph names), for one sample: measured
    by running one batch with all of them as outputs, as onnxruntime's calibrators run it (no graph
    optimizations). Shape inference cannot say it for graphs whose dimensions it could not follow (reshapes of
    computed shapes, as paddle2onnx writes them)."""
    import onnx
    import onnxruntime as ort


    graph_model = onnx.load(str(model))
    graph = graph_model.graph
    produced = {name for node in graph.node for name in node.output} - {v.name for v in graph.output}
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16}
    graph.output.extend(v for v in graph.value_info if v.name in produced and v.type.HasField("tensor_type")
                        and v.type.tensor_type.elem_type in floats)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(graph_model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    del graph_model
    size = fixed_batch or 1
    outputs = session.run(None, samples.feed(0, 1, size if fixed_batch else None))
    return (sum(o.nbytes for o in outputs if isinstance(o, np.ndarray)) // size
            + sum(a[:1].nbytes for a in samples.arrays.values()))


class _Chunks:
    """A calibration data reader (onnxruntime's CalibrationDataReader by its protocol: get_next, and __len__ plus
    set_range for strided calibration) whose items are chunks of `chunk` samples, each fed in batches of `batch`."""

    def __init__(self, samples: Inputs, batch: int, chunk: int, exact: bool) -> None:
        self._samples, self._batch, self._chunk, self._exact = samples, batch, chunk, exact
        self.set_range(0, len(self))

    def __len__(self) -> int:
        return -(-len(self._samples) // self._chunk)

    def set_range(self, start_index: int, end_index: int) -> None:
        part = self._samples.window(start_index * self._chunk, end_index * self._chunk)
        self._feeds = (feed for feed, _ in part.feeds(self._batch, self._exact))

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def compact(path: Path) -> None:
    """Rename internal tensors and nodes to short ids; drop value_info, doc strings and unused opset imports.

    The quantizer derives names such as `/features/features.3/conv/Conv_output_0_QuantizeLinear_Output`
    for every tensor, scale and zero point; on a small model those strings are a tenth of the file.
    Graph inputs and outputs keep their names: they are the model's interface.
    """
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    if any(attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
           for node in graph.node for attr in node.attribute):
        return  # subgraphs (If, Loop) refer to outer tensors by name: leave such models as they are
    interface = {v.name for v in graph.input} | {v.name for v in graph.output}
    renamed: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in interface:
            return name
        return renamed.setdefault(name, f"t{len(renamed)}")

    for initializer in graph.initializer:
        initializer.name = short(initializer.name)
    for index, node in enumerate(graph.node):
        node.name = f"n{index}"
        node.doc_string = ""
        node.input[:] = [short(name) for name in node.input]
        node.output[:] = [short(name) for name in node.output]
    del graph.value_info[:]
    used = {node.domain for node in graph.node} | {""}
    kept = [opset for opset in model.opset_import if opset.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    graph.doc_string = ""
    model.doc_string = ""
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
