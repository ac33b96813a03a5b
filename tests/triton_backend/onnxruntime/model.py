"""TEST-ONLY stand-in for Triton's C++ ``onnxruntime`` backend.

The ``tritonserver`` binary that the tests use comes from the ``nvidia-pytriton`` wheel, which
ships only Triton's Python backend. Triton supports *Python-based backends*: a directory
``<backend-directory>/<name>/model.py`` holding a ``TritonPythonModel`` serves every model whose
config says ``backend: "<name>"``, running on the Python backend's ``libtriton_python.so`` and stub
found in ``<backend-directory>/python/``. ``hack/triton/install.sh`` copies this file to
``<backend-directory>/onnxruntime/model.py`` so that an unmodified Triton model repository
(``config.pbtxt`` with ``backend: "onnxruntime"`` and ``<version>/model.onnx``) loads and serves
on CPU in tests, through Triton's real HTTP/gRPC front ends, model control, dynamic batcher and
metrics.

It is NOT the production backend and is never shipped: production Triton images use NVIDIA's
C++ onnxruntime backend. What it mimics:

* the model file is ``<model dir>/<version>/<default_model_filename or "model.onnx">``;
* a CPU ``InferenceSession``; the ``intra_op_thread_count`` / ``inter_op_thread_count`` config
  parameters (the C++ backend's names) set its thread pools, default 1 each;
* load fails (with onnxruntime's error text) when the file is missing or not a valid model, or
  when config inputs/outputs do not exist in the model or have another data type;
* requests the dynamic batcher groups into one ``execute`` call are concatenated along the batch
  dimension and run as one batch (falling back to one run per request when shapes differ);
* a failing request gets a ``TritonError`` response carrying onnxruntime's error text.

Not supported: TYPE_STRING/BF16 tensors, optional inputs, sequence batching, GPU instances.

Tensors cross the Python backend boundary through DLPack (``np.from_dlpack`` /
``pb_utils.Tensor.from_dlpack``): the backend's numpy path (``as_numpy`` / ``Tensor(name, array)``)
breaks with numpy 2.
"""

import ctypes
import json
import os
import re

import numpy as np
import triton_python_backend_utils as pb_utils

# Config data types this stand-in handles, and the onnxruntime type strings they map to.
_ORT_TYPE = {
    "TYPE_BOOL": "tensor(bool)",
    "TYPE_UINT8": "tensor(uint8)",
    "TYPE_UINT16": "tensor(uint16)",
    "TYPE_UINT32": "tensor(uint32)",
    "TYPE_UINT64": "tensor(uint64)",
    "TYPE_INT8": "tensor(int8)",
    "TYPE_INT16": "tensor(int16)",
    "TYPE_INT32": "tensor(int32)",
    "TYPE_INT64": "tensor(int64)",
    "TYPE_FP16": "tensor(float16)",
    "TYPE_FP32": "tensor(float)",
    "TYPE_FP64": "tensor(double)",
}


def _ort_error(e):
    """onnxruntime's error as the C++ backend words it: 'onnx runtime error <code>: <message>'."""
    m = re.match(r"\[ONNXRuntimeError\] : (\d+) : \w+ : (.*)", str(e), re.DOTALL)
    return f"onnx runtime error {m.group(1)}: {m.group(2)}" if m else str(e)


def _param(config, key, default):
    value = config.get("parameters", {}).get(key, {}).get("string_value", "")
    return value if value != "" else default


def _to_numpy(tensor):
    if tensor.is_cpu():
        try:
            return np.from_dlpack(tensor)
        except (TypeError, BufferError, RuntimeError):
            pass
    return tensor.as_numpy()


