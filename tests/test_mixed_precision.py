"""Accuracy-aware mixed precision: the search as table tests on made-up builds, then the digits CNN for real."""

from pathlib import Path

import pytest
import yaml

from modelfleet.pipeline.mixed import Trial, search, why_not
from modelfleet.api.result import NodeSensitivity

NODES = [f"n{i}" for i in range(40)]


def builds(meets):
    """A build function whose trial meets the SLOs when `meets(order, float_nodes)` says so, and the calls made."""
    calls = []

    def build(order, float_nodes):
        calls.append((order, len(float_nodes)))
        ok = meets(order, float_nodes)
        return Trial(order, float_nodes, Path("m.onnx"), [] if ok else ["cosine too low"], "q", 100 + len(float_nodes))

    return build, calls


@pytest.mark.parametrize("meets, chosen, calls", [
    # the 3 most sensitive nodes are the culprits: doubling to 4, then bisection back to 3
    (lambda order, nodes: {"n0", "n1", "n2"} <= set(nodes), ("sensitivity", 3),
     [("sensitivity", 1), ("sensitivity", 2), ("sensitivity", 4), ("sensitivity", 3)]),
    # one node is enough: found at once
    (lambda order, nodes: "n0" in nodes, ("sensitivity", 1), [("sensitivity", 1)]),
    # the ranking misses what matters (only the first 5 from the input do): half the budget (6 builds) on the
    # ranking, then the graph's order finds 5 by doubling to 8 and bisecting with what is left
    (lambda order, nodes: order == "graph" and len(nodes) >= 5, ("graph", 5),
     [("sensitivity", 1), ("sensitivity", 2), ("sensitivity", 4), ("sensitivity", 8), ("sensitivity", 16),
      ("sensitivity", 32), ("graph", 1), ("graph", 2), ("graph", 4), ("graph", 8), ("graph", 6), ("graph", 5)]),
    # nothing meets the SLOs: the budget is spent, nothing chosen
    (lambda order, nodes: False, None,
     [("sensitivity", 1), ("sensitivity", 2), ("sensitivity", 4), ("sensitivity", 8), ("sensitivity", 16),
      ("sensitivity", 32), ("graph", 1), ("graph", 2), ("graph", 4), ("graph", 8), ("graph", 16), ("graph", 32)]),
])
def test_the_search_keeps_the_fewest_nodes_in_float(meets, chosen, calls):
    build, made = builds(meets)
    best, trials = search({"sensitivity": NODES, "graph": list(reversed(NODES))}, build, max_trials=12,
                          max_seconds=60, clock=lambda: 0.0)
    assert made == calls
    assert (best.order, len(best.float_nodes)) == chosen if chosen else best is None
    assert [(t.order, len(t.float_nodes)) for t in trials] == calls


def test_the_search_stops_when_its_time_is_spent():
    now = [0.0]

    def clock():
        now[0] += 10.0  # every look at the clock: 10 s later
        return now[0]

    build, made = builds(lambda order, nodes: len(nodes) >= 30)
    best, _ = search({"sensitivity": NODES}, build, max_trials=64, max_seconds=35, clock=clock)
    assert best is None and 1 <= len(made) <= 3


def test_why_not_names_the_trials_and_the_noisiest_nodes():
    ranked = [NodeSensitivity(node="conv_7", op_type="Conv", noise_to_signal=0.4, added=0.3),
              NodeSensitivity(node="add_2", op_type="Add", noise_to_signal=0.05, added=0.05)]
    text = why_not(ranked, [Trial("all-int8", [], Path("m"), ["x"], "cosine 0.9500, SNR 10.6 dB", 1)])
    assert text == ("no mix of int8 and float met the SLOs (0 in float by all-int8: cosine 0.9500, SNR 10.6 dB); "
                    "the nodes that add the most noise: conv_7 (Conv, adds 30.00% noise), add_2 (Add, adds 5.00% noise)")


@pytest.mark.slow
def test_the_digits_cnn_gets_a_mixed_artifact_when_int8_misses_a_strict_slo(digits_manifest, tmp_path):
    """An SNR SLO 3 dB above what int8-static measures: int8-static misses it, and the search ships int8 with the
    nodes it keeps in float named, every trial recorded, and the artifact measured like any other."""
    from modelfleet.api import CompressedModel
    from modelfleet.pipeline.run import compress
    from modelfleet.progress import Progress

    def run(changes, out):
        manifest = yaml.safe_load(digits_manifest({
            "dataset": {"metric": "fidelity"}, "compression": {"precisions": ["int8-static"]},
            "targets": {"edge": []}, **changes}).read_text())
        return compress(CompressedModel.model_validate(manifest), tmp_path / out, tmp_path, Progress(enabled=False))

    plain = run({"compression": {"mixedPrecision": {"enabled": False}}}, "plain")
    int8_snr = next(a for a in plain.artifacts if a.name == "onnx-int8-static").fidelity.snr_db
    assert not any(a.name == "onnx-int8-mixed" for a in plain.artifacts)  # disabled: no search
    result = run({"slo": {"minFidelityCosine": 0.9, "minFidelitySnrDb": int8_snr + 3}}, "out")
    artifacts = {a.name: a for a in result.artifacts}
    mixed = artifacts.get("onnx-int8-mixed")
    if mixed is None:  # then the result must say, layer by layer, why not
        (failure,) = [f for f in result.failures if f.target == "onnx-int8-mixed"]
        assert failure.reason == "MixedPrecisionMissed" and "the nodes that add the most noise" in failure.message
        pytest.fail(f"no mix met the SLO on the digits CNN: {failure.message}")
    assert mixed.fidelity.snr_db >= int8_snr + 3
    info = mixed.mixed_precision
    assert 0 < len(info.float_nodes) < info.quantizable_nodes
    assert info.trials[0].order == "all-int8" and not info.trials[0].met and info.trials[-1].met is not None
    assert any(t.met and t.float_nodes == len(info.float_nodes) for t in info.trials)
    assert 0 < mixed.fraction_quantized < artifacts["onnx-int8-static"].fraction_quantized
    assert (tmp_path / "out" / "onnx-int8-mixed" / "model.onnx").is_file()
