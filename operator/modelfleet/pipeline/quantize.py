"""ONNX graph optimization and the quantized / half-precision variants."""

import contextlib
from pathlib import Path

import numpy as np

from modelfleet.api.compressedmodel import CalibrationMethod, Compression, Precision
from modelfleet.errors import UnsupportedModel, first_line
from modelfleet.pipeline.dataset import batches

_CALIBRATION_BATCH = 32  # samples per calibration call when the model's batch dimension is dynamic


def optimize(src: Path, out: Path) -> None:
    """Simplify the graph (constant folding, fusions) with onnxslim; the result stays fp32."""
    import onnx
    import onnxslim

    model = onnxslim.slim(onnx.load(str(src)))
    onnx.checker.check_model(model)
    onnx.save(model, str(out))


def make_variant(precision: Precision, fp32: Path, out: Path, compression: Compression,
                 calibration: np.ndarray, input_name: str, workdir: Path, fixed_batch: int | None) -> list[str]:
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
        _int8_static(prepared, out, compression, calibration, input_name, fixed_batch)
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


def _int8_static(src: Path, out: Path, compression: Compression, calibration: np.ndarray, input_name: str,
                 fixed_batch: int | None) -> None:
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod as OrtMethod
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    samples = calibration[: compression.calibration_samples]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            size = fixed_batch or _CALIBRATION_BATCH
            self._batches = (batch for batch, _ in batches(samples, size, exact=fixed_batch is not None))

        def get_next(self):
            batch = next(self._batches, None)
            return None if batch is None else {input_name: batch}

    quantize_static(
        str(src), str(out), Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=compression.per_channel,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=getattr(OrtMethod, _CALIBRATION[CalibrationMethod(compression.calibration_method)]),
        # Biases stay fp32 (int32 biases plus their scale tensors cost more bytes than they save
        # and change no kernel on CPU); activation ranges stay asymmetric for uint8.
        extra_options={"CalibTensorRangeSymmetric": False, "QuantizeBias": False},
    )
    _compact(out)


def _compact(path: Path) -> None:
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