def _to_triton(name, array):
    # Tensor(name, array) yields an empty tensor under numpy 2 (the stub's pybind11 predates it);
    # DLPack works. The backend renames a consumed capsule to "used_dlpack" instead of the
    # standard "used_dltensor", so numpy's capsule destructor would print a traceback for every
    # output; giving it the standard name keeps logs clean (memory is freed by the Triton tensor).
    capsule = np.ascontiguousarray(array).__dlpack__()
    tensor = pb_utils.Tensor.from_dlpack(name, capsule)
    _capsule_set_name(capsule, _USED_DLTENSOR)
    return tensor


_USED_DLTENSOR = b"used_dltensor"  # module constant: PyCapsule_SetName keeps the pointer
_capsule_set_name = ctypes.pythonapi.PyCapsule_SetName
_capsule_set_name.argtypes = [ctypes.py_object, ctypes.c_char_p]
_capsule_set_name.restype = ctypes.c_int


class TritonPythonModel:
    def initialize(self, args):
        import onnxruntime as ort

        self.config = json.loads(args["model_config"])
        filename = self.config.get("default_model_filename") or "model.onnx"
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        if not os.path.isfile(path):
            raise pb_utils.TritonModelException(f"model file not found: {path}")

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(_param(self.config, "intra_op_thread_count", "1"))
        options.inter_op_num_threads = int(_param(self.config, "inter_op_thread_count", "1"))
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types; keep its text
            raise pb_utils.TritonModelException(_ort_error(e)) from e

        self.batching = int(self.config.get("max_batch_size", 0)) > 0
        model_inputs = {i.name: i.type for i in self.session.get_inputs()}
        model_outputs = {o.name: o.type for o in self.session.get_outputs()}
        self.inputs = self._check(self.config.get("input", []), model_inputs, "input")
        self.outputs = self._check(self.config.get("output", []), model_outputs, "output")
        if not self.outputs:  # no outputs configured: return all of the model's
            self.outputs = list(model_outputs)

    def _check(self, configured, in_model, kind):
        names = []
        for entry in configured:
            name, dtype = entry["name"], entry["data_type"]
            if name not in in_model:
                raise pb_utils.TritonModelException(
                    f"unexpected {kind} '{name}' in model config, model {kind}s are "
                    f"{sorted(in_model)}"
                )
            if _ORT_TYPE.get(dtype) != in_model[name]:
                raise pb_utils.TritonModelException(
                    f"unexpected datatype {dtype} for {kind} '{name}', "
                    f"model expects {in_model[name]}"
                )
            names.append(name)
        return names

    def _feeds(self, request):
        feeds = {}
        for name in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise ValueError(f"expected input '{name}' in the request")
            feeds[name] = _to_numpy(tensor)
        return feeds

    def _respond(self, results):
        return pb_utils.InferenceResponse(
            output_tensors=[_to_triton(n, r) for n, r in zip(self.outputs, results)]
        )

    def _run_one(self, request):
        try:
            return self._respond(self.session.run(self.outputs, self._feeds(request)))
        except Exception as e:
            error = pb_utils.TritonError(_ort_error(e))
            return pb_utils.InferenceResponse(output_tensors=[], error=error)

    def execute(self, requests):
        if self.batching and len(requests) > 1:
            batched = self._run_batched(requests)
            if batched is not None:
                return batched
        return [self._run_one(r) for r in requests]

    def _run_batched(self, requests):
        """One session.run for all requests; None when they cannot be stacked or the run fails."""
        try:
            feeds = [self._feeds(r) for r in requests]
            sizes = [next(iter(f.values())).shape[0] for f in feeds] if self.inputs else []
            stacked = {n: np.concatenate([f[n] for f in feeds], axis=0) for n in self.inputs}
            results = self.session.run(self.outputs, stacked)
        except Exception:
            return None  # per-request runs give each request its own error
        if any(r.shape[:1] != (sum(sizes),) for r in results):
            return None
        responses, start = [], 0
        for size in sizes:
            responses.append(self._respond([r[start : start + size] for r in results]))
            start += size
        return responses

    def finalize(self):
        self.session = None
