"""A real pretrained sequence model from another framework: PaddleOCR's PP-OCRv4 text recognizer.

The model is `ch_PP-OCRv4_rec_infer.onnx` (SVTR-LCNet: a PP-LCNetV3 convolutional backbone, then
SVTR's global mixing blocks, multi-head self-attention over the columns of the text line, and a
CTC head over 6625 classes: blank, the 6623 characters of PaddleOCR's Chinese dictionary
ppocr_keys_v1, which holds the ASCII letters, digits and punctuation too, and the space; 10.9 MB).
paddle2onnx exported it at opset 12 with dynamic batch and width; its dictionary is in the model's
metadata (key "character"). It ships inside the `rapidocr-onnxruntime` wheel (Apache-2.0), so
nothing is downloaded here.

The data is real text, rendered: single lines of prose from scikit-learn's dataset descriptions
(1 to 4 words, every character in the model's dictionary), drawn with the DejaVu fonts that ship
with matplotlib (sans, serif, mono; regular, bold, oblique), at random sizes, grey levels and
margins, with slight blur and sensor noise. The transcription is known by construction: it is
the text drawn. A line is kept only if it fits the model's 320x48 input without being squeezed
(words are dropped from its end until it does). Pre-processing is rapidocr's own: its
TextRecognizer.resize_norm_img (imported from the wheel) with rec_img_shape [3, 48, 320] and the
default max_wh_ratio 320/48: BGR channel order, height 48, width by the aspect ratio,
(x / 255 - 0.5) / 0.5, zero padding on the right to 320. Every sample has one shape, 3x48x320.

task_metric.py beside this file decodes a model's outputs with rapidocr's own CTC decoder
(CTCLabelDecode, the dictionary from the model's metadata) and scores the text against the truth:
exact-match rate (as PaddleOCR's RecMetric: spaces ignored) and character accuracy (1 - normalized
edit distance).

Writes into the output directory (default: data/ beside this file):
  rec.onnx               the model, copied unchanged from the wheel
  calibration.npz        inputs for int8 calibration (inputs)
  evaluation.npz         a disjoint set of lines and renderings (inputs)
  evaluation_truth.json  the text of each evaluation line

Usage: python examples/paddle-ocr-rec/prepare.py [--out DIR] [--evaluation N] [--calibration N]
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

MODEL = "ch_PP-OCRv4_rec_infer.onnx"
HEIGHT, WIDTH = 48, 320   # rapidocr's rec_img_shape [3, 48, 320]
FONTS = ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSerif.ttf",
         "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf"]


def model_path() -> Path:
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("this example needs the rapidocr-onnxruntime wheel (pip install rapidocr-onnxruntime==1.4.4): "
                 "its models/ folder holds the recognizer")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / MODEL
    if not path.is_file():
        sys.exit(f"{path} is missing from the installed rapidocr-onnxruntime")
    return path


def dictionary(model: Path) -> set[str]:
    """The characters the model can write: its metadata's dictionary, and the space rapidocr adds."""
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(model), load_external_data=False).metadata_props}
    return set(meta["character"].splitlines()) | {" "}


def sentences(characters: set[str]) -> list[str]:
    """Short lines of real English prose: scikit-learn's dataset descriptions, up to 4 words each, starting and
    ending with a letter or digit, mostly letters, every character one the model knows."""
    import sklearn.datasets

    lines = []
    for rst in sorted((Path(sklearn.datasets.__file__).parent / "descr").glob("*.rst")):
        for line in rst.read_text(encoding="utf-8").splitlines():
            words = re.sub(r"[^A-Za-z0-9 ,.()'-]", " ", line).split()
            for start in range(0, len(words), 4):
                chunk = " ".join(words[start:start + 4]).strip(" ,.()'-")
                if (len(chunk) >= 4 and sum(c.isalpha() for c in chunk) >= 0.6 * len(chunk)
                        and set(chunk) <= characters):
                    lines.append(chunk)
    return sorted(set(lines))


def render(text: str, font_dir: Path, rng: np.random.Generator) -> tuple[str, Image.Image]:
    """The text (shortened by whole words until it fits 320x48 unsqueezed) and its rendering."""
    font = ImageFont.truetype(str(font_dir / FONTS[rng.integers(len(FONTS))]), int(rng.integers(20, 40)))
    margin_x, margin_y = int(rng.integers(2, 12)), int(rng.integers(2, 10))
    words = text.split()
    while True:
        text = " ".join(words)
        left, top, right, bottom = font.getbbox(text)
        size = (right - left + 2 * margin_x, bottom - top + 2 * margin_y)
        if size[0] * HEIGHT <= WIDTH * size[1] or len(words) == 1:
            break
        words.pop()
    paper, ink = int(rng.integers(150, 256)), int(rng.integers(0, 100))
    image = Image.new("RGB", size, (paper,) * 3)
    ImageDraw.Draw(image).text((margin_x - left, margin_y - top), text, font=font, fill=(ink,) * 3)
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.2))))
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, rng.uniform(0, 10), (size[1], size[0], 1))
    return text, Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def preprocess(image: Image.Image) -> np.ndarray:
    """rapidocr's TextRecognizer pre-processing: its own resize_norm_img, BGR as cv2 reads images."""
    from rapidocr_onnxruntime.ch_ppocr_rec.text_recognize import TextRecognizer

    recognizer = TextRecognizer.__new__(TextRecognizer)    # resize_norm_img reads only the image shape
    recognizer.rec_image_shape = [3, HEIGHT, WIDTH]
    x = recognizer.resize_norm_img(np.asarray(image)[:, :, ::-1], WIDTH / HEIGHT)
    assert x.shape == (3, HEIGHT, WIDTH), x.shape
    return x


def dataset(lines: list[str], font_dir: Path, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], list[str]]:
    inputs, texts = [], []
    for line in lines:
        text, image = render(line, font_dir, rng)
        inputs.append(preprocess(image))
        texts.append(text)
    return {"inputs": np.stack(inputs).astype(np.float32)}, texts


def prepare(out: Path, evaluation: int = 300, calibration: int = 128, seed: int = 0) -> Path:
    import matplotlib

    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_path(), out / "rec.onnx")
    font_dir = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    rng = np.random.default_rng(seed)
    lines = sentences(dictionary(out / "rec.onnx"))
    rng.shuffle(lines)
    if len(lines) < evaluation + calibration:
        sys.exit(f"only {len(lines)} distinct lines of text; ask for fewer samples")
    evaluation_set, texts = dataset(lines[:evaluation], font_dir, np.random.default_rng([seed, 1]))
    calibration_set, _ = dataset(lines[evaluation:evaluation + calibration], font_dir, np.random.default_rng([seed, 2]))
    np.savez(out / "evaluation.npz", **evaluation_set)
    np.savez(out / "calibration.npz", **calibration_set)
    (out / "evaluation_truth.json").write_text(json.dumps({"texts": texts}, indent=0))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "data")
    parser.add_argument("--evaluation", type=int, default=300, help="evaluation lines")
    parser.add_argument("--calibration", type=int, default=128, help="calibration lines")
    args = parser.parse_args()
    start = time.perf_counter()
    out = prepare(args.out, args.evaluation, args.calibration)
    print(f"wrote {out}/rec.onnx, calibration.npz ({args.calibration} x 3x{HEIGHT}x{WIDTH}), evaluation.npz "
          f"({args.evaluation}), evaluation_truth.json in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
