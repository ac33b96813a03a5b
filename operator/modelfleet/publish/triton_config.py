"""config.pbtxt for one ONNX model, generated from its graph signature and the spec's Triton target."""

import json

from modelfleet.api.compressedmodel import InstanceKind, TritonTarget
from modelfleet.api.result import ModelSignature, TensorSignature

TRITON_TYPES = {
    "bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "uint16": "TYPE_UINT16", "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64", "int8": "TYPE_INT8", "int16": "TYPE_INT16", "int32": "TYPE_INT32",
    "int64": "TYPE_INT64", "float16": "TYPE_FP16", "float32": "TYPE_FP32", "float64": "TYPE_FP64",
}
# The onnxruntime backend's TensorRT accelerator takes one precision for the whole engine.
TENSORRT_PRECISION = {"fp32": "FP32", "fp16": "FP16", "int8-dynamic": "INT8", "int8-static": "INT8"}


def has_dynamic_batch(signature: ModelSignature) -> bool:
    """Triton batches a model when every input and output has a dynamic first dimension."""
    tensors = signature.inputs + signature.outputs
    return all(t.shape and t.shape[0] == -1 for t in tensors)


def triton_type(tensor: TensorSignature) -> str:
    try:
        return TRITON_TYPES[tensor.dtype]
    except KeyError:
        raise ValueError(f"tensor {tensor.name!r} has element type {tensor.dtype}, which Triton cannot serve") from None


PUBLICATION_PARAMETER = "modelfleet_publication"


def model_config(name: str, signature: ModelSignature, target: TritonTarget, precision: str, publication: str) -> str:
    """The config.pbtxt text (protobuf text format) for the onnxruntime backend.

    `publication` (version and digest) is stored as a config parameter, which Triton reports back
    from the loaded model: proof that the server serves this repository's latest write.
    """
    batching = has_dynamic_batch(signature)
    lines = [
        f"name: {_quote(name)}",
        'backend: "onnxruntime"',
        f"max_batch_size: {target.max_batch_size if batching else 0}",
        f"version_policy: {{ latest: {{ num_versions: {target.keep_versions} }} }}",
    ]
    lines += _tensors("input", signature.inputs, batching)
    lines += _tensors("output", signature.outputs, batching)
    if batching and target.dynamic_batching.enabled:
        lines.append(f"dynamic_batching {{ max_queue_delay_microseconds: "
                     f"{target.dynamic_batching.max_queue_delay_microseconds} }}")
    kind = "KIND_GPU" if target.instance_group.kind == InstanceKind.gpu else "KIND_CPU"
    lines.append(f"instance_group [ {{ kind: {kind} count: {target.instance_group.count} }} ]")
    if target.tensorrt:
        lines += [
            "optimization { execution_accelerators {",
            '  gpu_execution_accelerator: [ { name: "tensorrt"',
            f'    parameters {{ key: "precision_mode" value: "{TENSORRT_PRECISION[precision]}" }}',
            '    parameters { key: "max_workspace_size_bytes" value: "1073741824" } } ]',
            "} }",
        ]
    if target.warmup:
        lines += _warmup(signature.inputs, batching)
    lines.append(f"parameters {{ key: {_quote(PUBLICATION_PARAMETER)} value: {{ string_value: {_quote(publication)} }} }}")
    return "\n".join(lines) + "\n"


def _tensors(kind: str, tensors: list[TensorSignature], batching: bool) -> list[str]:
    lines = [f"{kind} ["]
    for i, t in enumerate(tensors):
        dims = t.shape[1:] if batching else t.shape
        comma = "," if i < len(tensors) - 1 else ""
        lines.append(f"  {{ name: {_quote(t.name)} data_type: {triton_type(t)} dims: {_dims(dims)} }}{comma}")
    return lines + ["]"]


def _warmup(inputs: list[TensorSignature], batching: bool) -> list[str]:
    lines = ["model_warmup [ {", '  name: "zeros"', "  batch_size: 1"]
    for t in inputs:
        dims = [d if d > 0 else 1 for d in (t.shape[1:] if batching else t.shape)]  # a concrete shape to run
        lines.append(f"  inputs {{ key: {_quote(t.name)} value: {{ data_type: {triton_type(t)} "
                     f"dims: {_dims(dims)} zero_data: true }} }}")
    return lines + ["} ]"]


def _dims(dims: list[int]) -> str:
    return "[ " + ", ".join(str(d) for d in dims) + " ]"


def _quote(text: str) -> str:
    # JSON string escapes are valid protobuf text-format escapes for the names ONNX allows.
    return json.dumps(text)
