"""The recognizer's own task metric: how often the CTC-decoded text is exactly right, and character accuracy.

Each model runs in onnxruntime over evaluation.npz (one line at a time); its per-column class probabilities go
through rapidocr's own CTC decoder (CTCLabelDecode, imported from the wheel: argmax, repeats merged, blanks
dropped) with the dictionary from the model's metadata (or, when a converted model lost it, from rec.onnx beside
the data). The text is compared with evaluation_truth.json as PaddleOCR's RecMetric does: exact match with spaces
ignored (ignore_space=True), and character accuracy, 1 - edit distance / the longer length, averaged over lines.
The exact match with spaces counted is printed too.

Usage: python examples/paddle-ocr-rec/task_metric.py --data DIR MODEL.onnx [MODEL2.onnx ...]
       (the first model is the reference: the others' drop is against it)
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def _characters(model_path: Path, data_dir: Path) -> list[str]:
    import onnx

    for path in (model_path, data_dir / "rec.onnx"):
        if path.is_file():
            meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
            if "character" in meta:
                return meta["character"].splitlines()
    raise ValueError(f"neither {model_path} nor {data_dir / 'rec.onnx'} holds the dictionary (metadata 'character')")


def _decoder(characters: list[str]):
    try:
        from rapidocr_onnxruntime.ch_ppocr_rec.utils import CTCLabelDecode
    except ImportError:
        sys.exit("the task metric needs the rapidocr-onnxruntime wheel (pip install rapidocr-onnxruntime==1.4.4)")
    return CTCLabelDecode(character=list(characters))


def recognize(model_path: Path, data_dir: Path) -> list[str]:
    """The decoded text of each evaluation line."""
    import onnxruntime as ort

    model_path, data_dir = Path(model_path), Path(data_dir)
    decode = _decoder(_characters(model_path, data_dir))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    texts = []
    for x in np.load(data_dir / "evaluation.npz")["inputs"]:
        probabilities = session.run(None, {name: x[None]})[0]
        texts.append(decode(probabilities.astype(np.float32))[0][0])
    return texts


def edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (ca != cb))
    return row[-1]


def score(predicted: list[str], truth: list[str]) -> dict[str, float]:
    if len(predicted) != len(truth) or not truth:
        raise ValueError(f"{len(predicted)} predictions for {len(truth)} lines of ground truth")
    exact = exact_spaces = similarity = 0.0
    for got, want in zip(predicted, truth):
        exact_spaces += got == want
        got, want = got.replace(" ", ""), want.replace(" ", "")
        exact += got == want
        similarity += 1 - edit_distance(got, want) / max(len(got), len(want), 1)
    n = len(truth)
    return {"exact_match": exact / n, "char_accuracy": similarity / n, "exact_match_with_spaces": exact_spaces / n,
            "lines": n}


def evaluate(model_path: Path, data_dir: Path) -> dict[str, float]:
    truth = json.loads((Path(data_dir) / "evaluation_truth.json").read_text())["texts"]
    return score(recognize(model_path, data_dir), truth)


def task_metric(model_path: Path, data_dir: Path) -> float:
    """Exact-match rate (0 to 1, spaces ignored, as PaddleOCR's RecMetric) of the evaluation lines."""
    return evaluate(model_path, data_dir)["exact_match"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parent / "data",
                        help="what prepare.py wrote (evaluation.npz, evaluation_truth.json, rec.onnx)")
    parser.add_argument("models", type=Path, nargs="+")
    args = parser.parse_args()
    reference = None
    for model in args.models:
        result = evaluate(model, args.data)
        reference = result if reference is None else reference
        print(f"{model}: exact match {100 * result['exact_match']:.2f}% (with spaces "
              f"{100 * result['exact_match_with_spaces']:.2f}%), character accuracy "
              f"{100 * result['char_accuracy']:.2f}% over {result['lines']} lines; drop "
              f"{100 * (reference['exact_match'] - result['exact_match']):.2f} points exact, "
              f"{100 * (reference['char_accuracy'] - result['char_accuracy']):.2f} points characters")


if __name__ == "__main__":
    main()
