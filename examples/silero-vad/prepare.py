"""A real pretrained recurrent model with several inputs: Silero VAD, a voice activity detector.

The model is `silero_vad_op18_ifless.onnx` from the `silero-vad` wheel (6.2.3, MIT; its data/ folder
ships it, so nothing is downloaded here): an STFT as a convolution, four convolutional encoder
blocks, an LSTM cell written out as Gemm, Sigmoid, Tanh and Mul, and a sigmoid speech probability;
torch.export at opset 18, 2.8 MB (the 16 kHz and the 8 kHz weights). One call takes 32 ms of 16 kHz
audio plus 4 ms of context and the recurrent state the previous call returned (graph inputs in the
order input, sr, state):
  input   float32 [batch, 576]     64 samples of context (the end of the previous call's input) + 512 new
  sr      int64   []               the sample rate, 16000 (a 0-d scalar)
  state   float32 [2, batch, 128]  the LSTM's h and c (zeros at the start of a stream); batch is NOT first
  output  float32 [batch, 1]       speech probability of the chunk; stateN float32 [2, batch, 128]
Of the wheel's ONNX files, three take (input, state, sr). silero_vad.onnx (what
load_silero_vad(onnx=True) loads) and silero_vad_16k_op15.onnx run the LSTM as torch's exporter
wrote it, behind shape-check If nodes nested three deep; this file has a single top-level If
(torch.cond on sr == 16000) that picks the 16 kHz or the 8 kHz weights, and each branch is one flat
graph of 43 nodes without If. It and silero_vad.onnx agree to 3e-7 on the data below.
silero_vad_half.onnx has no sr input (and nested Ifs); silero_vad_openvino_16k.onnx has a fixed
[1, 576] input and no sr; silero_vad_16k_sequence.onnx takes whole sequences with separate h and c.

The data is real speech, synthesized: sentences from scikit-learn's dataset descriptions spoken by
espeak-ng (Debian package espeak-ng: several English accents, male and female voice variants,
speeds and pitches), resampled to 16 kHz, trimmed to where the voice starts and ends, at random
levels, placed in 8-second clips with silences of 0.3 to 2 s between them, over a little background
noise (coloured noise, sometimes mains hum). Ground truth by construction: a 32 ms chunk is speech
when at least half of it lies within a spoken sentence.

The model runs the way silero_vad's own OnnxWrapper runs it (utils_vad.py): each clip in 512-sample
chunks, each call's input the previous call's last 64 input samples (zeros first) followed by the
chunk, and the state it returned fed back (zeros first). A dataset sample is one such call, with the
inputs fp32 gave it at that point of its clip (the state "teacher-forced" from fp32's sequence), so
samples are independent of one another; calls are drawn at random from all the clips' calls.

Writes into the output directory (default: data/ beside this file):
  vad.onnx               the model, copied unchanged from the wheel
  calibration.npz        calls for int8 calibration: input (N, 576) float32, state (N, 2, 1, 128) float32,
                         sr (N,) int64 (every element 16000)
  evaluation.npz         the same arrays, from other clips (other sentences, voices and noise)
  evaluation_clips.npz   the whole evaluation clips, for task_metric.py: audio (C, 128000) float32,
                         labels (C, 250) uint8 (1: the chunk is speech)

Usage: python examples/silero-vad/prepare.py [--out DIR] [--evaluation N] [--calibration N] [--clips C]
"""

import argparse
import importlib.util
import io
import re
import shutil
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np

MODEL = "silero_vad_op18_ifless.onnx"
RATE = 16000
CHUNK, CONTEXT = 512, 64            # OnnxWrapper at 16 kHz: 512 new samples, 64 of context
CHUNKS = 250                        # per clip: 8 s
VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc"]
VARIANTS = [f"m{i}" for i in range(1, 8)] + [f"f{i}" for i in range(1, 6)]


def model_path() -> Path:
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("this example needs the silero-vad wheel (pip install silero-vad==6.2.3): its data/ folder holds "
                 "the model")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / MODEL
    if not path.is_file():
        sys.exit(f"{path} is missing from the installed silero-vad")
    return path


def espeak() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        sys.exit("this example speaks its sentences with espeak-ng, which is not installed "
                 "(Debian/Ubuntu: apt-get install espeak-ng; hack/prepare.sh installs it)")
    return path


