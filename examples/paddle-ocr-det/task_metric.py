"""The detector's own task metric: text-line detection hmean (F1) at IoU >= 0.5 after the real DB post-processing.

Each model runs in onnxruntime over evaluation.npz (one page at a time); its probability map goes through
rapidocr's own DBPostProcess (imported from the wheel, with the thresholds of rapidocr's config.yaml: binarize at
0.3, dilate, contours, boxes scoring >= 0.5 kept, unclipped by 1.6) and TextDetector's own box filter, back in the
page's pixels. Detections are matched one to one with the ground-truth lines of evaluation_truth.json, best IoU
first; a match needs IoU >= 0.5. Precision, recall and their harmonic mean (hmean) are over all pages.

Usage: python examples/paddle-ocr-det/task_metric.py --data DIR MODEL.onnx [MODEL2.onnx ...]
       (the first model is the reference: the others' drop is against it)
"""

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

IOU = 0.5


def _rapidocr_det():
    """rapidocr's DB post-processing, configured as its TextDetector configures it, and the detector's box filter."""
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("the task metric needs the rapidocr-onnxruntime wheel (pip install rapidocr-onnxruntime==1.4.4)")
    from rapidocr_onnxruntime.ch_ppocr_det.text_detect import TextDetector
    from rapidocr_onnxruntime.ch_ppocr_det.utils import DBPostProcess
    from rapidocr_onnxruntime.utils import read_yaml

    config = read_yaml(Path(list(spec.submodule_search_locations)[0]) / "config.yaml")["Det"]
    post = DBPostProcess(thresh=config["thresh"], box_thresh=config["box_thresh"],
                         max_candidates=config["max_candidates"], unclip_ratio=config["unclip_ratio"],
                         use_dilation=config["use_dilation"], score_mode=config["score_mode"])
    # filter_tag_det_res (order the corners, clip to the page, drop boxes of 3 pixels or less) reads no state.
    detector = TextDetector.__new__(TextDetector)
    return post, detector.filter_tag_det_res


def _session(model_path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


def detect(model_path: Path, data_dir: Path) -> list[np.ndarray]:
    """Each evaluation page's detected quadrilaterals (k x 4 x 2, page pixels)."""
    post, box_filter = _rapidocr_det()
    pages = json.loads((data_dir / "evaluation_truth.json").read_text())["pages"]
    inputs = np.load(data_dir / "evaluation.npz")["inputs"]
    if len(inputs) != len(pages):
        raise ValueError(f"{data_dir}: {len(inputs)} evaluation inputs but {len(pages)} pages of ground truth")
    session = _session(model_path)
    name = session.get_inputs()[0].name
    detections = []
    for x, page in zip(inputs, pages):
        probability = session.run(None, {name: x[None]})[0]
        boxes, _ = post(probability.astype(np.float32), (page["height"], page["width"]))
        detections.append(box_filter(boxes, (page["height"], page["width"])) if len(boxes) else np.zeros((0, 4, 2)))
    return detections


def score(detections: list[np.ndarray], pages: list[dict]) -> dict[str, float]:
    """Precision, recall and hmean at IoU >= 0.5, one-to-one matching (best IoU first) within each page."""
    from shapely.geometry import Polygon, box

    matched = detected = truths = 0
    for found, page in zip(detections, pages):
        polygons = [Polygon(quad).buffer(0) for quad in found]
        truth = [box(*b) for b in page["boxes"]]
        detected += len(polygons)
        truths += len(truth)
        pairs = []
        for i, t in enumerate(truth):
            for j, d in enumerate(polygons):
                union = t.union(d).area
                iou = t.intersection(d).area / union if union else 0.0
                if iou >= IOU:
                    pairs.append((iou, i, j))
        used_t, used_d = set(), set()
        for _, i, j in sorted(pairs, reverse=True):
            if i not in used_t and j not in used_d:
                used_t.add(i)
                used_d.add(j)
        matched += len(used_t)
    precision = matched / detected if detected else 0.0
    recall = matched / truths if truths else 0.0
    hmean = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "hmean": hmean, "lines": truths, "detections": detected}


def evaluate(model_path: Path, data_dir: Path) -> dict[str, float]:
    pages = json.loads((Path(data_dir) / "evaluation_truth.json").read_text())["pages"]
    return score(detect(Path(model_path), Path(data_dir)), pages)


def task_metric(model_path: Path, data_dir: Path) -> float:
    """Text-line detection hmean (F1, 0 to 1) at IoU >= 0.5 on the evaluation pages."""
    return evaluate(model_path, data_dir)["hmean"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parent / "data",
                        help="what prepare.py wrote (evaluation.npz, evaluation_truth.json)")
    parser.add_argument("models", type=Path, nargs="+")
    args = parser.parse_args()
    reference = None
    for model in args.models:
        result = evaluate(model, args.data)
        reference = result["hmean"] if reference is None else reference
        print(f"{model}: hmean {100 * result['hmean']:.2f}% (precision {100 * result['precision']:.2f}%, recall "
              f"{100 * result['recall']:.2f}%; {result['detections']} detections, {result['lines']} lines), "
              f"drop {100 * (reference - result['hmean']):.2f} points")


if __name__ == "__main__":
    main()
