"""Peak memory of int8-static calibration on a real text recognizer, bounded versus unbounded.

The model is PaddleOCR's `ch_PP-OCRv4_rec_infer.onnx` (10.9 MB; paddle2onnx, dynamic batch and width), from
the rapidocr-onnxruntime wheel. Its calibration inputs are real text: lines of 4-8 words of scikit-learn's dataset
descriptions (two of the example's lines each) rendered in matplotlib's DejaVu fonts by examples/paddle-ocr-cls/prepare.py's own functions,
pre-processed as PaddleOCR's recognizer does it (height 48, width scaled by the aspect ratio up to 320,
(x / 255 - 0.5) / 0.5, zero padding on the right): 1x3x48x320 floats per sample.

Each run is a child process calibrating the model as the pipeline has it by then (opset 17, onnxslim,
onnxruntime's quantization pre-processing; prepared once, beforehand) with one method; its peak RSS is the
child's own high-water mark (VmHWM; ru_maxrss would include the parent's, which Linux carries over fork and
exec). `bounded` is `modelfleet.pipeline.quantize._int8_static` (batch and chunk from its memory budget,
onnxruntime's strided calibration); `unbounded` is the code before it: one quantize_static call fed batches of
32, which keeps every batch's tensors until the end. An unbounded run uses at most --unbounded-samples samples;
when its estimate passes --limit-gb it is skipped with the reason and tried on half the samples until it fits.
A child whose RSS passes the limit is killed.

Usage: python bench/calibration_memory.py [--samples 128] [--methods minmax,entropy,percentile]
                                          [--unbounded-samples 64] [--limit-gb 12] [--json PATH]
"""

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "paddle-ocr-cls"))
import prepare as paddle_cls  # noqa: E402  (the example's text lines and rendering)

MODEL = "ch_PP-OCRv4_rec_infer.onnx"
HEIGHT, WIDTH = 48, 320
METHODS = ("minmax", "entropy", "percentile")
UNBOUNDED_BATCH = 32  # what the code before fed per calibration call
BASE_BYTES = 400 * 2**20  # a calibrating process before any tensors: Python, onnx, onnxruntime, the models


def rec_preprocess(image) -> np.ndarray:
    """PaddleOCR's recognizer pre-processing (rapidocr's TextRecognizer.resize_norm_img at 3x48x320)."""
    from PIL import Image

    width = min(WIDTH, int(math.ceil(HEIGHT * image.width / image.height)))
    resized = np.asarray(image.resize((width, HEIGHT), Image.BILINEAR), dtype=np.float32)
    padded = np.zeros((3, HEIGHT, WIDTH), dtype=np.float32)
    padded[:, :, :width] = (resized.transpose(2, 0, 1) / 255 - 0.5) / 0.5
    return padded


def text_lines(count: int, seed: int = 0) -> np.ndarray:
    import matplotlib

    rng = np.random.default_rng(seed)
    lines = paddle_cls.sentences()
    rng.shuffle(lines)
    font_dir = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    # two of the example's short lines per image: a recognizer reads whole text lines, wider than 4:1
    return np.stack([rec_preprocess(paddle_cls.render(" ".join(lines[2 * i: 2 * i + 2]), font_dir, rng))
                     for i in range(count)])


def unbounded(src: Path, out: Path, method: str, samples: np.ndarray) -> None:
    """int8-static calibration as modelfleet did it before: one quantize_static call, batches of 32."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static

    from modelfleet.api.compressedmodel import CalibrationMethod as Method
    from modelfleet.api.compressedmodel import Compression
    from modelfleet.pipeline.quantize import _CALIBRATION, compact

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = (samples[i: i + UNBOUNDED_BATCH] for i in range(0, len(samples), UNBOUNDED_BATCH))

        def get_next(self):
            batch = next(self._batches, None)
            return None if batch is None else {"x": batch}

    quantize_static(str(src), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=Compression().per_channel,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=getattr(CalibrationMethod, _CALIBRATION[Method(method)]),
                    extra_options={"CalibTensorRangeSymmetric": False, "QuantizeBias": False})
    compact(out)


def baseline(model: Path, workdir: Path) -> tuple[Path, list[str]]:
    """The model as the pipeline quantizes it: converted to the default opset (paddle2onnx wrote 12), simplified
    by onnxslim, then onnxruntime's quantization pre-processing."""
    import onnx
    from onnx import version_converter

    from modelfleet.api.compressedmodel import Compression
    from modelfleet.pipeline import quantize, source

    graph = onnx.load(str(model))
    for version in range(source.onnx_opset(graph) + 1, Compression().opset + 1):
        graph = version_converter.convert_version(graph, version)
    onnx.save(graph, str(workdir / "exported.onnx"))
    quantize.optimize(workdir / "exported.onnx", workdir / "fp32.onnx")
    return quantize._prepared(workdir / "fp32.onnx", workdir)


def child(mode: str, method: str, prepared: Path, data: Path, samples: int, out: Path) -> None:
    """Runs in the child process: one calibration, then its plan and time as one JSON line."""
    from modelfleet.api.compressedmodel import Compression
    from modelfleet.pipeline import quantize
    from modelfleet.pipeline.dataset import Inputs

    inputs = np.load(data)[:samples]
    plan = {}
    if mode == "bounded":
        real_plan = quantize.calibration_plan

        def recorded_plan(*args, **kwargs):
            plan["per_sample"], plan["batch"], plan["chunk"] = args[0], *real_plan(*args, **kwargs)
            return plan["batch"], plan["chunk"]

        quantize.calibration_plan = recorded_plan
    start = time.perf_counter()
    if mode == "bounded":
        compression = Compression.model_validate({"calibrationMethod": method, "calibrationSamples": samples})
        quantize._int8_static(prepared, out, compression, Inputs.single("x", inputs), None)
    else:
        unbounded(prepared, out, method, inputs)
    seconds = time.perf_counter() - start
    # VmHWM: this process' own high-water mark. ru_maxrss would not do: Linux carries it over fork and exec,
    # so a child starts at its parent's RSS.
    peak = next(int(line.split()[1]) * 1024 for line in Path("/proc/self/status").read_text().splitlines()
                if line.startswith("VmHWM:"))
    print(json.dumps({"seconds": seconds, "peak_rss_bytes": peak, **plan}))


