"""A real pretrained text detector from another framework: PaddleOCR's PP-OCRv4 DB detector.

The model is `ch_PP-OCRv4_det_infer.onnx` (a PP-LCNetV3 backbone, an FPN-style neck with upsampling,
and the Differentiable Binarization head: one text probability map at the input's resolution; 4.7 MB),
exported by PaddlePaddle's paddle2onnx at opset 12 with dynamic batch, height and width. It ships
inside the `rapidocr-onnxruntime` wheel (Apache-2.0), so nothing is downloaded here.

The data is real text, rendered: square pages (320 to 640 pixels a side) holding 3 to 8 lines of
prose from scikit-learn's dataset descriptions, each line at its own random position, font (the
DejaVu fonts that ship with matplotlib: sans, serif, mono; regular, bold, oblique), size (11 to 21
pixels at the model's scale) and ink (a fifth of the lines faint), on paper of a random grey or
tint; half the pages carry a ruled line or a frame (ink that is not text), some uneven lighting,
slight blur and sensor noise. The ground truth is known by construction: one box per line, the
ink's bounding box in page pixels with a margin of 15% of the line's height on every side (see
MARGIN). Pre-processing is rapidocr's own `DetPreProcess` (imported from the wheel), as its
TextDetector runs it, but with a fixed size: limit_type "max" and limit_side_len 320 turn every
square page into 320x320; BGR channel order, (x / 255 - 0.5) / 0.5, CHW. So every sample has one
shape, 3x320x320.

task_metric.py beside this file runs the real DB post-processing (rapidocr's DBPostProcess, with the
thresholds of rapidocr's config.yaml) on a model's probability maps and scores the detected lines
against the ground truth: precision, recall and their harmonic mean (hmean, F1) at IoU >= 0.5.

Writes into the output directory (default: data/ beside this file):
  det.onnx               the model, copied unchanged from the wheel
  calibration.npz        inputs for int8 calibration (inputs)
  evaluation.npz         pages with a disjoint set of text lines (inputs)
  evaluation_truth.json  per evaluation page: its size and the ground-truth boxes [x0, y0, x1, y1]

Usage: python examples/paddle-ocr-det/prepare.py [--out DIR] [--evaluation N] [--calibration N]
"""

import argparse
import importlib.util
import json
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

MODEL = "ch_PP-OCRv4_det_infer.onnx"
SIZE = 320   # the fixed model input: 1x3xSIZExSIZE
# Ground-truth boxes: each line's ink box with this fraction of its height added on every side, as annotators
# draw them (ICDAR-style labels, which DB learns to reproduce: it finds a shrunk text kernel and unclips it by
# 1.6). Against tight ink boxes, 8% of the lines fp32 finds (most of those under 12 pixels high) miss IoU 0.5 by
# that convention alone; with this margin the median IoU is 0.84 and 0.2% miss.
MARGIN = 0.15
FONTS = ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSerif.ttf",
         "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf"]


def model_path() -> Path:
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("this example needs the rapidocr-onnxruntime wheel (pip install rapidocr-onnxruntime==1.4.4): "
                 "its models/ folder holds the detector")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / MODEL
    if not path.is_file():
        sys.exit(f"{path} is missing from the installed rapidocr-onnxruntime")
    return path


def sentences() -> list[str]:
    """Short lines of real English prose: scikit-learn's dataset descriptions, 2 to 5 words each, starting and
    ending with a letter or digit (a line of dashes or a lone bullet is not text a detector should find)."""
    import sklearn.datasets

    lines = []
    for rst in sorted((Path(sklearn.datasets.__file__).parent / "descr").glob("*.rst")):
        for line in rst.read_text(encoding="utf-8").splitlines():
            words = re.sub(r"[^A-Za-z0-9 ,.()'-]", " ", line).split()
            for start in range(0, len(words), 4):
                chunk = " ".join(words[start:start + 4]).strip(" ,.()'-")
                if len(chunk) >= 6 and sum(c.isalnum() for c in chunk) >= 0.7 * len(chunk):
                    lines.append(chunk)
    return sorted(set(lines))


