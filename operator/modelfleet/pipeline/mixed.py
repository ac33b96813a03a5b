"""Accuracy-aware mixed precision: int8 everywhere but in the nodes that cost the quality SLO.

When the all-int8 model misses the SLO, each quantized node's sensitivity is measured in one pass: the
all-int8 model and the fp32 model run side by side on a few calibration samples, every tensor exposed, and a
node's score is the noise it adds, the noise-to-signal ratio of its output less the worst of its inputs'
(what quantizing its input activations and weights costs, apart from what reached it from upstream). Then the
most sensitive nodes are kept in float, 1, 2, 4, ... of them until a build meets the SLO, and bisection finds
the fewest between the last miss and the first hit. Local noise does not always say what reaches the output
(PaddleOCR's detector: its early layers add little noise that the rest of the network amplifies, so keeping the
32 noisiest nodes in float gains nothing), so when the ranking finds no mix within half the budget, the same
search runs over the graph's order: the first diverging layers, the first k nodes from the input, in float. Every build reuses the one calibration (onnxruntime's
calibration cache), so a trial costs a quantization pass and an evaluation, not a calibration. Anchors:
NNCF's accuracy-aware quantization, onnxruntime's nodes_to_exclude and qdq_loss_debug.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelfleet.api.result import MixedPrecisionResult, MixedTrial, NodeSensitivity

_QDQ = {"QuantizeLinear", "DequantizeLinear"}
_DEQUANTIZED = "_DequantizeLinear_Output"
SENSITIVITY_SAMPLES = 16  # samples the sensitivity pass runs, one at a time (memory: one sample's tensors)
REPORTED_NODES = 10  # the most sensitive nodes named in the result


@dataclass(frozen=True)
class Trial:
    order: str  # which ordering of the nodes the float ones were taken from: "sensitivity" or "graph"
    float_nodes: list[str]
    model: Path
    misses: list[str]  # the quality SLOs missed, in words; empty when met
    quality: str  # the quality in words, such as "cosine 0.9932, SNR 21.3 dB"
    size_bytes: int


def sensitivity(fp32: Path, int8: Path, samples: list[dict[str, np.ndarray]]) -> list[NodeSensitivity]:
    """The quantized nodes of `int8` (QDQ, not compacted: node names as in `fp32`), most sensitive first."""
    import onnx

    nodes = _quantized_nodes(onnx.load(str(int8), load_external_data=False))
    reference_tensors = {name for n in onnx.load(str(fp32), load_external_data=False).graph.node for name in n.output}
    inputs = {n.name: [name.removesuffix(_DEQUANTIZED) for name in n.input if name.endswith(_DEQUANTIZED)]
              for n in nodes}
    compared = sorted(({out for n in nodes for out in n.output} | {t for names in inputs.values() for t in names})
                      & reference_tensors)
    noise_to_signal = _noise_to_signal(fp32, int8, compared, samples)
    scores = []
    for n in nodes:
        out = max((noise_to_signal[o] for o in n.output if o in noise_to_signal), default=None)
        if out is None:
            continue  # its output is renamed by a fusion the fp32 graph does not have: not comparable
        came_in = max((noise_to_signal.get(t, 0.0) for t in inputs[n.name]), default=0.0)
        scores.append(NodeSensitivity(node=n.name, op_type=n.op_type, noise_to_signal=round(out, 6),
                                      added=round(max(out - came_in, 0.0), 6)))
    return sorted(scores, key=lambda s: (-s.added, -s.noise_to_signal, s.node))


def _noise_to_signal(fp32: Path, int8: Path, tensors: list[str], samples: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Per tensor, the energy of (int8 - fp32) over the energy of fp32, summed over the samples."""
    sessions = [_exposing(path, tensors) for path in (fp32, int8)]
    signal = dict.fromkeys(tensors, 0.0)
    noise = dict.fromkeys(tensors, 0.0)
    for feed in samples:
        reference, quantized = (dict(zip(names, session.run(names, feed))) for session, names in sessions)
        for name in tensors:
            if name in reference and name in quantized and reference[name].shape == quantized[name].shape:
                f = reference[name].astype(np.float64)
                signal[name] += float(np.sum(f * f))
                noise[name] += float(np.sum((quantized[name].astype(np.float64) - f) ** 2))
    return {name: noise[name] / signal[name] for name in tensors if signal[name] > 0}


