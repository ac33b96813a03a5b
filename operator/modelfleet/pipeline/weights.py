"""How much of an ONNX graph's weights a quantizer really stored as int8 (int8-dynamic, for instance,
quantizes MatMul/Gemm only and leaves a network of convolutions in fp32)."""

from pathlib import Path

# Inputs of quantization ops that hold scales and zero points, not weights: (op, input indices).
_QUANT_PARAMETERS = {
    "QuantizeLinear": (1, 2),
    "DequantizeLinear": (1, 2),
    "MatMulInteger": (2, 3),
    "ConvInteger": (2, 3),
    "QLinearMatMul": (1, 2, 4, 5, 6, 7),
    "QLinearConv": (1, 2, 4, 5, 6, 7),
}
_WEIGHT_TYPES = {"FLOAT", "FLOAT16", "DOUBLE", "BFLOAT16", "INT8", "UINT8", "INT32"}  # int32: quantized biases
_INT8_TYPES = {"INT8", "UINT8"}


def fraction_quantized(model_path: Path) -> float:
    """The share of weight elements (initializers, quantization scales and zero points left out) stored as int8."""
    import math

    import onnx

    model = onnx.load(str(model_path))
    parameters = {node.input[i] for node in model.graph.node for i in _QUANT_PARAMETERS.get(node.op_type, ())
                  if i < len(node.input)}
    total = int8 = 0
    for tensor in model.graph.initializer:
        kind = onnx.TensorProto.DataType.Name(tensor.data_type)
        if tensor.name in parameters or kind not in _WEIGHT_TYPES:
            continue
        elements = math.prod(tensor.dims)
        total += elements
        int8 += elements if kind in _INT8_TYPES else 0
    return int8 / total if total else 0.0
