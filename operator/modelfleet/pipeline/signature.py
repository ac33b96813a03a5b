"""The interface of an ONNX model and the smoke data that verifies a deployment of it."""

from pathlib import Path

import numpy as np

from modelfleet.api.result import ModelSignature, TensorSignature
from modelfleet.pipeline.dataset import Inputs, padded

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


def write_smoke(path: Path, inputs: Inputs, outputs: list[np.ndarray], fixed_batch: int | None) -> None:
    """Reference inputs (the first evaluation samples) and the artifact's outputs for them: SMOKE_SAMPLES of them,
    or exactly the batch a model with a fixed batch dimension takes. One input and one output keep the arrays
    `inputs` and `outputs` (what agents read); several are stored as `input:NAME` (with `batched:NAME`, whether
    the input has a batch axis) and `output:INDEX`."""
    count = fixed_batch or SMOKE_SAMPLES
    first = [padded(o[:count], count) for o in outputs]
    if len(inputs.arrays) == 1 and len(outputs) == 1 and inputs.stackable:
        np.savez(path, inputs=padded(inputs.only()[:count], count), outputs=first[0])
        return
    arrays = {f"output:{k}": o for k, o in enumerate(first)}
    for name, array in inputs.arrays.items():
        arrays[f"input:{name}"] = padded(array[:count], count)
        arrays[f"batched:{name}"] = np.asarray(inputs.batched[name])
    np.savez(path, **arrays)


def read_smoke(path: Path, signature: ModelSignature) -> tuple[Inputs, list[np.ndarray]]:
    """The inputs and outputs `write_smoke` stored, by the artifact's input names."""
    with np.load(path, allow_pickle=False) as smoke:
        if "inputs" in smoke.files:
            return Inputs({signature.inputs[0].name: smoke["inputs"]}, {signature.inputs[0].name: True}), [smoke["outputs"]]
        names = [t.name for t in signature.inputs]
        inputs = Inputs({n: smoke[f"input:{n}"] for n in names}, {n: bool(smoke[f"batched:{n}"]) for n in names})
        return inputs, [smoke[f"output:{k}"] for k in range(len(signature.outputs))]
