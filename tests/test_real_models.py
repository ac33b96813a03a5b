"""Three real pretrained models with real data and their own task metrics (examples/paddle-ocr-det,
examples/paddle-ocr-rec, examples/silero-vad): each example's prepare.py writes the model and its data at small
sizes, the arrays have the documented names, shapes and dtypes, and fp32 scores well on its real task, so data
that a pre-processing mistake broke fails here.

PaddleOCR's PP-OCRv4 detector and recognizer ship in the rapidocr-onnxruntime wheel, Silero VAD in the silero-vad
wheel (both test dependencies); the VAD's speech is synthesized by espeak-ng, a Debian package that
hack/espeak.sh installs (hack/prepare.sh's packages step)."""

import hashlib
import importlib.util
import json
import shutil
import sys

import numpy as np
import onnx
import pytest
import yaml

from conftest import REPO

pytestmark = pytest.mark.slow

EVALUATION, CALIBRATION = 24, 16


def example(directory: str, name: str):
    """An example's script as a module of its own (every example has a prepare.py: no shared `prepare` module)."""
    path = REPO / "examples" / directory / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{directory.replace('-', '_')}_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def needs(package: str) -> None:
    if importlib.util.find_spec(package) is None:
        pytest.fail(f"{package} is a test dependency (pip install -e '.[test]'): its wheel ships the model")


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def graph_inputs(path) -> dict[str, tuple[str, list]]:
    """Each graph input's dtype and shape (None: a dynamic dimension)."""
    model = onnx.load(str(path))
    return {i.name: (onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type).name,
                     [d.dim_value if d.HasField("dim_value") else None for d in i.type.tensor_type.shape.dim])
            for i in model.graph.input}


def check_image_inputs(path, samples: int, shape: tuple[int, ...]) -> np.ndarray:
    with np.load(path) as data:
        assert data.files == ["inputs"], data.files
        inputs = data["inputs"]
    assert inputs.dtype == np.float32 and inputs.shape == (samples, *shape), (inputs.dtype, inputs.shape)
    # (x / 255 - 0.5) / 0.5: paper near +1, ink near -1. Pixels left in [0, 1] or [0, 255] fail here.
    assert inputs.max() <= 1.0 + 1e-6 and inputs.min() >= -1.0 - 1e-6 and inputs.min() < -0.5
    return inputs


def test_paddle_ocr_detector_on_rendered_pages(tmp_path):
    needs("rapidocr_onnxruntime")
    prepare = example("paddle-ocr-det", "prepare")
    metric = example("paddle-ocr-det", "task_metric")
    out = prepare.prepare(tmp_path / "data", evaluation=EVALUATION, calibration=CALIBRATION)
    assert sha256(out / "det.onnx") == sha256(prepare.model_path())          # the wheel's model, unchanged
    assert graph_inputs(out / "det.onnx")["x"][0] == "float32"
    check_image_inputs(out / "calibration.npz", CALIBRATION, (3, 320, 320))
    evaluation = check_image_inputs(out / "evaluation.npz", EVALUATION, (3, 320, 320))
    pages = json.loads((out / "evaluation_truth.json").read_text())["pages"]
    assert len(pages) == EVALUATION and all(3 <= len(p["boxes"]) <= 8 and p["height"] == p["width"] for p in pages)

    result = metric.evaluate(out / "det.onnx", out)
    # About 99% at the default 200 pages; a page whose boxes are not where its text is scores near 0.
    assert result["hmean"] >= 0.9, result
    assert metric.task_metric(out / "det.onnx", out) == result["hmean"]

    # The metric reads the ground truth against the right pages: upside down, the same pages score nothing.
    np.savez(out / "evaluation.npz", inputs=evaluation[:, :, ::-1, :])
    assert metric.evaluate(out / "det.onnx", out)["hmean"] < 0.3


def test_paddle_ocr_recognizer_on_rendered_lines(tmp_path):
    needs("rapidocr_onnxruntime")
    prepare = example("paddle-ocr-rec", "prepare")
    metric = example("paddle-ocr-rec", "task_metric")
    out = prepare.prepare(tmp_path / "data", evaluation=EVALUATION, calibration=CALIBRATION)
    assert sha256(out / "rec.onnx") == sha256(prepare.model_path())
    assert graph_inputs(out / "rec.onnx")["x"][0] == "float32"
    check_image_inputs(out / "calibration.npz", CALIBRATION, (3, 48, 320))
    check_image_inputs(out / "evaluation.npz", EVALUATION, (3, 48, 320))
    texts = json.loads((out / "evaluation_truth.json").read_text())["texts"]
    assert len(texts) == EVALUATION and all(t.strip() == t and t for t in texts)

    result = metric.evaluate(out / "rec.onnx", out)
    # About 97% exact and 99.6% of characters at the default 300 lines.
    assert result["exact_match"] >= 0.85 and result["char_accuracy"] >= 0.95, result
    assert metric.task_metric(out / "rec.onnx", out) == result["exact_match"]
    # A model whose metadata lost the dictionary (a converted variant) decodes with rec.onnx's beside the data.
    stripped = onnx.load(str(out / "rec.onnx"))
    del stripped.metadata_props[:]
    onnx.save(stripped, str(tmp_path / "stripped.onnx"))
    assert metric.evaluate(tmp_path / "stripped.onnx", out) == result


