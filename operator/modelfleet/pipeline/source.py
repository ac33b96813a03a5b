"""Loading the source model, checking it against the declared inputs, exporting it to ONNX."""

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelfleet.api.compressedmodel import Source, SourceFormat, TensorSpec
from modelfleet.errors import ChecksumMismatch, SourceError, UnsupportedModel, first_line
from modelfleet.pipeline.logs import redirect_fds
from modelfleet.store import sha256_file
from modelfleet.store.paths import confined

OUTPUT_NAME = "output"
EXPORT_FAILED = "ExportFailed"  # the reason of a torch source's failed ONNX export


@dataclass
class LoadedSource:
    format: SourceFormat
    path: Path
    sha256: str
    module: Any = None  # a torch module for torch sources, None for ONNX


def verify_checksum(source: Source, path: Path) -> str:
    digest = sha256_file(path)
    if source.sha256 and digest != source.sha256:
        raise ChecksumMismatch(f"{source.uri}: sha256 is {digest}, the spec expects {source.sha256}")
    return digest


def load(source: Source, path: Path) -> LoadedSource:
    """Verify and open the source; a file that is not a model of the declared format is refused."""
    digest = verify_checksum(source, path)
    if source.format == SourceFormat.onnx:
        _check_onnx(source, path)
        return LoadedSource(SourceFormat.onnx, path, digest)
    try:
        import torch
    except ImportError as e:  # the worker image for ONNX sources has no torch, by design
        raise UnsupportedModel(f"{source.format} sources need torch, which this worker has not: the operator runs "
                               "them in its torch worker image (MODELFLEET_TORCH_WORKER_IMAGE)",
                               reason="ConverterUnavailable") from e

    try:
        if source.format == SourceFormat.torchscript:
            module = torch.jit.load(str(path), map_location="cpu")
        else:
            module = torch.export.load(str(path))
    except Exception as e:
        raise SourceError(f"{source.uri}: not a {source.format} model: {first_line(e)}") from e
    loaded = LoadedSource(SourceFormat(source.format), path, digest, module)
    _check_torch_inputs(source, loaded)
    return loaded


def sample_input(spec: TensorSpec, batch: int = 1) -> np.ndarray:
    shape = [batch if spec.shape[0] == -1 else spec.shape[0], *spec.shape[1:]]
    return np.zeros(shape, dtype=spec.dtype)


def callable_module(loaded: LoadedSource):
    """A torch callable for the source: the ScriptModule, or the ExportedProgram's module."""
    return loaded.module.module() if loaded.format == SourceFormat.exported_program else loaded.module


class TorchRunner:
    """The torch source itself in torch: the reference when its ONNX export failed (a Runner, batches of
    64, or exactly the batch a fixed batch dimension declares)."""

    def __init__(self, loaded: LoadedSource, specs: list[TensorSpec]):
        self._module = callable_module(loaded)
        self._names = [spec.name for spec in specs]
        stackable = all(spec.batched for spec in specs)
        self.fixed_batch = stackable and specs[0].shape[0] > 0
        self.batch_size = (specs[0].shape[0] if self.fixed_batch else 64) if stackable else 1

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        with torch.no_grad():
            out = self._module(*(torch.from_numpy(np.asarray(feed[name])) for name in self._names))
        return [o.numpy() for o in out] if isinstance(out, (tuple, list)) else [out.numpy()]


def _check_torch_inputs(source: Source, loaded: LoadedSource) -> None:
    import torch

    args = tuple(torch.from_numpy(sample_input(spec)) for spec in source.inputs)
    try:
        with torch.no_grad():
            callable_module(loaded)(*args)
    except Exception as e:
        shapes = ", ".join(f"{s.name}{s.shape}:{s.dtype}" for s in source.inputs)
        raise SourceError(
            f"{source.uri}: the model does not accept the declared inputs ({shapes}): {_torch_error(e)}",
            reason="InputMismatch",
        ) from e


def _torch_error(e: BaseException) -> str:
    """TorchScript wraps the real error after a traceback; its last `...Error:` line says what failed."""
    lines = [line.strip() for line in str(e).splitlines() if "Error:" in line]
    return lines[-1][:500] if lines else first_line(e)


_ONNX_DTYPES = {1: "float32", 10: "float16", 7: "int64", 6: "int32", 2: "uint8"}