def sentences() -> list[str]:
    """Phrases of real English prose to speak: scikit-learn's dataset descriptions, paragraph by paragraph
    (headings, lists, tables and code left out; links and inline markup removed), sentence by sentence, cut into
    pieces of 4 to 12 words."""
    import sklearn.datasets

    phrases = []
    for rst in sorted((Path(sklearn.datasets.__file__).parent / "descr").glob("*.rst")):
        for paragraph in re.split(r"\n\s*\n", rst.read_text(encoding="utf-8")):
            lines = [line.strip() for line in paragraph.strip().splitlines()]
            if not lines or re.match(r"[-+:=*|>]|\.\.|\d+\.? ", lines[0]) or re.fullmatch(r"[^.]*", paragraph):
                continue                # a heading, a list, a table or code: not prose to read aloud
            text = " ".join(lines)
            text = re.sub(r"<[^>]*>|https?://\S+|``[^`]*``", " ", text)       # links and literals
            text = re.sub(r":\w+:`([^`]*)`|`([^`]*)`_*|\*\*?([^*]*)\*\*?",         # roles, references, emphasis
                          lambda m: next(g for g in m.groups() if g is not None), text)
            for sentence in re.split(r"(?<=[a-z]{2}[.!?])\s+", text):
                words = sentence.split()
                for start in range(0, len(words), 12):
                    piece = " ".join(words[start:start + 12])
                    if (len(piece.split()) >= 4 and re.fullmatch(r"[A-Za-z0-9 ,.;:'()%-]+", piece)
                            and not re.search(r"[A-Za-z]\.[A-Za-z]", piece)
                            and sum(c.isalpha() for c in piece) >= 0.7 * len(piece)):
                        phrases.append(piece)
    return sorted(set(phrases))


def speak(text: str, rng: np.random.Generator, binary: str) -> np.ndarray:
    """The sentence spoken by a random voice at 16 kHz, from its first to its last sample of voice."""
    import scipy.signal

    voice = f"{VOICES[rng.integers(len(VOICES))]}+{VARIANTS[rng.integers(len(VARIANTS))]}"
    command = [binary, "-v", voice, "-s", str(int(rng.integers(120, 200))), "-p", str(int(rng.integers(25, 75))),
               "--stdout"]     # the text on stdin: a phrase is never read as an option
    wav = subprocess.run(command, input=text.encode(), check=True, capture_output=True, timeout=60).stdout
    with wave.open(io.BytesIO(wav)) as reader:
        rate = reader.getframerate()
        audio = np.frombuffer(reader.readframes(reader.getnframes()), dtype=np.int16).astype(np.float32) / 32768
    audio = scipy.signal.resample_poly(audio, RATE, rate) if rate != RATE else audio
    voiced = np.flatnonzero(np.abs(audio) > 1e-3)
    return audio[voiced[0]:voiced[-1] + 1].astype(np.float32)


def clip(phrases, rng: np.random.Generator, binary: str) -> tuple[np.ndarray, np.ndarray]:
    """An 8-second clip (float32 samples) and its ground truth per 32 ms chunk (1: speech)."""
    import scipy.signal

    length = CHUNKS * CHUNK
    audio = np.zeros(length, dtype=np.float32)
    speech = np.zeros(length, dtype=bool)
    position = int(rng.uniform(0.0, 1.5) * RATE)
    while True:
        spoken = speak(next(phrases), rng, binary)
        if position + len(spoken) > length:
            break                       # whole sentences only: the clip ends in silence
        level = 10 ** (rng.uniform(-30, -12) / 20) / (np.sqrt(np.mean(spoken ** 2)) + 1e-9)
        audio[position:position + len(spoken)] = spoken * level
        speech[position:position + len(spoken)] = True
        position += len(spoken) + int(rng.uniform(0.3, 2.0) * RATE)
    noise = scipy.signal.lfilter([1.0], [1.0, -rng.uniform(0.0, 0.95)], rng.normal(size=length))  # white to reddish
    noise *= 10 ** (rng.uniform(-60, -38) / 20) / np.sqrt(np.mean(noise ** 2))
    if rng.random() < 0.3:              # mains hum, 50 or 60 Hz and harmonics
        t = np.arange(length) / RATE
        base = 50 if rng.random() < 0.5 else 60
        noise += 10 ** (rng.uniform(-55, -40) / 20) * sum(np.sin(2 * np.pi * base * k * t) / k for k in (1, 2, 3))
    audio = np.clip(audio + noise, -1, 1).astype(np.float32)
    return audio, (speech.reshape(CHUNKS, CHUNK).mean(axis=1) >= 0.5).astype(np.uint8)


