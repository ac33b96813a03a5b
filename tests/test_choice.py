"""Choosing per target on measured figures: table tests on hand-built rows, then the digits CNN for real."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import yaml

from modelfleet.api import SLO, AgreementResult, ArtifactResult, LatencyResult, TargetFailure
from modelfleet.api.compressedmodel import Targets
from modelfleet.api.result import ResultManifest
from modelfleet.domain.choice import (
    Candidate, choose, choose_targets, compare_with_fp32, gate, rejudged, summary, timed_runs, triton_artifact,
)
from modelfleet.domain.timing import TIE, speedup
from modelfleet.progress import Progress

# --- choose: the pure core ----------------------------------------------------------------------------


def runs(median, noise=0.005, n=60, seed=0):
    """Timed runs around `median` ms with relative noise `noise` (seeded: the same runs every time)."""
    rng = np.random.default_rng(seed)
    return tuple(float(t) for t in median * (1 + noise * rng.standard_normal(n)))


FP32_RUNS = runs(0.036, seed=1)
FP32 = Candidate("onnx-fp32", FP32_RUNS, size_bytes=100_000, fp32_times_ms=FP32_RUNS)


def row(name, median, size, *misses, fp32=FP32_RUNS, noise=0.005):
    return Candidate(name, runs(median, noise, seed=len(name)), size_bytes=size, misses=misses, fp32_times_ms=fp32)


def without_intervals(reason):
    return re.sub(r" \[-?[0-9.]+, [0-9.]+\]", "", reason)


@pytest.mark.parametrize("candidates, failed, chosen, reasons", [
    # the digits CNN on this CPU: int8 is slower than fp32, so fp32 ships
    ([FP32, row("onnx-int8-static", 0.048, 30_000)], {}, "onnx-fp32",
     {"onnx-int8-static": "slower than fp32 (1.33x)"}),
    # int8 faster and within the SLOs: it ships, fp32 lost on speed
    ([FP32, row("onnx-int8-static", 0.020, 30_000)], {}, "onnx-int8-static",
     {"onnx-fp32": "median 0.036 ms: onnx-int8-static is 1.80x faster"}),
    # the fastest misses the accuracy SLO: the next fastest that meets it ships
    ([FP32, row("onnx-fp16", 0.030, 50_000), row("onnx-int8-static", 0.010, 30_000, "drop 1.80 pt > 1")], {},
     "onnx-fp16", {"onnx-fp32": "median 0.036 ms: onnx-fp16 is 1.20x faster", "onnx-int8-static": "drop 1.80 pt > 1"}),
    # a faster candidate that is still slower than fp32 says so, not merely "slower than the chosen one"
    ([Candidate("onnx-fp32", FP32_RUNS, 100_000, ("size 97.7 KiB > 48.8 KiB",), FP32_RUNS),
      row("onnx-fp16", 0.050, 50_000), row("onnx-int8-static", 0.040, 30_000)], {}, "onnx-int8-static",
     {"onnx-fp32": "size 97.7 KiB > 48.8 KiB", "onnx-fp16": "slower than fp32 (1.39x)"}),
    # medians within TIE are a tie: the smaller wins
    ([FP32, row("onnx-fp16", 0.036 * (1 + TIE / 2), 50_000)], {}, "onnx-fp16",
     {"onnx-fp32": "larger than onnx-fp16 (97.7 KiB > 48.8 KiB) and not shown faster than it (1.05x)"}),
    # 10% apart, but the runs are too noisy to show it: a tie, the smaller wins
    ([FP32, row("onnx-fp16", 0.036 * 1.10, 50_000, noise=0.6)], {}, "onnx-fp16",
     {"onnx-fp32": "larger than onnx-fp16 (97.7 KiB > 48.8 KiB) and not shown faster than it (0.94x)"}),
    # beyond TIE with tight runs it is no tie: the faster wins although larger
    ([FP32, row("onnx-fp16", 0.036 * (1 + 2 * TIE), 50_000)], {}, "onnx-fp32",
     {"onnx-fp16": "slower than fp32 (1.20x)"}),
    # nothing meets the SLOs: nothing is chosen, each says why
    ([Candidate("onnx-fp32", FP32_RUNS, 100_000, ("p95 0.036 ms > SLO 0.01 ms",), FP32_RUNS),
      row("onnx-int8-static", 0.020, 30_000, "drop 3.00 pt > 1", "p95 0.020 ms > SLO 0.01 ms")], {}, None,
     {"onnx-fp32": "p95 0.036 ms > SLO 0.01 ms", "onnx-int8-static": "drop 3.00 pt > 1; p95 0.020 ms > SLO 0.01 ms"}),
    # a candidate that could not be built loses with its failure
    ([FP32], {"onnx-int8-static": "quantize (UnsupportedOperator)"}, "onnx-fp32",
     {"onnx-int8-static": "failed: quantize (UnsupportedOperator)"}),
    # no fp32 in the runtime (an explicit edge precision): the plain comparison
    ([row("ncnn-fp16-x", 0.5, 10, fp32=None), row("ncnn-int8-x", 0.7, 5, fp32=None)], {}, "ncnn-fp16-x",
     {"ncnn-int8-x": "median 0.700 ms: ncnn-fp16-x is 1.40x faster"}),
])
def test_choose_the_fastest_that_meets_the_slos(candidates, failed, chosen, reasons):
    choice = choose("triton", "onnxruntime", candidates, failed)
    assert choice.chosen == chosen
    assert {lost.artifact: without_intervals(lost.reason) for lost in choice.losers} == reasons


def test_a_speedup_interval_comes_from_the_rounds_and_narrows_with_pairing():
    """Paired rounds cancel a load that hits both alike; the interval holds the true ratio (1.25x)."""
    drift = np.linspace(1.0, 3.0, 60)  # the node gets three times slower during the rounds
    fast, slow = tuple(0.8 * drift * np.array(runs(1.0, 0.02, seed=3))), tuple(drift * np.array(runs(1.0, 0.02, seed=4)))
    paired = speedup(fast, slow)
    assert paired.low < 1.25 < paired.high and paired.high - paired.low < 0.15
    unpaired = speedup(fast, slow[:-1])  # unequal lengths are resampled apart: the drift widens the interval
    assert unpaired.high - unpaired.low > 2 * (paired.high - paired.low)
    assert speedup((1.0,), (2.0,)).text() == "2.00x [2.00, 2.00]"  # a single run (old results): the point


# --- from result rows ---------------------------------------------------------------------------------


def artifact(name, precision, p95, size=1000, drop=0.0, runtime="onnxruntime", target=None, role="candidate",
             fraction=None):
    return ArtifactResult(
        name=name, runtime=runtime, precision=precision, role=role, target=target, files=[f"{name}/model"],
        sha256="0" * 64, size_bytes=size, accuracy=99.0 - drop, accuracy_drop_points=drop,
        agreement=AgreementResult(top1=99.0, max_abs_diff=0.1), fraction_quantized=fraction,
        latency=LatencyResult(p50_ms=p95 / 2, p95_ms=p95, runs=10, threads=1, batch_size=1,
                              samples_ms=list(runs(p95 / 2, 0.001, seed=len(name)))),
    )


ROWS = [
    artifact("onnx-fp32", "fp32", 0.036, 4000, role="baseline"),
    artifact("onnx-int8-static", "int8-static", 0.048, 1100, drop=0.2, fraction=0.97),
    artifact("onnx-int8-dynamic", "int8-dynamic", 0.030, 3900, drop=1.5, fraction=0.0),
    artifact("ncnn-fp32-boards", "fp32", 0.50, 4000, runtime="ncnn", target="boards"),
    artifact("ncnn-fp16-boards", "fp16", 0.40, 2000, runtime="ncnn", target="boards"),
    artifact("ncnn-fp32-pis", "fp32", 0.30, 4000, runtime="ncnn", target="pis"),
    artifact("ncnn-fp16-pis", "fp16", 0.45, 2000, runtime="ncnn", target="pis"),
]
TARGETS = Targets.model_validate({
    "triton": {"repository": "file://repo", "modelName": "digits"},  # precision auto by default
    "edge": [{"name": "boards", "runtime": "ncnn"}, {"name": "pis", "runtime": "ncnn"}],
})
SLO_1PT = SLO.model_validate({"maxAccuracyDropPoints": 1.0})


def test_each_target_chooses_among_its_own_runtime():
    choices = choose_targets(ROWS, [], TARGETS, SLO_1PT)
    assert [(c.target, c.mode, c.chosen) for c in choices] == [
        ("triton", "auto", "onnx-fp32"), ("boards", "auto", "ncnn-fp16-boards"), ("pis", "auto", "ncnn-fp32-pis")]
    triton = {lost.artifact: lost.reason for lost in choices[0].losers}
    assert {k: without_intervals(v) for k, v in triton.items()} == {
        "onnx-int8-static": "slower than fp32 (1.33x)", "onnx-int8-dynamic": "drop 1.50 pt > 1"}
    # ncnn fp16 is compared with the same target's fp32, never with another target's
    assert {lost.artifact: without_intervals(lost.reason) for lost in choices[2].losers} == {
        "ncnn-fp16-pis": "slower than fp32 (1.50x)"}
    assert summary(choices) == "triton=onnx-fp32 boards=ncnn-fp16-boards pis=ncnn-fp32-pis"


def test_a_requested_precision_is_not_chosen_but_named():
    targets = Targets.model_validate({"triton": {"repository": "file://r", "modelName": "d", "precision": "int8-static"},
                                      "edge": [{"name": "boards", "runtime": "ncnn", "precision": "fp32"}]})
    choices = choose_targets(ROWS, [], targets, SLO_1PT)
    assert [(c.mode, c.chosen, c.losers) for c in choices] == [("requested", "onnx-int8-static", []),
                                                               ("requested", "ncnn-fp32-boards", [])]


@pytest.mark.parametrize("targets, slo, failures, violated", [
    # auto passes over int8-dynamic's missed drop: not shipped, no violation
    (TARGETS, SLO_1PT, [], []),
    # without a Triton target every ONNX variant is a candidate as before
    (Targets.model_validate({"edge": TARGETS.edge}), SLO_1PT, [], ["onnx-int8-dynamic"]),
    # a requested precision is held to the SLOs, and so is every ONNX variant beside it
    (Targets.model_validate({"triton": {"repository": "file://r", "modelName": "d", "precision": "int8-static"}}),
     SLO_1PT, [], ["onnx-int8-dynamic"]),
    # a failed auto candidate is passed over; a failed requested target is a violation
    (TARGETS, SLO_1PT, [TargetFailure(target="onnx-fp16", stage="quantize", reason="X", message="m")], []),
    (Targets.model_validate({"edge": [{"name": "pis", "runtime": "ncnn", "precision": "fp16"}]}), SLO_1PT,
     [TargetFailure(target="ncnn-fp16-pis", stage="convert", reason="X", message="m")],
     ["onnx-int8-dynamic", "ncnn-fp16-pis"]),
    # an auto target left with nothing that meets the SLOs is a violation of its own
    (TARGETS, SLO.model_validate({"maxAccuracyDropPoints": 1.0, "latencyP95Ms": {"onnxruntime": 0.01}}), [],
     ["triton"]),
])
def test_the_gate_holds_what_ships_to_the_slos(targets, slo, failures, violated):
    choices = choose_targets(ROWS, failures, targets, slo)
    verdict = gate(ROWS, failures, choices, slo)
    assert [v.artifact for v in verdict.violations] == violated
    assert verdict.passed == (not violated)


def test_the_empty_target_violation_says_why_each_candidate_lost():
    slo = SLO.model_validate({"maxAccuracyDropPoints": 1.0, "latencyP95Ms": {"onnxruntime": 0.01}})
    verdict = gate(ROWS, [], choose_targets(ROWS, [], TARGETS, slo), slo)
    assert verdict.violations[0].message.startswith(
        "triton: no candidate meets the SLOs (onnx-fp32: p95 0.036 ms > SLO")


def test_speedup_versus_fp32_in_the_same_runtime_and_the_slower_mark():
    compared = {a.name: a for a in compare_with_fp32(ROWS + [
        artifact("ncnn-fp16-solo", "fp16", 0.4, runtime="ncnn", target="solo")])}
    assert compared["onnx-fp32"].speedup_vs_fp32 == 1.0 and not compared["onnx-fp32"].slower_than_fp32
    assert compared["onnx-fp32"].speedup_interval == [1.0, 1.0]
    int8 = compared["onnx-int8-static"]
    assert int8.speedup_vs_fp32 == pytest.approx(0.75, abs=0.01) and int8.slower_than_fp32
    assert int8.speedup_interval[0] < int8.speedup_vs_fp32 < int8.speedup_interval[1] < 0.8
    assert [without_intervals(n) for n in int8.notes] == [
        f"slower than fp32: median 0.024 ms vs 0.018 ms (onnx-fp32), speed-up {int8.speedup_vs_fp32:.2f}x"]
    assert compared["ncnn-fp16-boards"].speedup_vs_fp32 == pytest.approx(1.25, abs=0.01)
    assert not compared["ncnn-fp16-boards"].slower_than_fp32
    assert compared["ncnn-fp16-pis"].speedup_vs_fp32 == pytest.approx(0.6667, abs=0.01)
    assert compared["ncnn-fp16-pis"].slower_than_fp32
    assert compared["ncnn-fp16-solo"].speedup_vs_fp32 is None and not compared["ncnn-fp16-solo"].slower_than_fp32


@pytest.mark.parametrize("factor, noise, marked", [
    (1.0, 0.005, False), (1 + TIE / 2, 0.005, False), (1 + 2 * TIE, 0.005, True), (1.33, 0.005, True),
    (1.33, 0.8, False),  # a third slower by the medians, but runs this noisy do not show it
])
def test_slower_than_fp32_only_beyond_the_noise_band(factor, noise, marked):
    """Marked slower only when the whole interval of the speed-up lies below the tie band."""
    slow = artifact("onnx-fp16", "fp16", 0.036)
    slow.latency.samples_ms = list(runs(0.018 * factor, noise, seed=9))
    compared = {a.name: a for a in compare_with_fp32([ROWS[0], slow])}
    assert compared["onnx-fp16"].slower_than_fp32 is marked
    assert any(n.startswith("slower than fp32") for n in compared["onnx-fp16"].notes) is marked


def test_a_variant_that_quantizes_under_a_tenth_of_its_weights_says_so():
    compared = {a.name: a for a in compare_with_fp32(ROWS)}
    assert any("only 0% of the weights are stored as int8" in n for n in compared["onnx-int8-dynamic"].notes)
    assert not any("weights" in n for n in compared["onnx-int8-static"].notes)


def _graph(path, ops):
    """A small real ONNX graph: Conv (8 -> 8 channels, 3x3) and/or MatMul (64 x 64) weights."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, weights, current = [], [], "x"
    if "conv" in ops:
        weights.append(numpy_helper.from_array(rng.normal(size=(8, 8, 3, 3)).astype(np.float32), "conv_w"))
        nodes.append(helper.make_node("Conv", [current, "conv_w"], ["c"], pads=[1, 1, 1, 1]))
        current = "c"
    if "matmul" in ops:
        weights.append(numpy_helper.from_array(rng.normal(size=(8, 8)).astype(np.float32), "mm_w"))
        nodes.append(helper.make_node("MatMul", [current, "mm_w"], ["m"]))
        current = "m"
    nodes.append(helper.make_node("Identity", [current], ["y"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("ops, expected", [
    (("conv",), 0.0),  # int8-dynamic leaves convolutions alone: nothing is quantized
    (("matmul",), 1.0),
    (("conv", "matmul"), 64 / (576 + 64)),
])
def test_fraction_quantized_counts_the_weights_int8_dynamic_really_stored_as_int8(tmp_path, ops, expected):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from modelfleet.pipeline.weights import fraction_quantized

    quantized = tmp_path / "int8.onnx"
    # as pipeline/quantize.py's int8-dynamic does it
    quantize_dynamic(str(_graph(tmp_path / "fp32.onnx", ops)), str(quantized), op_types_to_quantize=["MatMul", "Gemm"],
                     weight_type=QuantType.QInt8)
    assert fraction_quantized(tmp_path / "fp32.onnx") == 0.0
    assert fraction_quantized(quantized) == pytest.approx(expected, abs=0.02)  # the weight scale stays float


def result_of(rows, choices=()) -> ResultManifest:
    return ResultManifest.model_validate({
        "modelName": "digits", "source": {"uri": "file://x", "format": "torchscript", "sha256": "b" * 64},
        "baseline": {"artifact": "onnx-fp32", "accuracy": 99.0, "evaluatedSamples": 540},
        "artifacts": [r.to_wire() for r in rows], "verdict": {"passed": True}, "durationSeconds": 1.0,
        "choices": [c.to_wire() for c in choices]})


def test_rejudging_under_new_slos_changes_what_triton_publishes():
    from modelfleet.api.compressedmodel import CompressedModelSpec

    rows = [ROWS[0], artifact("onnx-int8-static", "int8-static", 0.020, 1100, drop=0.5)]
    spec = {"source": {"uri": "file://m.pt", "format": "torchscript", "inputs": [{"name": "x", "shape": [-1, 4]}]},
            "dataset": {"calibration": {"uri": "file://c.npz"}, "evaluation": {"uri": "file://e.npz"}},
            "targets": {"triton": {"repository": "file://repo", "modelName": "digits"}}}
    loose = CompressedModelSpec.model_validate(spec)
    strict = CompressedModelSpec.model_validate(spec | {"slo": {"maxAccuracyDropPoints": 0.2}})
    written = result_of(rows, choose_targets(rows, [], loose.targets, loose.slo))
    assert triton_artifact(written, "auto") == "onnx-int8-static"
    assert triton_artifact(rejudged(written, strict), "auto") == "onnx-fp32"
    assert triton_artifact(written, "fp16") == "onnx-fp16"  # a requested precision names its artifact


# --- the digits CNN, measured for real ----------------------------------------------------------------


def test_publishing_with_precision_auto_ships_the_results_choice(digits_result, tmp_path):
    from modelfleet.api.compressedmodel import TritonTarget
    from modelfleet.errors import PermanentError
    from modelfleet.progress import Progress
    from modelfleet.publish.triton import publish

    written = ResultManifest.model_validate_json((digits_result / "result.json").read_text())
    target = TritonTarget.model_validate({"repository": f"file://{tmp_path}/repo", "modelName": "digits"})
    with pytest.raises(PermanentError, match="made without a Triton target"):
        publish(written, digits_result, target, "default/digits", None, Progress(enabled=False))
    choices = choose_targets(written.artifacts, written.failures, Targets(triton=target), SLO())
    outcome = publish(written.model_copy(update={"choices": choices}), digits_result, target, "default/digits", None,
                      Progress(enabled=False))
    assert outcome.state == "Written" and outcome.artifact == choices[0].chosen


@pytest.fixture(scope="module")
def digits_choice(digits_data, tmp_path_factory):
    """A real run: every ONNX precision in onnxruntime, ncnn fp32/fp16 for an auto edge target."""
    import yaml

    from conftest import digits_example
    from modelfleet.cli import main

    workdir = tmp_path_factory.mktemp("digits-choice")
    manifest = digits_example(digits_data, {
        "benchmark": {"threads": 1, "warmupRuns": 5, "runs": 50},
        "compression": {"precisions": ["fp16", "int8-dynamic", "int8-static"]},
        "targets": {"edge": [{"name": "boards", "runtime": "ncnn"}]}})
    (workdir / "m.yaml").write_text(yaml.safe_dump(manifest))
    main(["run", "-q", "-f", str(workdir / "m.yaml"), "-o", str(workdir / "out")])
    return workdir / "out"


def test_an_artifact_slower_than_fp32_is_marked_as_such(digits_choice, capsys):
    """Whatever this CPU measures: the mark and the speed-up agree with the p95s in the result and the table."""
    from modelfleet.report import result_table

    result = ResultManifest.model_validate_json((digits_choice / "result.json").read_text())
    fp32 = {(a.runtime, a.target): a for a in result.artifacts if a.precision == "fp32"}
    table = result_table(result)
    for a in result.artifacts:
        reference = fp32[(a.runtime, a.target)]
        assert len(a.latency.samples_ms) == len(reference.latency.samples_ms) == a.latency.runs  # the same rounds
        gain = speedup(a.latency.samples_ms, reference.latency.samples_ms)
        assert a.speedup_vs_fp32 == gain.value and a.speedup_interval == [gain.low, gain.high], a.name
        assert a.slower_than_fp32 == (gain.high < 1 / (1 + TIE)), a.name
        assert any(n.startswith("slower than fp32") for n in a.notes) == a.slower_than_fp32, a.name
        line = next(line for line in table.splitlines() if line.startswith(a.name + " "))
        assert (" SLOWER " in line) == a.slower_than_fp32, line


def test_the_digits_choice_is_the_fastest_qualifying_candidate(digits_choice):
    result = json.loads((digits_choice / "result.json").read_text())
    artifacts = {a["name"]: a for a in result["artifacts"]}
    (boards,) = result["choices"]
    assert boards["target"] == "boards" and boards["mode"] == "auto"
    built = [a for a in result["artifacts"] if a.get("target") == "boards"]
    assert {"ncnn-fp32-boards", "ncnn-fp16-boards"} <= {a["name"] for a in built}
    qualifying = [ArtifactResult.model_validate(a) for a in built if a["accuracyDropPoints"] <= 1.0]
    fastest = min(qualifying, key=lambda a: a.latency.p50_ms)
    chosen = ArtifactResult.model_validate(artifacts[boards["chosen"]])
    # the fastest, or one not shown slower than it (then the smaller)
    assert chosen.name == fastest.name or speedup(timed_runs(fastest.latency), timed_runs(chosen.latency)).overlaps_tie()
    # every other candidate, built or failed (ncnn int8 without its tools), is listed with a reason
    failed = [f["target"] for f in result["failures"] if f["target"].endswith("-boards")]
    assert sorted(lost["artifact"] for lost in boards["losers"]) == sorted(
        [a["name"] for a in built if a["name"] != boards["chosen"]] + failed)
    assert all(lost["reason"] for lost in boards["losers"])
    # int8-dynamic quantizes MatMul/Gemm only: the digits CNN's convolutions stay fp32
    assert 0 <= artifacts["onnx-int8-dynamic"]["fractionQuantized"] < artifacts["onnx-int8-static"]["fractionQuantized"]
    assert artifacts["onnx-int8-static"]["fractionQuantized"] > 0.9
    assert result["tradeoff"] == "tradeoff.png"
    assert (digits_choice / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- the choice on a busy node -------------------------------------------------------------------------


class HogAtBenchmark(Progress):
    """Starts CPU hogs (one per core) when the pipeline starts timing its first runtime: in the middle of the run."""

    def __init__(self):
        super().__init__(enabled=False)
        self.hogs: list[subprocess.Popen] = []

    def step(self, stage, message):
        if stage == "benchmark" and not self.hogs:
            code = "while True: pass"
            self.hogs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(os.cpu_count() or 2)]

    def stop(self):
        for hog in self.hogs:
            hog.kill()
            hog.wait()


@pytest.mark.slow
def test_a_cpu_hog_in_the_middle_of_a_run_does_not_change_the_choice(digits_manifest, tmp_path):
    """The same inputs chosen twice, the second time with every core busy from the benchmark on: interleaved
    rounds let the load hit every candidate alike, and what the busy run cannot tell apart is a tie that the
    smaller artifact wins, so both runs choose alike."""
    from modelfleet.api import CompressedModel
    from modelfleet.pipeline.run import compress

    manifest = yaml.safe_load(digits_manifest({
        "benchmark": {"runs": 200, "warmupRuns": 20},
        "compression": {"precisions": ["fp16", "int8-dynamic", "int8-static"]},
        "targets": {"triton": {"repository": f"file://{tmp_path}/repo", "modelName": "digits"}}}).read_text())
    model = CompressedModel.model_validate(manifest)
    calm = compress(model, tmp_path / "calm", tmp_path, Progress(enabled=False))
    hog = HogAtBenchmark()
    try:
        busy = compress(model, tmp_path / "busy", tmp_path, hog)
    finally:
        hog.stop()
    assert hog.hogs, "the hog never started"
    assert [c.chosen for c in busy.choices] == [c.chosen for c in calm.choices], "\n".join(
        f"{c.target}: {c.chosen} ({'; '.join(f'{lost.artifact}: {lost.reason}' for lost in c.losers)})"
        for c in [*calm.choices, *busy.choices])