def _exposing(path: Path, tensors: list[str]):
    """A session whose outputs are the graph's own and those of `tensors` it produces (the rest are absent)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    produced = {name for n in model.graph.node for name in n.output}
    present = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.ValueInfoProto(name=t) for t in tensors if t in produced and t not in present)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session, [o.name for o in session.get_outputs()]


def search(orderings: dict[str, list[str]], build: Callable[[str, list[str]], Trial], max_trials: int,
           max_seconds: float, clock: Callable[[], float] = time.monotonic) -> tuple[Trial | None, list[Trial]]:
    """The fewest nodes, first in one of `orderings` (tried in turn, each with its share of what is left of the
    budget), to keep in float for a build that meets the SLOs: 1, 2, 4, ... until one does, then bisection
    between the last miss and the first hit; within `max_trials` builds and `max_seconds` in all. Returns the
    best build that met them (None when none did) and every trial, in order."""
    started = clock()
    trials: list[Trial] = []
    for index, (order, nodes) in enumerate(orderings.items()):
        limit = len(trials) + (max_trials - len(trials)) // (len(orderings) - index)
        met = _fewest(order, nodes, build, trials, lambda: len(trials) >= limit or clock() - started >= max_seconds)
        if met:
            return met, trials
    return None, trials


def _fewest(order: str, nodes: list[str], build, trials: list[Trial], spent: Callable[[], bool]) -> Trial | None:
    tried: dict[int, Trial] = {}

    def attempt(k: int) -> Trial:
        tried[k] = build(order, nodes[:k])
        trials.append(tried[k])
        return tried[k]

    missed, met = 0, None  # the all-int8 build (0 in float) is known to miss
    k = 1
    while met is None and not spent() and missed < len(nodes):
        k = min(k, len(nodes))
        if attempt(k).misses:
            missed, k = k, 2 * k
        else:
            met = k
    while met is not None and met - missed > 1 and not spent():
        middle = (missed + met) // 2
        if attempt(middle).misses:
            missed = middle
        else:
            met = middle
    return tried[met] if met is not None else None


def summary(quantizable: int, ranked: list[NodeSensitivity], chosen: Trial | None,
            trials: list[Trial]) -> MixedPrecisionResult:
    return MixedPrecisionResult(
        quantizable_nodes=quantizable,
        float_nodes=chosen.float_nodes if chosen else [],
        most_sensitive=ranked[:REPORTED_NODES],
        trials=[MixedTrial(order=t.order, float_nodes=len(t.float_nodes), met=not t.misses, quality=t.quality,
                           size_bytes=t.size_bytes) for t in trials],
    )


def why_not(ranked: list[NodeSensitivity], trials: list[Trial]) -> str:
    """Layer by layer, why no mix met the SLOs: the trials and the nodes that add the most noise."""
    tried = "; ".join(f"{len(t.float_nodes)} in float by {t.order}: {t.quality}" for t in trials)
    nodes = ", ".join(f"{s.node} ({s.op_type}, adds {s.added:.2%} noise)" for s in ranked[:5])
    return f"no mix of int8 and float met the SLOs ({tried}); the nodes that add the most noise: {nodes}"


def graph_order(int8: Path) -> list[str]:
    """The quantized nodes of `int8` in the graph's (topological) order, from the input."""
    import onnx

    return [n.name for n in _quantized_nodes(onnx.load(str(int8), load_external_data=False))]


def _quantized_nodes(model) -> list:
    """The nodes of a QDQ model that read a dequantized tensor: those int8-static quantized."""
    return [n for n in model.graph.node if n.op_type not in _QDQ and any(name.endswith(_DEQUANTIZED) for name in n.input)]
