"""How much faster one artifact is than another, with an interval that says how sure we are (pure).

Artifacts of one runtime are timed interleaved: round r times every artifact once, so a load that comes
and goes on a shared node hits all of them alike. The speed-up of A over B is the ratio of their median
times; its 95% interval comes from a bootstrap over the rounds (paired: a resampled round keeps every
artifact's time of that round, which is what cancels the drift). Anchors: pyperf and criterion.rs.
Deterministic: the resampling is seeded, so the same timings always give the same interval.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000
CONFIDENCE = 0.95
TIE = 0.10  # within the latency SLO, a speed-up under 10% is not worth a larger download; and a busy node moves
# ratios by several percent (ncnn fp16 vs fp32 on x86: 1.04x calm, 1.06x under a hog), which a narrower band splits
_SEED = 20261207


@dataclass(frozen=True)
class Ratio:
    """`value` times faster (below 1: slower), with its interval [low, high]."""

    value: float
    low: float
    high: float

    def clearly_above(self, level: float) -> bool:
        return self.low > level

    def clearly_below(self, level: float) -> bool:
        return self.high < level

    def overlaps_tie(self) -> bool:
        """The interval reaches into the tie band [1/(1+TIE), 1+TIE]: not shown to differ."""
        return self.low <= 1 + TIE and self.high >= 1 / (1 + TIE)

    def text(self) -> str:
        return f"{self.value:.2f}x [{self.low:.2f}, {self.high:.2f}]"


def speedup(times: Sequence[float], reference_times: Sequence[float]) -> Ratio:
    """How many times faster `times` are than `reference_times`: median(reference) / median(times).

    Timings of equal length are paired by round (interleaved); otherwise each is resampled on its own.
    With a single timing (results written before the rounds were kept) the interval is the point."""
    a, b = np.asarray(times, dtype=np.float64), np.asarray(reference_times, dtype=np.float64)
    value = _ratio(np.median(b), np.median(a))
    if len(a) < 2 or len(b) < 2:
        return Ratio(value, value, value)
    rng = np.random.default_rng(_SEED)
    if len(a) == len(b):
        rounds = rng.integers(0, len(a), size=(RESAMPLES, len(a)))
        ratios = _ratio(np.median(b[rounds], axis=1), np.median(a[rounds], axis=1))
    else:
        ratios = _ratio(np.median(b[rng.integers(0, len(b), size=(RESAMPLES, len(b)))], axis=1),
                        np.median(a[rng.integers(0, len(a), size=(RESAMPLES, len(a)))], axis=1))
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return Ratio(round(float(value), 4), round(float(low), 4), round(float(high), 4))


def _ratio(numerator, denominator):
    return np.divide(numerator, np.maximum(denominator, 1e-12))
