"""The interface of an ONNX model and the smoke data that verifies a deployment of it."""

from pathlib import Path

import numpy as np

from modelfleet.api.result import ModelSignature, TensorSignature
from modelfleet.pipeline.dataset import padded

SMOKE_FILE = "smoke.npz"
SMOKE_SAMPLES = 4


def onnx_signature(path: Path) -> ModelSignature:
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}

    def tensor(value) -> TensorSignature:
        kind = value.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else -1 for d in kind.shape.dim]
        return TensorSignature(name=value.name, dtype=np.dtype(tensor_dtype_to_np_dtype(kind.elem_type)).name, shape=shape)

    # Old exporters list initializers among the inputs; they are not fed by callers.
    return ModelSignature(inputs=[tensor(v) for v in graph.input if v.name not in initializers],
                          outputs=[tensor(v) for v in graph.output])


def write_smoke(path: Path, inputs: np.ndarray, outputs: np.ndarray, fixed_batch: int | None) -> None:
    """Reference inputs (the first evaluation samples, batched) and the artifact's outputs for them:
    SMOKE_SAMPLES of them, or exactly the batch a model with a fixed batch dimension takes."""
    count = fixed_batch or SMOKE_SAMPLES
    np.savez(path, inputs=padded(inputs[:count], count), outputs=padded(outputs[:count], count))
