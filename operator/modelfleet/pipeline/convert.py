"""Edge conversions: ncnn through pnnx, TFLite through litert-torch (torch sources) or onnx2tf (ONNX sources),
and their int8 variants: ncnn's own calibration and conversion tools, ai-edge-quantizer for TFLite.

Converters print a lot; their output goes to a log file next to the work directory and
only its tail reaches an error message.

onnx2tf pins its own TensorFlow, numpy and onnx, so it lives in a venv of its own (made by
hack/onnx2tf-venv.sh) and runs as a subprocess. ncnn's int8 tools are C++ that hack/ncnn-tools.sh builds.
"""

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from modelfleet.api.compressedmodel import SourceFormat, TensorSpec
from modelfleet.errors import UnsupportedModel, first_line
from modelfleet.pipeline.logs import redirect_fds, tail
from modelfleet.pipeline.source import LoadedSource, callable_module, sample_input
from modelfleet.progress import Progress

_PNNX_TIMEOUT_S = 600
ONNX2TF_VERSION = "1.29.24"  # the version hack/onnx2tf-venv.sh installs
ONNX2TF_ENV = "MODELFLEET_ONNX2TF"  # path of an onnx2tf executable, overriding the default venv
_ONNX2TF_TIMEOUT_S = 1200  # it runs every operator in onnxruntime and TensorFlow to check layouts
_TF_SCOPE = re.compile(r"[A-Za-z0-9.][A-Za-z0-9_.\\/>-]*")  # TensorFlow's rule for a scope name
_TF_UNSAFE = re.compile(r"[^A-Za-z0-9_.\\/>-]")
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")  # onnx2tf colours its log lines unconditionally
NCNN_TOOLS_RELEASE = "20260526"  # the release hack/ncnn-tools.sh builds, the same as the ncnn wheel's
NCNN_TOOLS_ENV = "MODELFLEET_NCNN_TOOLS"  # directory holding ncnn2table and ncnn2int8, overriding the default
_NCNN_TOOL_TIMEOUT_S = 1800  # ncnn2table runs every calibration sample through the model, single-threaded
_NCNN_QUANTIZED_LAYERS = ("Convolution", "ConvolutionDepthWise", "InnerProduct")  # what ncnn2table calibrates


def to_ncnn(onnx_fp32: Path, input_spec: TensorSpec, fp16: bool, workdir: Path) -> tuple[Path, Path]:
    """Convert the fp32 ONNX model with pnnx; returns (param, bin). Unknown layers name the operator."""
    workdir.mkdir(parents=True, exist_ok=True)
    # pnnx tells ONNX from TorchScript (what it gets when a torch source's ONNX export failed) by the suffix.
    model = workdir / ("model.onnx" if onnx_fp32.suffix == ".onnx" else "model.pt")
    model.write_bytes(onnx_fp32.read_bytes())
    shape = ",".join(str(d) for d in sample_input(input_spec).shape)
    dtype = {"float32": "f32", "float16": "f16", "int64": "i64", "int32": "i32", "uint8": "u8"}[input_spec.dtype]
    # A traced TorchScript carries the shapes it was traced with, and pnnx refuses any other inputshape.
    inputshape = [f"inputshape=[{shape}]{dtype}"] if model.suffix == ".onnx" else []
    cmd = [_pnnx_binary(), model.name, *inputshape, f"fp16={int(fp16)}"]
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


def to_ncnn_int8(param: Path, weights: Path, calibration: np.ndarray, workdir: Path) -> tuple[Path, Path]:
    """Quantize an fp32 ncnn model to int8 with ncnn's own tools; returns (param, bin).

    ncnn2table runs the calibration samples (one .npy file each, the layout ncnn.Mat takes) through
    the model and writes per-channel weight scales and activation scales for every Convolution,
    ConvolutionDepthWise and InnerProduct; ncnn2int8 rewrites those layers in int8. Activation ranges come
    from ACIQ: KL divergence clips a sparse input (mostly zeros, as images with a blank background are) to
    a sliver of its range (digits: 0.06 of 1.0, 10% accuracy left); ACIQ keeps the digits CNN's accuracy.
    """
    tools = _ncnn_tools()
    workdir.mkdir(parents=True, exist_ok=True)
    samples = workdir / "calibration"
    samples.mkdir(exist_ok=True)
    for i, sample in enumerate(calibration):
        np.save(samples / f"{i}.npy", np.ascontiguousarray(sample, dtype=np.float32))
    # Relative paths: ncnn2table reads at most 255 characters per list line.
    (workdir / "calibration.txt").write_text("".join(f"calibration/{i}.npy\n" for i in range(len(calibration))))
    shape = ",".join(str(d) for d in reversed(calibration.shape[1:]))  # ncnn names dimensions w, h, c
    log = workdir / "ncnn-int8.log"
    _run_ncnn_tool([tools / "ncnn2table", str(param), str(weights), "calibration.txt", "model.table",
                    f"shape=[{shape}]", "method=aciq", "type=1"], workdir, log)
    table = workdir / "model.table"
    kept_fp32 = _convolutions_fed_1d(param, weights, calibration[0])
    if kept_fp32:
        _drop_from_table(table, kept_fp32)
        with open(log, "a") as out:
            out.write(f"kept in fp32 (1-D input, which ncnn's int8 convolution misreads): {', '.join(kept_fp32)}\n")
    _check_ncnn_table(table, param, kept_fp32)
    out_param, out_weights = workdir / "model-int8.ncnn.param", workdir / "model-int8.ncnn.bin"
    _run_ncnn_tool([tools / "ncnn2int8", str(param), str(weights), out_param.name, out_weights.name, "model.table"],
                   workdir, log)
    if not out_param.is_file() or not out_weights.is_file():
        raise UnsupportedModel(f"ncnn2int8 wrote no model: {tail(log)}", reason="ConversionFailed")
    return out_param, out_weights


