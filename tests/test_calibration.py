"""int8-static calibration in bounded memory: batches and chunks from a budget, onnxruntime's strided calibration.

On PaddleOCR's text-direction classifier (the rapidocr-onnxruntime wheel's, prepared as the pipeline prepares an
ONNX source: opset 17, onnxslim, onnxruntime's pre-processing) and rendered real text
(examples/paddle-ocr-cls/prepare.py). bench/calibration_memory.py measures the memory on a model where it matters.
"""

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from conftest import REPO
from modelfleet.api.compressedmodel import CalibrationMethod, Compression
from modelfleet.pipeline import quantize
from modelfleet.pipeline.dataset import Inputs
from modelfleet.pipeline.quantize import CALIBRATION_MEMORY_BYTES, calibration_plan

sys.path.insert(0, str(REPO / "examples" / "paddle-ocr-cls"))
import prepare  # noqa: E402  (the example's own data preparation)

SAMPLES = 16
MIB = 2**20


@pytest.fixture(scope="module")
def paddle_cls(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """The classifier as the pipeline has it when it quantizes, and 16 rendered text lines."""
    import matplotlib
    from onnx import version_converter

    from modelfleet.pipeline import source

    workdir = tmp_path_factory.mktemp("calibration")
    graph = onnx.load(str(prepare.model_path()))
    for version in range(source.onnx_opset(graph) + 1, Compression().opset + 1):
        graph = version_converter.convert_version(graph, version)
    onnx.save(graph, str(workdir / "exported.onnx"))
    quantize.optimize(workdir / "exported.onnx", workdir / "fp32.onnx")
    prepared, _ = quantize._prepared(workdir / "fp32.onnx", workdir)
    rng = np.random.default_rng(7)
    lines = prepare.sentences()[:SAMPLES]
    inputs = prepare.dataset(lines, Path(matplotlib.get_data_path()) / "fonts" / "ttf", rng)["inputs"]
    return prepared, inputs


def calibrate(paddle_cls, out: Path, method: str, plan: tuple[int, int], monkeypatch) -> tuple[onnx.ModelProto, int]:
    """int8-static with the (batch, chunk) plan given; returns the quantized model and how many chunks it took."""
    prepared, inputs = paddle_cls
    chunks = []
    set_range = quantize._Chunks.set_range

    def counted(self, start_index, end_index):
        chunks.append((start_index, end_index))
        set_range(self, start_index, end_index)

    with monkeypatch.context() as patch:
        patch.setattr(quantize, "calibration_plan", lambda *args, **kwargs: plan)
        patch.setattr(quantize._Chunks, "set_range", counted)
        compression = Compression.model_validate({"calibrationMethod": method, "calibrationSamples": SAMPLES})
        quantize._int8_static(prepared, out, compression, Inputs.single("x", inputs), None)
    return onnx.load(str(out)), len(chunks) - 1  # the first call is the reader's own, before onnxruntime's


def initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}


@pytest.mark.slow  # real calibrations of a real model: the second tier
def test_streamed_minmax_gives_the_scales_of_one_pass_over_everything(paddle_cls, tmp_path, monkeypatch):
    streamed, chunks = calibrate(paddle_cls, tmp_path / "streamed.onnx", "minmax", (1, 2), monkeypatch)
    at_once, one = calibrate(paddle_cls, tmp_path / "at-once.onnx", "minmax", (SAMPLES, SAMPLES), monkeypatch)
    assert (chunks, one) == (SAMPLES // 2, 1)  # onnxruntime collected chunk by chunk
    ours, theirs = initializers(streamed), initializers(at_once)
    assert ours.keys() == theirs.keys()
    scales = [name for name in ours if ours[name].dtype == np.float32 and ours[name].size == 1]
    assert len(scales) > 50  # the activations' scales, and the weights' (which calibration does not change)
    for name in ours:  # min and max of chunks are those of everything; one sample per call or all 16 differ in
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-5, err_msg=name)  # float rounding at most


@pytest.mark.slow
@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_methods_calibrate_chunk_by_chunk(paddle_cls, tmp_path, monkeypatch, method):
    quantized, chunks = calibrate(paddle_cls, tmp_path / f"{method}.onnx", method, (2, 4), monkeypatch)
    assert chunks == SAMPLES // 4
    assert sum(node.op_type == "QuantizeLinear" for node in quantized.graph.node) > 20
    _, inputs = paddle_cls
    fp32 = ort.InferenceSession(str(paddle_cls[0]), providers=["CPUExecutionProvider"]).run(None, {"x": inputs})[0]
    int8 = ort.InferenceSession(str(tmp_path / f"{method}.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"x": inputs})[0]
    assert np.isfinite(int8).all()
    assert (fp32.argmax(1) == int8.argmax(1)).mean() >= 0.75


@pytest.mark.slow
def test_a_sample_costs_every_tensor_the_graph_computes(paddle_cls):
    """The classifier reads 3x48x192 floats (108 KiB) and computes about 10 MiB of tensors per sample: batches of
    24 in the default budget, minmax in one pass over 128 samples, entropy and percentile 24 samples at a time."""
    prepared, inputs = paddle_cls
    per_sample = quantize._bytes_per_sample(prepared, Inputs.single("x", inputs), None)
    assert 8 * MIB < per_sample < 13 * MIB
    batch = CALIBRATION_MEMORY_BYTES // 2 // per_sample
    assert calibration_plan(per_sample, 128, CalibrationMethod.minmax, None) == (batch, 128)
    assert calibration_plan(per_sample, 128, CalibrationMethod.entropy, None) == (batch, batch)


@pytest.mark.parametrize("per_sample, samples, method, fixed, expected", [
    (194 * MIB, 128, "minmax", None, (1, 128)),      # PaddleOCR's recognizer at 48x320: one sample per call
    (194 * MIB, 128, "entropy", None, (1, 1)),       # ... and per histogram update
    (60 * MIB, 128, "percentile", None, (4, 4)),
    (60 * MIB, 128, "minmax", None, (4, 128)),       # minmax keeps two numbers per tensor and call: one chunk
    (100 * 1024, 256, "entropy", None, (32, 256)),   # a small model: as before, batches of 32, all at once
    (100 * 1024, 8, "minmax", None, (8, 8)),
    (60 * MIB, 128, "entropy", 8, (8, 8)),           # a fixed batch dimension decides the batch
    (1024 * MIB, 64, "percentile", 1, (1, 1)),       # more than the budget per sample: one at a time
])
def test_batch_and_chunk_come_from_the_memory_budget(per_sample, samples, method, fixed, expected):
    assert calibration_plan(per_sample, samples, CalibrationMethod(method), fixed) == expected