def _check_onnx(source: Source, path: Path) -> None:
    import onnx
    from onnx.external_data_helper import load_external_data_for_model

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise SourceError(f"{source.uri}: not a valid ONNX model: {first_line(e)}") from e
    _check_external_data(source, model, path.parent)
    try:
        load_external_data_for_model(model, str(path.parent))
        onnx.checker.check_model(model)
    except Exception as e:
        raise SourceError(f"{source.uri}: not a valid ONNX model: {first_line(e)}") from e
    initializers = {i.name for i in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(graph_inputs) != len(source.inputs):
        raise SourceError(
            f"{source.uri}: the model has {len(graph_inputs)} inputs, the spec declares {len(source.inputs)}",
            reason="InputMismatch",
        )
    for declared, actual in zip(source.inputs, graph_inputs):
        tensor = actual.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
        dtype = _ONNX_DTYPES.get(tensor.elem_type, str(tensor.elem_type))
        problems = []
        if actual.name != declared.name:
            problems.append(f"name {actual.name!r} != {declared.name!r}")
        if len(dims) != len(declared.shape) or any(a != -1 and a != d for a, d in zip(dims, declared.shape) if d != -1):
            problems.append(f"shape {dims} != {declared.shape}")
        elif declared.batched and declared.shape[0] == -1 and dims[0] != -1:
            problems.append(f"the batch dimension is fixed at {dims[0]}, the spec declares it dynamic (-1): "
                            f"declare shape {[dims[0], *declared.shape[1:]]}")
        if dtype != declared.dtype:
            problems.append(f"dtype {dtype} != {declared.dtype}")
        if problems:
            raise SourceError(f"{source.uri}: input does not match the spec: {'; '.join(problems)}", reason="InputMismatch")


def _check_external_data(source: Source, model, directory: Path) -> None:
    """Tensors stored in external files must name regular files inside the model's own directory."""
    from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, uses_external_data

    # _get_all_tensors is what onnx's own load_external_data_for_model walks: every tensor it would read.
    for tensor in _get_all_tensors(model):
        if uses_external_data(tensor):
            subject = f"{source.uri}: external data of tensor {tensor.name!r}"
            data = confined(directory, ExternalDataInfo(tensor).location, subject)
            if not data.is_file():
                raise SourceError(f"{subject}: {data} is not a file beside the model", reason="SourceNotFound")


def export_onnx(source: Source, loaded: LoadedSource, out: Path, opset: int, log: Path) -> int | None:
    """Write the fp32 ONNX model: torch sources are exported with a dynamic batch (unless the spec
    fixes it), ONNX sources saved as one file (external data folded in) and, below `opset`, converted to
    it. Returns an ONNX source's own opset (None for torch sources)."""
    if loaded.format == SourceFormat.onnx:
        import onnx

        model = onnx.load(str(loaded.path))
        own = onnx_opset(model)
        if own < opset:  # old exports lack what quantization needs, such as per-channel QDQ (opset 13)
            model = _convert_opset(source, model, own, opset)
        onnx.save(model, str(out))
        return own
    import torch

    args = tuple(torch.from_numpy(sample_input(s, batch=2)) for s in source.inputs)
    try:
        with redirect_fds(log):
            _torch_export(source, loaded, args, out, opset)
    except Exception as e:
        # The exception names the operator; the exporter's log is mostly a dump of the graph.
        raise UnsupportedModel(f"export to ONNX failed: {first_line(e)}", reason=EXPORT_FAILED) from e


def onnx_opset(model) -> int:
    """The version of the default (ai.onnx) operator set a graph imports."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _convert_opset(source: Source, model, own: int, opset: int):
    """onnx's version converter, step by step so that a failure names the operator and the opsets it
    could not be carried between."""
    import onnx
    from onnx import version_converter

    for version in range(own + 1, opset + 1):
        try:
            model = version_converter.convert_version(model, version)
            onnx.checker.check_model(model)
        except Exception as e:
            operators = _unconvertible_operators(model, version, e)
            raise UnsupportedModel(
                f"{source.uri}: the source's opset {own} cannot be converted to compression.opset {opset}: "
                f"operator {' or '.join(operators) or '(unknown)'} failed to convert from opset {version - 1} to "
                f"{version}: {first_line(e)}",
                operator=operators[0] if operators else None, reason="OpsetConversionFailed",
            ) from e
    return model


def _unconvertible_operators(model, version: int, error: Exception) -> list[str]:
    """The operators the converter stopped at: the one its message names (`No Adapter From Version $9 for
    ThresholdedRelu`), or else those of the graph whose definition changed at `version` (`Attribute is_test
    must not have value 0` names none)."""
    import onnx

    op_types = list(dict.fromkeys(node.op_type for node in model.graph.node if node.domain in ("", "ai.onnx")))
    named = [op for op in op_types if re.search(rf"(?<![A-Za-z0-9_]){op}(?![A-Za-z_])", str(error))]
    if named:
        return named[:1]

    def changed(op: str) -> bool:
        try:
            return onnx.defs.get_schema(op, version).since_version == version
        except onnx.defs.SchemaError:
            return True  # no longer defined at `version`

    return [op for op in op_types if changed(op)]


def _torch_export(source: Source, loaded: LoadedSource, args: tuple, out: Path, opset: int) -> None:
    import torch

    names = [s.name for s in source.inputs]
    if loaded.format == SourceFormat.torchscript:
        # The TorchScript exporter is the one that accepts ScriptModules.
        dynamic = any(s.shape[0] == -1 for s in source.inputs)
        axes = {n: {0: "batch"} for n in [*names, OUTPUT_NAME]} if dynamic else None
        torch.onnx.export(
            loaded.module, args, str(out), input_names=names, output_names=[OUTPUT_NAME],
            dynamic_axes=axes, opset_version=opset, dynamo=False,
        )
    else:
        torch.onnx.export(
            loaded.module, args, str(out), input_names=names, output_names=[OUTPUT_NAME],
            opset_version=opset, dynamo=True, verbose=False,
        )