def test_silero_vad_on_synthesized_speech(tmp_path):
    needs("silero_vad")
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed: the VAD's speech is synthesized with it. Install it with "
                    "`bash hack/espeak.sh` (hack/prepare.sh's packages step runs it) or `apt-get install espeak-ng`")
    prepare = example("silero-vad", "prepare")
    metric = example("silero-vad", "task_metric")
    out = prepare.prepare(tmp_path / "data", evaluation=EVALUATION, calibration=CALIBRATION, clips=4)
    assert sha256(out / "vad.onnx") == sha256(prepare.model_path())
    declared = graph_inputs(out / "vad.onnx")
    assert declared == {"input": ("float32", [None, None]), "state": ("float32", [2, None, 128]), "sr": ("int64", [])}

    for name, samples in (("calibration", CALIBRATION), ("evaluation", EVALUATION)):
        with np.load(out / f"{name}.npz") as data:
            arrays = {key: data[key] for key in data.files}
        assert set(arrays) == set(declared), arrays.keys()      # one array per graph input, by name
        assert {k: a.dtype.name for k, a in arrays.items()} == {k: d for k, (d, _) in declared.items()}
        # input: batch axis first, (N, 576); state: batch axis second, so (N, *full shape); sr: 0-d, so (N,).
        assert arrays["input"].shape == (samples, 576)
        assert arrays["state"].shape == (samples, 2, 1, 128)
        assert arrays["sr"].shape == (samples,) and (arrays["sr"] == 16000).all()
        # Teacher-forced: each call carries the state fp32 had reached there, not the zeros of a fresh stream.
        assert np.count_nonzero(np.abs(arrays["state"]).reshape(samples, -1).max(axis=1) > 0) >= samples - 2
        assert np.abs(arrays["input"]).max() <= 1.0

    with np.load(out / "evaluation_clips.npz") as clips:
        audio, labels = clips["audio"], clips["labels"]
    assert audio.dtype == np.float32 and audio.shape == (4, 250 * 512)
    assert labels.dtype == np.uint8 and labels.shape == (4, 250) and 0.2 < labels.mean() < 0.8

    result = metric.evaluate(out / "vad.onnx", out)
    # About 97.5% at the default 16 clips; every chunk called silence would score labels' share of silence.
    assert result["accuracy"] >= 0.9 and result["f1"] >= 0.85, result
    assert metric.task_metric(out / "vad.onnx", out) == result["accuracy"]

    # The metric streams as silero_vad's own OnnxWrapper does (context and state carried), with the wheel's
    # default ONNX file (silero_vad.onnx: the same weights behind nested Ifs).
    import torch
    from silero_vad.utils_vad import OnnxWrapper

    wrapper = OnnxWrapper(str(prepare.model_path().with_name("silero_vad.onnx")), force_onnx_cpu=True)
    theirs = [wrapper(torch.from_numpy(audio[0, k * 512:(k + 1) * 512].copy()), 16000).item() for k in range(250)]
    ours = metric.probabilities(out / "vad.onnx", audio[:1])[0]
    assert np.abs(ours - np.array(theirs)).max() < 1e-4


def test_the_silero_pipeline_feeds_every_input_and_compares_every_output(tmp_path):
    """Three inputs (audio with a batch axis, a 0-d int64 sample rate, a state whose batch axis is second) and two
    outputs: the pipeline calls the model one sample at a time, compares both outputs (the worst counts), writes
    every input into the smoke data and Triton's config, and an edge target says why it cannot take the model."""
    needs("silero_vad")
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is missing: `bash hack/espeak.sh` or `apt-get install espeak-ng`")
    from modelfleet.api import CompressedModel
    from modelfleet.pipeline.run import compress
    from modelfleet.pipeline.signature import read_smoke
    from modelfleet.progress import Progress

    data = example("silero-vad", "prepare").prepare(tmp_path / "data", evaluation=EVALUATION,
                                                    calibration=CALIBRATION, clips=4)
    manifest = yaml.safe_load((REPO / "examples/silero-vad/compressedmodel.yaml").read_text())
    spec = manifest["spec"]
    spec["source"]["uri"] = f"file://{data / 'vad.onnx'}"
    spec["dataset"] = {"calibration": {"uri": f"file://{data / 'calibration.npz'}"},
                       "evaluation": {"uri": f"file://{data / 'evaluation.npz'}"}, "metric": "fidelity"}
    spec["benchmark"] = {"threads": 1, "warmupRuns": 2, "runs": 10}
    spec["targets"]["edge"] = [{"name": "boards", "runtime": "ncnn", "precision": "fp32"}]
    result = compress(CompressedModel.model_validate(manifest), tmp_path / "out", tmp_path, Progress(enabled=False))

    artifacts = {a.name: a for a in result.artifacts}
    fp16 = artifacts["onnx-fp16"].fidelity
    assert [o.name for o in fp16.outputs] == ["output", "stateN"] and fp16.output in ("output", "stateN")
    assert fp16.cosine == min(o.cosine for o in fp16.outputs)  # the worst output is the one reported
    baseline = artifacts["onnx-fp32"]
    assert [t.name for t in baseline.signature.inputs] == ["input", "sr", "state"]
    inputs, outputs = read_smoke(tmp_path / "out" / baseline.smoke, baseline.signature)
    assert inputs.batched == {"input": True, "sr": False, "state": False} and len(outputs) == 2
    assert inputs.feed(0, 1)["sr"].shape == () and inputs.feed(0, 1)["state"].shape == (2, 1, 128)
    (edge,) = [f for f in result.failures if f.target == "ncnn-fp32-boards"]
    assert edge.reason == "MultipleInputs" and "sr (no batch axis)" in edge.message
