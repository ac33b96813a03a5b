"""A real pretrained CNN from another framework: PaddleOCR's text-direction classifier.

The model is `ch_ppocr_mobile_v2.0_cls_infer.onnx` (a MobileNetV3-style CNN, 0.6 MB), exported
by PaddlePaddle's paddle2onnx at opset 11 with dynamic height and width. It ships inside the
`rapidocr-onnxruntime` wheel (Apache-2.0), so nothing is downloaded here. It tells upright text
lines (class 0, "0") from upside-down ones (class 1, "180").

The data is real text, rendered: sentences from scikit-learn's dataset descriptions, drawn with
the DejaVu fonts that ship with matplotlib (sans, serif, mono; regular, bold, oblique), at
random sizes, grey levels, margins, slight blur and sensor noise; half of them turned by 180
degrees. Labels are known by construction. Pre-processing is PaddleOCR's own: height 48, width
scaled by the aspect ratio (at most 192), (x / 255 - 0.5) / 0.5, zero padding on the right.

Writes into the output directory (default: data/ beside this file):
  cls.onnx          the model, copied unchanged from the wheel
  calibration.npz   inputs for int8 calibration (inputs, labels)
  evaluation.npz    a disjoint set of sentences and renderings (inputs, labels)

Usage: python examples/paddle-ocr-cls/prepare.py [--out DIR] [--evaluation N] [--calibration N]
"""

import argparse
import importlib.util
import math
import re
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

MODEL = "ch_ppocr_mobile_v2.0_cls_infer.onnx"
HEIGHT, WIDTH = 48, 192
FONTS = ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSerif.ttf",
         "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf"]


def model_path() -> Path:
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("this example needs the rapidocr-onnxruntime wheel (pip install rapidocr-onnxruntime==1.4.4): "
                 "its models/ folder holds the classifier")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / MODEL
    if not path.is_file():
        sys.exit(f"{path} is missing from the installed rapidocr-onnxruntime")
    return path


def sentences() -> list[str]:
    """Short lines of real English prose: scikit-learn's dataset descriptions."""
    import sklearn.datasets

    lines = []
    for rst in sorted((Path(sklearn.datasets.__file__).parent / "descr").glob("*.rst")):
        for line in rst.read_text(encoding="utf-8").splitlines():
            words = re.sub(r"[^A-Za-z0-9 ,.()'-]", " ", line).split()
            for start in range(0, len(words), 4):   # 2-4 words keep the aspect ratio near PaddleOCR's 4:1
                chunk = " ".join(words[start:start + 4])
                if len(chunk) >= 8:
                    lines.append(chunk)
    return sorted(set(lines))


def render(text: str, font_dir: Path, rng: np.random.Generator) -> Image.Image:
    font = ImageFont.truetype(str(font_dir / FONTS[rng.integers(len(FONTS))]), int(rng.integers(20, 36)))
    left, top, right, bottom = font.getbbox(text)
    margin_x, margin_y = int(rng.integers(2, 12)), int(rng.integers(2, 10))
    size = (right - left + 2 * margin_x, bottom - top + 2 * margin_y)
    paper, ink = int(rng.integers(170, 256)), int(rng.integers(0, 90))
    image = Image.new("RGB", size, (paper,) * 3)
    ImageDraw.Draw(image).text((margin_x - left, margin_y - top), text, font=font, fill=(ink,) * 3)
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.0))))
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, rng.uniform(0, 8), (size[1], size[0], 1))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def preprocess(image: Image.Image) -> np.ndarray:
    """PaddleOCR's cls pre-processing (rapidocr's TextClassifier.resize_norm_img)."""
    width = min(WIDTH, int(math.ceil(HEIGHT * image.width / image.height)))
    resized = np.asarray(image.resize((width, HEIGHT), Image.BILINEAR), dtype=np.float32)
    normalized = (resized.transpose(2, 0, 1) / 255 - 0.5) / 0.5
    padded = np.zeros((3, HEIGHT, WIDTH), dtype=np.float32)
    padded[:, :, :width] = normalized
    return padded


def dataset(lines: list[str], font_dir: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    labels = np.arange(len(lines)) % 2          # half upright, half turned by 180 degrees
    rng.shuffle(labels)
    inputs = []
    for text, label in zip(lines, labels):
        image = render(text, font_dir, rng)
        inputs.append(preprocess(image.rotate(180) if label else image))
    return {"inputs": np.stack(inputs), "labels": labels.astype(np.int64)}


def prepare(out: Path, evaluation: int = 600, calibration: int = 128, seed: int = 0) -> Path:
    import matplotlib

    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_path(), out / "cls.onnx")
    font_dir = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    rng = np.random.default_rng(seed)
    lines = sentences()
    rng.shuffle(lines)
    if len(lines) < evaluation + calibration:
        sys.exit(f"only {len(lines)} distinct lines of text; ask for fewer samples")
    np.savez(out / "evaluation.npz", **dataset(lines[:evaluation], font_dir, rng))
    np.savez(out / "calibration.npz", **dataset(lines[evaluation:evaluation + calibration], font_dir, rng))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "data")
    parser.add_argument("--evaluation", type=int, default=600)
    parser.add_argument("--calibration", type=int, default=128)
    args = parser.parse_args()
    out = prepare(args.out, args.evaluation, args.calibration)
    print(f"wrote {out}/cls.onnx, calibration.npz ({args.calibration}), evaluation.npz ({args.evaluation})")


if __name__ == "__main__":
    main()
