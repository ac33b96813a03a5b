"""The VAD's own task metric: per-chunk speech detection accuracy over whole clips, the state fed back.

Each model runs in onnxruntime over every clip of evaluation_clips.npz the way silero_vad's own OnnxWrapper runs
it (utils_vad.py): 512-sample chunks at 16 kHz, each call's input the previous call's last 64 input samples
(zeros first) followed by the chunk, the state each call returns fed to the next (zeros first), sr = 16000. A
chunk is called speech when its probability is at least 0.5 (get_speech_timestamps' default threshold), and
compared with the ground truth: accuracy over all chunks, and precision, recall and F1 of the speech class.
Unlike evaluation.npz (single calls with fp32's state), here a model's errors carry over through its own state.

Usage: python examples/silero-vad/task_metric.py --data DIR MODEL.onnx [MODEL2.onnx ...]
       (the first model is the reference: the others' drop is against it)
"""

import argparse
from pathlib import Path

import numpy as np

RATE, CHUNK, CONTEXT, THRESHOLD = 16000, 512, 64, 0.5
_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
           "tensor(int32)": np.int32}


def probabilities(model_path: Path, audio: np.ndarray) -> np.ndarray:
    """Speech probability of each chunk of each clip (clips x chunks), streaming as OnnxWrapper does."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    types = {i.name: _DTYPES[i.type] for i in session.get_inputs()}   # a converted model may take float16
    result = np.zeros((len(audio), audio.shape[1] // CHUNK), dtype=np.float32)
    for c, samples in enumerate(audio):
        state = np.zeros((2, 1, 128), dtype=np.float32)
        context = np.zeros((1, CONTEXT), dtype=np.float32)
        for k in range(result.shape[1]):
            x = np.concatenate([context, samples[None, k * CHUNK:(k + 1) * CHUNK]], axis=1)
            feeds = {"input": x, "state": state, "sr": np.array(RATE, dtype=np.int64)}
            output, state = session.run(None, {name: feeds[name].astype(t) for name, t in types.items()})
            result[c, k] = float(np.asarray(output).reshape(-1)[0])
            state = np.asarray(state, dtype=np.float32)
            context = x[:, -CONTEXT:]
    return result


def score(probability: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    speech, truth = probability >= THRESHOLD, labels.astype(bool)
    hits = int(np.count_nonzero(speech & truth))
    precision = hits / max(int(speech.sum()), 1)
    recall = hits / max(int(truth.sum()), 1)
    return {"accuracy": float(np.mean(speech == truth)), "precision": precision, "recall": recall,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "chunks": int(truth.size), "speech_chunks": int(truth.sum())}


def evaluate(model_path: Path, data_dir: Path) -> dict[str, float]:
    with np.load(Path(data_dir) / "evaluation_clips.npz") as clips:
        audio, labels = clips["audio"], clips["labels"]
    return score(probabilities(Path(model_path), audio), labels)


def task_metric(model_path: Path, data_dir: Path) -> float:
    """Per-chunk speech detection accuracy (0 to 1) at threshold 0.5 over the evaluation clips."""
    return evaluate(model_path, data_dir)["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parent / "data",
                        help="what prepare.py wrote (evaluation_clips.npz)")
    parser.add_argument("models", type=Path, nargs="+")
    args = parser.parse_args()
    reference = None
    for model in args.models:
        result = evaluate(model, args.data)
        reference = result if reference is None else reference
        print(f"{model}: accuracy {100 * result['accuracy']:.2f}% (speech F1 {100 * result['f1']:.2f}%, precision "
              f"{100 * result['precision']:.2f}%, recall {100 * result['recall']:.2f}%; {result['chunks']} chunks, "
              f"{result['speech_chunks']} speech), drop {100 * (reference['accuracy'] - result['accuracy']):.2f} "
              f"points accuracy, {100 * (reference['f1'] - result['f1']):.2f} points F1")


if __name__ == "__main__":
    main()
