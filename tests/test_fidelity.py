"""The label-free fidelity metric: table tests on hand-made outputs."""

import math

import numpy as np
import pytest

from modelfleet.pipeline.fidelity import MAX_SNR_DB, fidelity, per_sample

REFERENCE = np.array([[3.0, 4.0]])  # |r| = 5, energy 25


@pytest.mark.parametrize(("output", "cosine", "snr_db"), [
    ([[3.0, 4.0]], 1.0, MAX_SNR_DB),  # identical: capped, JSON has no infinity
    ([[6.0, 8.0]], 1.0, 0.0),  # same direction, noise as large as the signal
    ([[3.0, 4.5]], (9 + 18) / (5 * math.hypot(3, 4.5)), 10 * math.log10(25 / 0.25)),
    ([[-3.0, -4.0]], -1.0, 10 * math.log10(25 / 100)),  # opposite
    ([[4.0, -3.0]], 0.0, 10 * math.log10(25 / 50)),  # orthogonal
    ([[0.0, 0.0]], 0.0, 0.0),  # silence against a signal: no direction in common, noise = signal
    ([[np.nan, 4.0]], -1.0, -MAX_SNR_DB),  # NaN counts as the worst, never passes a bound
    ([[np.inf, 4.0]], -1.0, -MAX_SNR_DB),
], ids=["identical", "scaled", "close", "opposite", "orthogonal", "zero-output", "nan", "inf"])
def test_cosine_and_snr_of_one_sample(output, cosine, snr_db):
    cos, snr = per_sample(np.array(output), REFERENCE)
    assert cos[0] == pytest.approx(cosine, abs=1e-12)
    assert snr[0] == pytest.approx(snr_db, abs=1e-9)


@pytest.mark.parametrize(("output", "reference", "cosine", "snr_db"), [
    ([[0.0, 0.0]], [[0.0, 0.0]], 1.0, MAX_SNR_DB),  # both silent: the same output
    ([[1e-3, 0.0]], [[0.0, 0.0]], 0.0, -MAX_SNR_DB),  # any output against a silent reference
    ([[1.0, 2.0]], [[np.nan, 2.0]], -1.0, -MAX_SNR_DB),  # a broken reference fails the sample too
], ids=["both-zero", "zero-reference", "nan-reference"])
def test_degenerate_references(output, reference, cosine, snr_db):
    cos, snr = per_sample(np.array(output), np.array(reference))
    assert (cos[0], snr[0]) == (cosine, snr_db)


def test_samples_are_compared_whole_whatever_their_shape():
    # A (2, 1, 2, 2) segmentation-like output: each sample's map is one vector.
    reference = np.arange(1, 9, dtype=np.float32).reshape(2, 1, 2, 2)
    output = reference.copy()
    output[1, 0, 0, 0] += 1.0
    cos, snr = per_sample(output, reference)
    assert cos[0] == 1.0 and snr[0] == MAX_SNR_DB
    assert snr[1] == pytest.approx(10 * math.log10((25 + 36 + 49 + 64) / 1.0))


def test_summary_reports_means_and_the_worst_sample_of_each_measure():
    reference = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    output = np.array([[1.0, 0.0], [1.0, 0.5], [3.0, 0.0]])  # sample 1 turns, sample 2 is loud
    result = fidelity([output], [reference])
    cos, snr = per_sample(output, reference)
    assert result.cosine == pytest.approx(cos.mean(), abs=1e-6)
    assert result.snr_db == pytest.approx(snr.mean(), abs=1e-3)
    assert (result.min_cosine_sample, result.min_snr_sample) == (1, 2)  # the worst differ per measure
    assert result.min_cosine == pytest.approx(1 / math.hypot(1, 0.5), abs=1e-6)
    assert result.min_snr_db == pytest.approx(10 * math.log10(1 / 4), abs=1e-3)


def test_outputs_of_another_shape_are_refused():
    with pytest.raises(ValueError, match=r"outputs of shape \[2, 3\] cannot be compared with the baseline's \[2, 4\]"):
        per_sample(np.zeros((2, 3)), np.zeros((2, 4)))


def test_with_several_outputs_the_worst_one_counts_and_each_is_reported():
    """A detector's two heads, a recurrent model's output and state: every output is compared; the figures
    describe the worst (lowest mean cosine), and each output's means are listed."""
    reference = [np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 2.0], [3.0, 4.0]])]
    outputs = [reference[0].copy(), np.array([[1.0, 2.5], [3.0, 3.0]])]  # the second output drifts
    result = fidelity(outputs, reference, ["scores", "state"])
    assert result.output == "state"
    assert result.cosine == pytest.approx(per_sample(outputs[1], reference[1])[0].mean(), abs=1e-6)
    assert [(o.name, o.cosine == 1.0) for o in result.outputs] == [("scores", True), ("state", False)]
    single = fidelity(outputs[:1], reference[:1])
    assert single.output is None and single.outputs is None
    with pytest.raises(ValueError, match="2 outputs cannot be compared with the baseline's 1"):
        fidelity(outputs, reference[:1])

