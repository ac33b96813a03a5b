"""Edge conversions: ncnn through pnnx, TFLite through litert-torch.

Converters print a lot; their output goes to a log file next to the work directory and
only its tail reaches an error message.
"""

import subprocess
import sys
from pathlib import Path

from modelfleet.api.compressedmodel import SourceFormat, TensorSpec
from modelfleet.errors import UnsupportedModel, first_line
from modelfleet.pipeline.logs import redirect_fds, tail
from modelfleet.pipeline.source import LoadedSource, callable_module, sample_input

_PNNX_TIMEOUT_S = 600


def to_ncnn(onnx_fp32: Path, input_spec: TensorSpec, fp16: bool, workdir: Path) -> tuple[Path, Path]:
    """Convert the fp32 ONNX model with pnnx; returns (param, bin). Unknown layers name the operator."""
    workdir.mkdir(parents=True, exist_ok=True)
    model = workdir / "model.onnx"
    model.write_bytes(onnx_fp32.read_bytes())
    shape = ",".join(str(d) for d in sample_input(input_spec).shape)
    dtype = {"float32": "f32", "float16": "f16", "int64": "i64", "int32": "i32", "uint8": "u8"}[input_spec.dtype]
    cmd = [_pnnx_binary(), model.name, f"inputshape=[{shape}]{dtype}", f"fp16={int(fp16)}"]
    log = workdir / "pnnx.log"
    with open(log, "wb") as out:
        done = subprocess.run(cmd, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, timeout=_PNNX_TIMEOUT_S)
    param, weights = workdir / "model.ncnn.param", workdir / "model.ncnn.bin"
    if done.returncode != 0 or not param.is_file() or not weights.is_file():
        raise UnsupportedModel(f"pnnx failed (exit {done.returncode}): {tail(log)}", reason="ConversionFailed")
    unknown = unsupported_ncnn_layers(param)
    if unknown:
        raise UnsupportedModel(
            f"ncnn cannot express operator(s) {', '.join(unknown)} left by pnnx", operator=unknown[0]
        )
    return param, weights


def unsupported_ncnn_layers(param: Path) -> list[str]:
    """Layer types in an ncnn .param that this ncnn build does not know."""
    import ncnn

    lines = param.read_text().splitlines()[2:]  # magic number, then layer/blob counts
    types = sorted({line.split()[0] for line in lines if line.strip()})
    return [t for t in types if ncnn.layer_to_index(t) < 0]


def _pnnx_binary() -> str:
    from pnnx import pnnx as run_pnnx  # the wheel's launcher; the binary sits beside it

    binary = Path(run_pnnx.__code__.co_filename).parent / "pnnx"
    if binary.is_file():
        return str(binary)
    return str(Path(sys.executable).parent / "pnnx")


def to_tflite(loaded: LoadedSource, input_spec: TensorSpec, out: Path, log: Path) -> None:
    """Convert a torch source with litert-torch (batch fixed to 1, NCHW inputs kept)."""
    if loaded.format == SourceFormat.onnx:
        raise UnsupportedModel(
            "TFLite conversion of an ONNX source needs onnx2tf, which is not installed in this worker",
            reason="ConverterUnavailable",
        )
    import torch

    from torch._export.converter import TS2EPConverter

    module = callable_module(loaded)

    sample = (torch.from_numpy(sample_input(input_spec)),)
    try:
        with redirect_fds(log):
            import litert_torch  # inside: importing it prints TensorFlow's start-up chatter

            if loaded.format == SourceFormat.torchscript:
                # litert-torch traces with torch.export, which cannot read a ScriptModule directly.
                module = TS2EPConverter(module, sample).convert().module()
            litert_torch.convert(module, sample).export(str(out))
    except Exception as e:
        raise UnsupportedModel(f"litert-torch conversion failed: {first_line(e)}; log: {tail(log)}",
                               reason="ConversionFailed") from e
