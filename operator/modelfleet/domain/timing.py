"""How much faster one artifact is than another, with an interval that says how sure we are (pure).

Artifacts of one runtime are timed interleaved: round r times every artifact once, so a load that comes
and goes on a shared node hits all of them alike. The speed-up of A over B is the ratio of their median
times; its 95% interval comes from a bootstrap over the rounds (paired: a resampled round keeps every
artifact's time of that round, which is what cancels the drift). Anchors: pyperf and criterion.rs.
Deterministic: the resampling is seeded, so the same timings always give the same interval. Plain Python: the
operator, which rejudges results, carries no numpy.
"""

import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import median

RESAMPLES = 1000
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
    return _speedup(tuple(times), tuple(reference_times))


@functools.lru_cache(maxsize=4096)  # a choice asks for the same pairs again (reasons, notes, rejudging)
def _speedup(a: tuple[float, ...], b: tuple[float, ...]) -> Ratio:
    value = round(_ratio(median(b), median(a)), 4)
    if len(a) < 2 or len(b) < 2:
        return Ratio(value, value, value)
    rng = random.Random(_SEED)
    ratios = []
    for _ in range(RESAMPLES):
        if len(a) == len(b):
            rounds = rng.choices(range(len(a)), k=len(a))
            ratios.append(_ratio(median([b[i] for i in rounds]), median([a[i] for i in rounds])))
        else:
            ratios.append(_ratio(median(rng.choices(b, k=len(b))), median(rng.choices(a, k=len(a)))))
    ratios.sort()
    tail = (1 - CONFIDENCE) / 2
    low, high = ratios[int(tail * (RESAMPLES - 1))], ratios[int(round((1 - tail) * (RESAMPLES - 1)))]
    return Ratio(value, round(low, 4), round(high, 4))


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / max(denominator, 1e-12)