def render(lines, font_dir: Path, rng: np.random.Generator) -> tuple[np.ndarray, list[list[int]]]:
    """One page (RGB, uint8) and the ground-truth box of each line drawn on it."""
    size = int(rng.integers(SIZE, 2 * SIZE + 1))
    scale = size / SIZE                 # font sizes are chosen for the 320-pixel model input
    paper = rng.integers(150, 256) - rng.integers(0, 25, 3) * (rng.random() < 0.3)   # some pages tinted
    page = Image.new("RGB", (size, size), tuple(int(c) for c in paper))
    draw = ImageDraw.Draw(page)
    if rng.random() < 0.5:              # a ruled line or a frame: ink that is not text
        x0, y0 = (int(v) for v in rng.integers(0, size // 2, 2))
        x1, y1 = (int(v) for v in rng.integers(size // 2, size, 2))
        grey, width = (int(rng.integers(0, 120)),) * 3, max(1, int(scale))
        if rng.random() < 0.5:
            draw.line([x0, y0, x1, y0], fill=grey, width=width)
        else:
            draw.rectangle([x0, y0, x1, y1], outline=grey, width=width)
    boxes: list[list[int]] = []
    y = int(rng.integers(2, 16) * scale)
    wanted = int(rng.integers(3, 9))
    while len(boxes) < wanted:
        font = ImageFont.truetype(str(font_dir / FONTS[rng.integers(len(FONTS))]), int(rng.integers(11, 22) * scale))
        text = next(lines)
        left, top, right, bottom = font.getbbox(text)
        width, height = right - left, bottom - top
        if y + height > size - 2 * scale:
            break
        if width > size - 8 * scale:    # too long for this page at this size: take the next line
            continue
        x = int(rng.integers(int(4 * scale), size - width - int(4 * scale) + 1))
        contrast = int(rng.integers(60, 150)) if rng.random() < 0.2 else int(rng.integers(110, 256))   # some faint
        ink = np.clip(paper - contrast + rng.integers(-20, 21, 3) * (rng.random() < 0.3), 0, 255)
        draw.text((x - left, y - top), text, font=font, fill=tuple(int(c) for c in ink))
        # The ground truth: the ink's box with a margin of MARGIN of the line's height on every side.
        pad = round(MARGIN * height)
        boxes.append([max(x - pad, 0), max(y - pad, 0), min(x + width + pad, size), min(y + height + pad, size)])
        y += height + int(rng.integers(int(0.8 * height), int(2.5 * height) + 1))   # lines never touch
    if rng.random() < 0.5:
        page = page.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.0) * scale)))
    pixels = np.asarray(page, dtype=np.float32)
    if rng.random() < 0.3:              # uneven lighting: a gradient across the page
        pixels *= np.linspace(1.0, rng.uniform(0.6, 0.9), size, dtype=np.float32)[:, None, None]
    pixels += rng.normal(0, rng.uniform(0, 8), (size, size, 1))
    return np.clip(pixels, 0, 255).astype(np.uint8), boxes


def preprocess(page: np.ndarray) -> np.ndarray:
    """rapidocr's TextDetector pre-processing (its own DetPreProcess) at a fixed 320x320: BGR as cv2 reads images."""
    from rapidocr_onnxruntime.ch_ppocr_det.utils import DetPreProcess

    batch = DetPreProcess(limit_side_len=SIZE, limit_type="max", mean=[0.5] * 3, std=[0.5] * 3)(page[:, :, ::-1])
    assert batch.shape == (1, 3, SIZE, SIZE), batch.shape
    return batch[0]


def cycle(lines: list[str], rng: np.random.Generator):
    """The lines in a shuffled order, again and again (a page set may need more lines than its share)."""
    while True:
        yield from (lines[i] for i in rng.permutation(len(lines)))


def dataset(pages: int, lines: list[str], font_dir: Path, rng: np.random.Generator) -> tuple[dict, list[dict]]:
    source = cycle(lines, rng)
    inputs, truth = [], []
    for _ in range(pages):
        page, boxes = render(source, font_dir, rng)
        inputs.append(preprocess(page))
        truth.append({"height": page.shape[0], "width": page.shape[1], "boxes": boxes})
    return {"inputs": np.stack(inputs).astype(np.float32)}, truth


def prepare(out: Path, evaluation: int = 200, calibration: int = 128, seed: int = 0) -> Path:
    import matplotlib

    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_path(), out / "det.onnx")
    font_dir = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    rng = np.random.default_rng(seed)
    lines = sentences()
    rng.shuffle(lines)
    split = len(lines) * 2 // 3         # evaluation and calibration pages never share a line of text
    evaluation_set, truth = dataset(evaluation, lines[:split], font_dir, np.random.default_rng([seed, 1]))
    calibration_set, _ = dataset(calibration, lines[split:], font_dir, np.random.default_rng([seed, 2]))
    np.savez(out / "evaluation.npz", **evaluation_set)
    np.savez(out / "calibration.npz", **calibration_set)
    (out / "evaluation_truth.json").write_text(json.dumps({"pages": truth}))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "data")
    parser.add_argument("--evaluation", type=int, default=200, help="evaluation pages")
    parser.add_argument("--calibration", type=int, default=128, help="calibration pages")
    args = parser.parse_args()
    start = time.perf_counter()
    out = prepare(args.out, args.evaluation, args.calibration)
    print(f"wrote {out}/det.onnx, calibration.npz ({args.calibration} x 3x{SIZE}x{SIZE}), evaluation.npz "
          f"({args.evaluation}), evaluation_truth.json in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
