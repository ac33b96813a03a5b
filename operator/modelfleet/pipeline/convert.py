"""Edge conversions: ncnn through pnnx, TFLite through litert-torch (torch sources) or onnx2tf (ONNX sources).

Converters print a lot; their output goes to a log file next to the work directory and
only its tail reaches an error message.

onnx2tf pins its own TensorFlow, numpy and onnx, so it lives in a venv of its own (made by
hack/onnx2tf-venv.sh) and runs as a subprocess.
"""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from modelfleet.api.compressedmodel import SourceFormat, TensorSpec
from modelfleet.errors import UnsupportedModel, first_line
from modelfleet.pipeline.logs import redirect_fds, tail
from modelfleet.pipeline.source import LoadedSource, callable_module, sample_input
from modelfleet.progress import Progress

_PNNX_TIMEOUT_S = 600
ONNX2TF_VERSION = "1.29.24"  # the version hack/onnx2tf-venv.sh installs
ONNX2TF_ENV = "MODELFLEET_ONNX2TF"  # path of an onnx2tf executable, overriding the default venv
_ONNX2TF_TIMEOUT_S = 1200  # it runs every operator in onnxruntime and TensorFlow to check layouts
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")  # onnx2tf colours its log lines unconditionally


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


def to_tflite(loaded: LoadedSource, input_spec: TensorSpec, out: Path, log: Path, progress: Progress) -> None:
    """Convert to fp32 TFLite with a dynamic batch fixed to 1 and the NCHW input kept: torch sources
    with litert-torch, ONNX sources with onnx2tf."""
    if loaded.format == SourceFormat.onnx:
        _onnx_to_tflite(loaded.path, input_spec, out, log, progress)
        return
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


def _onnx_to_tflite(source: Path, input_spec: TensorSpec, out: Path, log: Path, progress: Progress) -> None:
    """Run onnx2tf on a copy of the model (it rewrites its input file) in a work directory beside `log`.

    `-kat` keeps the input exactly as the ONNX model declares it (NCHW), so the TFLite model takes
    the same tensors as every other artifact; it also keeps onnx2tf from downloading sample images,
    which it does for any NHWC input with 3 channels. `-ois` fixes every dimension (batch 1).
    """
    binary = _onnx2tf_binary()
    workdir = log.with_name(f"{log.stem}.onnx2tf")
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, workdir / "model.onnx")
    shape = ",".join(str(d) for d in sample_input(input_spec).shape)
    cmd = [str(binary), "-i", "model.onnx", "-o", "tflite",
           "-ois", f"{input_spec.name}:{shape}", "-kat", input_spec.name]
    # onnx2tf calls `onnxsim` from PATH: put its own venv's bin first. Quieter TensorFlow C++ logging.
    env = {**os.environ, "PATH": f"{binary.parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    progress.step("convert", f"onnx2tf {ONNX2TF_VERSION}, input {input_spec.name} [{shape}] kept NCHW")
    started = time.monotonic()
    try:
        with open(log, "ab") as f:
            done = subprocess.run(cmd, cwd=workdir, stdout=f, stderr=subprocess.STDOUT, env=env,
                                  timeout=_ONNX2TF_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        raise UnsupportedModel(f"onnx2tf did not finish within {_ONNX2TF_TIMEOUT_S} s; log: {_plain_tail(log)}",
                               reason="ConversionFailed") from e
    built = workdir / "tflite" / "model_float32.tflite"
    if done.returncode != 0 or not built.is_file():
        raise UnsupportedModel(f"onnx2tf failed (exit {done.returncode}): {_plain_tail(log)}",
                               reason="ConversionFailed")
    built.replace(out)
    progress.step("convert", f"onnx2tf done in {time.monotonic() - started:.1f} s")


def _onnx2tf_binary() -> Path:
    configured = os.environ.get(ONNX2TF_ENV)
    binary = Path(configured) if configured else (
        Path.home() / ".cache" / "modelfleet" / f"onnx2tf-{ONNX2TF_VERSION}" / "bin" / "onnx2tf")
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        where = f"{ONNX2TF_ENV}={configured} is not an executable" if configured else f"{binary} does not exist"
        raise UnsupportedModel(
            f"TFLite conversion of an ONNX source needs onnx2tf {ONNX2TF_VERSION} in its own venv, and {where}: "
            f"install it with `bash hack/onnx2tf-venv.sh` (it prints the executable's path for {ONNX2TF_ENV})",
            reason="ConverterUnavailable",
        )
    return binary


def _plain_tail(log: Path) -> str:
    return _ANSI_ESCAPE.sub("", tail(log))
