"""Runners: one artifact loaded in the runtime that will serve it, mapping a batch to outputs.

Torch-free (numpy, and each runtime imported inside its runner), so the worker pipeline and the device agent's
smoke test share it.
"""

from pathlib import Path
from typing import Protocol

import numpy as np


class Runner(Protocol):
    batch_size: int  # the largest batch one call accepts
    fixed_batch: bool  # whether every call must pass exactly batch_size samples

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Every output for one call's inputs, by input name."""
        ...


class OnnxRuntimeRunner:
    """A dynamic batch dimension is fed 64 samples a call; a fixed one exactly its size. `stackable` False (an
    input without a batch axis): one sample a call."""

    def __init__(self, model: Path, threads: int, stackable: bool = True):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        model_input = self._session.get_inputs()[0]
        batch = model_input.shape[0] if model_input.shape else None  # a name or None when dynamic
        self.fixed_batch = stackable and isinstance(batch, int) and batch > 0
        self.batch_size = (batch if self.fixed_batch else 64) if stackable else 1

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._session.run(None, feed)


class NcnnRunner:
    """ncnn takes one sample (c, h, w) per extractor; pnnx names the blobs in0/out0."""

    batch_size = 1
    fixed_batch = False  # run() takes any number of samples, one extractor each

    def __init__(self, param: Path, weights: Path, threads: int, fp16: bool):
        import ncnn

        self._ncnn = ncnn
        net = ncnn.Net()
        net.opt.num_threads = threads
        # fp32 artifacts must run in fp32: ncnn otherwise computes in fp16/bf16 where it can.
        for flag in ("use_fp16_packed", "use_fp16_storage", "use_fp16_arithmetic"):
            setattr(net.opt, flag, fp16)
        net.opt.use_bf16_storage = False
        if net.load_param(str(param)) != 0 or net.load_model(str(weights)) != 0:
            raise RuntimeError(f"ncnn could not load {param.name}/{weights.name}")
        self._net = net

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        (batch,) = feed.values()  # edge artifacts take one input (the pipeline refuses others before converting)
        outputs = []
        for sample in batch:
            extractor = self._net.create_extractor()
            extractor.input("in0", self._ncnn.Mat(np.ascontiguousarray(sample)).clone())
            status, out = extractor.extract("out0")
            if status != 0:
                raise RuntimeError(f"ncnn extract failed with status {status}")
            outputs.append(np.array(out).reshape(-1))
        return [np.stack(outputs)]


class TfliteRunner:
    """A full-integer model takes and gives int8 tensors: run() quantizes the float batch with the input's
    scale and zero point and dequantizes the output, as an application on the device does."""

    fixed_batch = True  # the interpreter's tensors are allocated for one shape

    def __init__(self, model: Path, threads: int):
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_path=str(model), num_threads=threads)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        self.batch_size = int(self._input["shape"][0])

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        (batch,) = feed.values()  # edge artifacts take one input (the pipeline refuses others before converting)
        self._interpreter.set_tensor(self._input["index"], _quantize(batch, self._input))
        self._interpreter.invoke()
        return [_dequantize(self._interpreter.get_tensor(self._output["index"]), self._output)]


def _quantize(values: np.ndarray, tensor: dict) -> np.ndarray:
    scale, zero_point = tensor["quantization"]
    if not scale:  # not a quantized tensor (a float one, or integer data such as token ids)
        return values
    limits = np.iinfo(tensor["dtype"])
    return np.clip(np.round(values / scale) + zero_point, limits.min, limits.max).astype(tensor["dtype"])


def _dequantize(values: np.ndarray, tensor: dict) -> np.ndarray:
    scale, zero_point = tensor["quantization"]
    if not scale:
        return values.copy()
    return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)