def run_child(mode: str, method: str, prepared: Path, data: Path, samples: int, workdir: Path,
              limit: int) -> dict:
    """The child's peak RSS (its own VmHWM), wall time and plan; killed when its RSS passes `limit` bytes."""
    out = workdir / f"{mode}-{method}.onnx"
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-W", "ignore", __file__, "--child", mode, method, str(prepared),
                             str(data), str(samples), str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    killed, seen = threading.Event(), [0]

    def watch() -> None:  # the machine is shared: a child past the limit is killed, not let into swap or the OOM killer
        while proc.returncode is None:
            seen[0] = max(seen[0], rss := _rss(proc.pid))
            if rss > limit:
                killed.set()
                os.kill(proc.pid, signal.SIGKILL)
                return
            time.sleep(0.2)

    threading.Thread(target=watch, daemon=True).start()
    stdout, stderr = proc.communicate()
    row = {"mode": mode, "method": method, "samples": samples, "peak_rss_bytes": seen[0],
           "process_seconds": time.perf_counter() - started}
    if killed.is_set():
        return row | {"error": f"killed at RSS > {limit / 2**30:g} GB"}
    if proc.returncode:
        return row | {"error": (stderr.strip().splitlines() or ["?"])[-1]}
    return row | json.loads(stdout.strip().splitlines()[-1])


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def estimate_unbounded(method: str, samples: int, per_sample: int) -> int:
    """What the code before holds at its peak, measured: every tensor of every sample. Entropy and percentile keep
    them all until the end; minmax holds every tensor of a batch of 32 in the session (6.5 GB for 32 samples), and
    its second batch did not reuse the first one's memory (64 samples passed 12 GB)."""
    return BASE_BYTES + samples * per_sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--unbounded-samples", type=int, default=64, help="at most this many for unbounded runs")
    parser.add_argument("--limit-gb", type=float, default=12.0,
                        help="skip an unbounded run estimated past this, kill any child that passes it")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, method, prepared, data, samples, out = args.child
        child(mode, method, Path(prepared), Path(data), int(samples), Path(out))
        return

    from modelfleet.pipeline.dataset import Inputs
    from modelfleet.pipeline.quantize import _bytes_per_sample

    model = Path(paddle_cls.model_path()).with_name(MODEL)
    limit = int(args.limit_gb * 2**30)
    rows = []
    with tempfile.TemporaryDirectory(prefix="calibration-memory-") as tmp:
        workdir = Path(tmp)
        data = workdir / "calibration.npy"
        np.save(data, text_lines(args.samples))
        prepared, notes = baseline(model, workdir)
        per_sample = _bytes_per_sample(prepared, Inputs.single("x", np.load(data)[:1]), None)
        print(f"{MODEL}: {model.stat().st_size / 1e6:.1f} MB, input 1x3x{HEIGHT}x{WIDTH} float; {args.samples} "
              f"calibration samples (rendered text lines); {per_sample / 2**20:.0f} MiB of tensors per sample")
        for note in notes:
            print(f"  note: {note}")
        print(f"{'method':<11} {'mode':<10} {'samples':>7} {'batch':>5} {'chunk':>5} {'peak RSS':>10} "
              f"{'calibrate':>10} {'process':>8}")
        for method in args.methods.split(","):
            for mode in ("bounded", "unbounded"):
                samples = args.samples if mode == "bounded" else min(args.samples, args.unbounded_samples)
                # An unbounded run past the limit is skipped, and runs again on half the samples until it fits,
                # for a measured figure beside the bounded one.
                while mode == "unbounded" and (need := estimate_unbounded(method, samples, per_sample)) > limit:
                    row = {"mode": mode, "method": method, "samples": samples, "skipped": (
                        f"would need about {need / 2**30:.1f} GB (> {args.limit_gb:g} GB): {samples} samples x "
                        f"{per_sample / 2**20:.0f} MiB of tensors")}
                    print(f"{method:<11} {mode:<10} {samples:>7}  skipped: {row['skipped']}")
                    rows.append(row)
                    samples //= 2
                if samples == 0:
                    continue
                row = run_child(mode, method, prepared, data, samples, workdir, limit)
                rows.append(row)
                batch = row.get("batch", UNBOUNDED_BATCH)
                chunk = row.get("chunk", samples)
                if "error" in row:
                    print(f"{method:<11} {mode:<10} {samples:>7}  FAILED: {row['error']} "
                          f"(peak {row['peak_rss_bytes'] / 2**30:.2f} GB)")
                    continue
                print(f"{method:<11} {mode:<10} {samples:>7} {batch:>5} {chunk:>5} "
                      f"{row['peak_rss_bytes'] / 2**30:>8.2f} GB {row['seconds']:>8.1f} s "
                      f"{row['process_seconds']:>6.1f} s")
    if args.json:
        args.json.write_text(json.dumps({"model": MODEL, "per_sample_bytes": per_sample, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