def _run_ncnn_tool(cmd: list, workdir: Path, log: Path) -> None:
    name = Path(cmd[0]).name
    try:
        with open(log, "ab") as out:
            done = subprocess.run([str(c) for c in cmd], cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=_NCNN_TOOL_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        raise UnsupportedModel(f"{name} did not finish within {_NCNN_TOOL_TIMEOUT_S} s", reason="ConversionFailed") from e
    if done.returncode != 0:
        raise UnsupportedModel(f"{name} failed (exit {done.returncode}): {tail(log)}", reason="ConversionFailed")


def _convolutions_fed_1d(param: Path, weights: Path, sample: np.ndarray) -> list[str]:
    """Convolutions whose input is a 1-D blob: the 1x1 convolutions after a global pooling that squeeze-excite
    blocks (MobileNetV3, EfficientNet) are made of. fp32 ncnn runs them as fully connected layers; its int8
    convolution reads the vector as an image and returns garbage (PaddleOCR's classifier: 98% -> 50%)."""
    import ncnn

    convolutions = [(fields[1], fields[4]) for fields in (line.split() for line in param.read_text().splitlines()[2:])
                    if fields and fields[0] in ("Convolution", "ConvolutionDepthWise") and fields[2] == "1"]
    net = ncnn.Net()
    net.opt.use_packing_layout = False
    if net.load_param(str(param)) != 0 or net.load_model(str(weights)) != 0:
        raise UnsupportedModel(f"ncnn could not load {param.name}/{weights.name}", reason="ConversionFailed")
    fed_1d = []
    for layer, blob in convolutions:
        extractor = net.create_extractor()
        extractor.input("in0", ncnn.Mat(np.ascontiguousarray(sample, dtype=np.float32)).clone())
        status, mat = extractor.extract(blob)
        if status == 0 and mat.dims == 1:
            fed_1d.append(layer)
    return fed_1d


def _drop_from_table(table: Path, layers: list[str]) -> None:
    """ncnn2int8 leaves a layer without scales in fp32."""
    names = set(layers) | {f"{layer}_param_0" for layer in layers}
    lines = table.read_text().splitlines(keepends=True)
    table.write_text("".join(line for line in lines if line.split(maxsplit=1)[:1] and line.split()[0] not in names))


def _check_ncnn_table(table: Path, param: Path, kept_fp32: list[str]) -> None:
    """Every layer ncnn2table calibrates needs weight scales and a finite, positive activation scale: an input
    that is zero on every calibration sample (blank or constant calibration data) gets an infinite one, which
    ncnn2int8 would write into the model without a word. (An all-zero weight channel's infinite scale is
    harmless: its int8 outputs are dequantized by 1/scale = 0.)"""
    layers = [fields[1] for fields in (line.split() for line in param.read_text().splitlines()[2:])
              if fields and fields[0] in _NCNN_QUANTIZED_LAYERS and fields[1] not in kept_fp32]
    scales = {}
    if table.is_file():
        for line in table.read_text().splitlines():
            if line.strip():
                name, *values = line.split()
                scales[name] = [float(v) for v in values]
    for layer in layers:
        if not scales.get(f"{layer}_param_0"):
            raise UnsupportedModel(f"ncnn2table wrote no weight scales for layer {layer}", reason="CalibrationFailed")
        activation = scales.get(layer)
        if not activation:
            raise UnsupportedModel(f"ncnn2table wrote no activation scale for layer {layer}", reason="CalibrationFailed")
        if not all(np.isfinite(v) and v > 0 for v in activation):
            raise UnsupportedModel(
                f"ncnn2table found no activation range for layer {layer} (scale {activation[0]}): its input is zero "
                f"on every calibration sample; calibrate with representative data", reason="CalibrationFailed")


def _ncnn_tools() -> Path:
    configured = os.environ.get(NCNN_TOOLS_ENV)
    directory = Path(configured) if configured else (
        Path.home() / ".cache" / "modelfleet" / f"ncnn-tools-{NCNN_TOOLS_RELEASE}" / "bin")
    missing = [t for t in ("ncnn2table", "ncnn2int8") if not os.access(directory / t, os.X_OK)]
    if missing:
        where = f"{NCNN_TOOLS_ENV}={configured}" if configured else str(directory)
        raise UnsupportedModel(
            f"ncnn int8 needs ncnn's {' and '.join(missing)} ({NCNN_TOOLS_RELEASE}), not found in {where}: build them "
            f"with `bash hack/ncnn-tools.sh` (it prints the directory for {NCNN_TOOLS_ENV})",
            reason="ConverterUnavailable",
        )
    return directory


def _pnnx_binary() -> str:
    """The converter binary inside the pnnx package, found without importing it: the package's Python
    side imports torch, which the worker image for ONNX sources leaves out."""
    spec = importlib.util.find_spec("pnnx")
    for directory in (spec.submodule_search_locations or []) if spec else []:
        binary = Path(directory) / "pnnx"
        if binary.is_file():
            return str(binary)
    binary = Path(sys.executable).parent / "pnnx"
    if binary.is_file():
        return str(binary)
    raise UnsupportedModel("pnnx is not installed: ncnn conversion needs its converter binary "
                           "(pip install pnnx --no-deps, or the modelfleet worker image)", reason="ConverterUnavailable")


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


def to_tflite_int8(fp32: Path, calibration: np.ndarray, out: Path, log: Path) -> None:
    """Full-integer int8 TFLite from the fp32 one: ai-edge-quantizer's static recipe (int8 weights per channel,
    int8 activations) calibrated on the samples. Input and output become int8 too, with a scale and zero point
    (TfliteRunner quantizes and dequantizes them)."""
    from ai_edge_litert.interpreter import Interpreter

    from modelfleet.pipeline.dataset import batches

    interpreter = Interpreter(model_path=str(fp32))
    signatures = interpreter.get_signature_list()
    if len(signatures) != 1 or len(next(iter(signatures.values()))["inputs"]) != 1:
        raise UnsupportedModel(f"TFLite int8 calibration needs one signature with one input, the model has {signatures}",
                               reason="ConversionFailed")
    (key, io), = signatures.items()
    name = io["inputs"][0]
    batch = int(interpreter.get_input_details()[0]["shape"][0])  # the converted model's batch is fixed
    feed = [{name: b} for b, _ in batches(calibration, batch, exact=True)]
    try:
        with redirect_fds(log):
            from ai_edge_quantizer import quantizer, recipe

            quantize = quantizer.Quantizer(str(fp32), recipe.static_wi8_ai8())
            calibrated = quantize.calibrate({key: feed}, num_threads=os.cpu_count() or 1)
            quantize.quantize(calibrated).export_model(str(out), overwrite=True)
    except Exception as e:
        raise UnsupportedModel(f"ai-edge-quantizer failed: {first_line(e)}; log: {tail(log)}",
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
    write_tf_safe_copy(source, workdir / "model.onnx")
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
    add_default_signature(built)
    built.replace(out)
    progress.step("convert", f"onnx2tf done in {time.monotonic() - started:.1f} s")


def write_tf_safe_copy(source: Path, out: Path) -> None:
    """Copy an ONNX model with node names TensorFlow accepts as scope names. Other exporters name nodes freely
    (paddle2onnx: `Softmax@0`), and onnx2tf passes node names on to TensorFlow, which refuses such a scope.
    Node names carry no meaning in the graph (edges are tensor names), so renaming them is safe."""
    import onnx

    model = onnx.load(str(source))
    taken = {node.name for node in model.graph.node}
    for node in model.graph.node:
        if _TF_SCOPE.fullmatch(node.name):
            continue
        base = _TF_UNSAFE.sub("_", node.name) or node.op_type
        if not _TF_SCOPE.fullmatch(base):  # only the first character can still be wrong
            base = f"n{base}"
        name, n = base, 1
        while name in taken:
            name, n = f"{base}_{n}", n + 1
        taken.add(name)
        node.name = name
    onnx.save(model, str(out))


def add_default_signature(tflite: Path) -> None:
    """Give a TFLite model without a SignatureDef one over its main graph's inputs and outputs. onnx2tf falls back
    to TensorFlow's concrete-function converter for some graphs (paddle2onnx's, for one), which writes none;
    signature runners, and so ai-edge-quantizer's calibration, need it."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(tflite))
    if model.signatureDefs:
        return
    graph = model.subgraphs[0]

    def tensor_map(index: int):
        entry = schema.TensorMapT()
        entry.name, entry.tensorIndex = graph.tensors[index].name, index
        return entry

    signature = schema.SignatureDefT()
    signature.signatureKey = "serving_default"
    signature.subgraphIndex = 0
    signature.inputs = [tensor_map(i) for i in graph.inputs]
    signature.outputs = [tensor_map(i) for i in graph.outputs]
    model.signatureDefs = [signature]
    flatbuffer_utils.write_model(model, str(tflite))


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