def session(model: Path):
    """An onnxruntime session as OnnxWrapper makes it: CPU, one thread."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3     # the file keeps a few unused initializers; onnxruntime warns of each
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def calls(vad, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run a clip as silero_vad's OnnxWrapper does; every call's input and state, and the probabilities."""
    state = np.zeros((2, 1, 128), dtype=np.float32)
    context = np.zeros((1, CONTEXT), dtype=np.float32)
    sr = np.array(RATE, dtype=np.int64)
    inputs, states, probabilities = [], [], []
    for start in range(0, len(audio) - CHUNK + 1, CHUNK):
        x = np.concatenate([context, audio[None, start:start + CHUNK]], axis=1)
        inputs.append(x[0])
        states.append(state)
        probability, state = vad.run(None, {"input": x, "state": state, "sr": sr})
        probabilities.append(float(probability[0, 0]))
        context = x[:, -CONTEXT:]
    return np.stack(inputs), np.stack(states), np.array(probabilities, dtype=np.float32)


def cycle(phrases: list[str], rng: np.random.Generator):
    while True:
        yield from (phrases[i] for i in rng.permutation(len(phrases)))


def dataset(model: Path, phrases: list[str], clips: int, samples: int, rng: np.random.Generator, binary: str):
    """`samples` calls drawn from `clips` fresh clips: the model's arrays, and the clips with their labels."""
    source = cycle(phrases, rng)
    vad = session(model)
    audio, labels, inputs, states = [], [], [], []
    for _ in range(clips):
        samples_of_clip, truth = clip(source, rng, binary)
        x, state, _ = calls(vad, samples_of_clip)
        audio.append(samples_of_clip)
        labels.append(truth)
        inputs.append(x)
        states.append(state)
    inputs, states = np.concatenate(inputs), np.concatenate(states)
    if samples > len(inputs):
        sys.exit(f"{clips} clips make {len(inputs)} calls, fewer than the {samples} samples asked for: "
                 "ask for more clips")
    chosen = np.sort(rng.choice(len(inputs), size=samples, replace=False))
    arrays = {"input": inputs[chosen].astype(np.float32), "state": states[chosen].astype(np.float32),
              "sr": np.full(samples, RATE, dtype=np.int64)}
    return arrays, np.stack(audio), np.stack(labels)


def prepare(out: Path, evaluation: int = 256, calibration: int = 128, clips: int = 16, seed: int = 0) -> Path:
    binary = espeak()
    out.mkdir(parents=True, exist_ok=True)
    model = out / "vad.onnx"
    shutil.copyfile(model_path(), model)
    rng = np.random.default_rng(seed)
    phrases = sentences()
    rng.shuffle(phrases)
    split = len(phrases) * 2 // 3       # evaluation and calibration clips never share a sentence
    calibration_clips = max(1, -(-clips * calibration // max(evaluation, 1)))   # as many calls per clip
    evaluation_set, audio, labels = dataset(model, phrases[:split], clips, evaluation,
                                            np.random.default_rng([seed, 1]), binary)
    calibration_set, _, _ = dataset(model, phrases[split:], calibration_clips, calibration,
                                    np.random.default_rng([seed, 2]), binary)
    np.savez(out / "evaluation.npz", **evaluation_set)
    np.savez(out / "calibration.npz", **calibration_set)
    np.savez(out / "evaluation_clips.npz", audio=audio, labels=labels)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "data")
    parser.add_argument("--evaluation", type=int, default=256, help="evaluation samples (model calls)")
    parser.add_argument("--calibration", type=int, default=128, help="calibration samples (model calls)")
    parser.add_argument("--clips", type=int, default=16, help="8-second evaluation clips (the task metric's data)")
    args = parser.parse_args()
    start = time.perf_counter()
    out = prepare(args.out, args.evaluation, args.calibration, args.clips)
    print(f"wrote {out}/vad.onnx, calibration.npz ({args.calibration} calls), evaluation.npz ({args.evaluation} "
          f"calls), evaluation_clips.npz ({args.clips} clips of {CHUNKS} chunks) "
          f"in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
