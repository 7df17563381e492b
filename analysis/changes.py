"""Did this series change around the incident, when, and by how much?

A robust control chart with a persistence rule, and a rank test for significance:

* **Baseline.** The samples before the baseline window ends (well before the alert). Their median is the level;
  their MAD (median absolute deviation, x1.4826 to estimate sigma for normal noise) is the spread. A flat
  baseline has no MAD, so the spread has a floor of 10 % of the level and an absolute floor per metric: on a
  perfectly flat baseline the smallest change reported is then a 30 % shift, and "0.0010 -> 0.0012" does not
  score like an outage.
* **Change.** The latest run of samples that left the band (|robust z| >= ``min_score``) on the same side and
  stayed out up to the end (one stray sample inside the band is tolerated). Its first sample is the onset.
  Transient spikes shorter than ``min_run`` samples are not changes.
* **Significance.** A one-sided Mann-Whitney U test of the run against the baseline (normal approximation with
  tie and continuity corrections): the run must be significantly above (or below) the baseline, p < ``max_p``.
* **Size.** The settled level, the median of the run's latter half (rate windows smear a step over minutes,
  so the run's start is the transition), against the baseline's median: the shift, the ratio, and the robust z
  of the shift (capped, so a flat baseline that jumps does not outrank everything by an arbitrary amount).

Medians and ranks make all of it indifferent to outliers and skew, and drift that stays within the band is
not a change (a plain change-point test would flag any monotone drift once there are enough samples).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import median

MAD_TO_SIGMA = 1.4826
SCORE_CAP = 100.0


@dataclass(frozen=True)
class Change:
    index: int  # first sample of the change
    p_value: float
    baseline: float  # median of the baseline
    recent: float  # settled level: median of the latter half of the changed run
    score: float  # robust z-score of the shift, signed, capped at +-SCORE_CAP

    @property
    def direction(self) -> str:
        return "up" if self.recent >= self.baseline else "down"

    @property
    def ratio(self) -> float | None:
        return self.recent / self.baseline if self.baseline != 0 else None


def robust_scale(values: Sequence[float], level: float, relative_floor: float, absolute_floor: float) -> float:
    """MAD-based sigma of ``values``, never below a floor relative to ``level`` nor an absolute one."""
    center = median(values)
    mad = median(abs(value - center) for value in values)
    return max(MAD_TO_SIGMA * mad, relative_floor * abs(level), absolute_floor)


def mann_whitney_p(sample: Sequence[float], reference: Sequence[float], greater: bool) -> float:
    """One-sided p-value that ``sample`` is stochastically greater (or less) than ``reference``."""
    m, n = len(sample), len(reference)
    pooled = sorted((value, group) for group, values in ((0, sample), (1, reference)) for value in values)
    ranks: list[float] = [0.0] * len(pooled)
    tie_term = 0.0
    start = 0
    while start < len(pooled):
        end = start
        while end + 1 < len(pooled) and pooled[end + 1][0] == pooled[start][0]:
            end += 1
        size = end - start + 1
        tie_term += size**3 - size
        for position in range(start, end + 1):
            ranks[position] = (start + end) / 2 + 1
        start = end + 1
    rank_sum = sum(rank for rank, (_, group) in zip(ranks, pooled, strict=True) if group == 0)
    u = rank_sum - m * (m + 1) / 2
    total = m + n
    variance = m * n / 12 * ((total + 1) - tie_term / (total * (total - 1)))
    if variance <= 0:
        return 1.0  # every value equal: no evidence either way
    shift = u - m * n / 2
    if not greater:
        shift = -shift
    z = (shift - 0.5) / math.sqrt(variance)  # continuity correction, toward the null
    return 0.5 * math.erfc(z / math.sqrt(2))


def detect_change(
    values: Sequence[float],
    baseline_end: int,
    *,
    min_baseline: int = 10,
    min_run: int = 4,
    max_p: float = 0.01,
    min_score: float = 3.0,
    relative_floor: float = 0.10,
    absolute_floor: float = 1e-9,
) -> Change | None:
    """The change that ``values`` (time-ordered, finite) show after their first ``baseline_end`` samples."""
    if baseline_end < min_baseline or len(values) - baseline_end < 1 or not all(map(math.isfinite, values)):
        return None
    baseline = values[:baseline_end]
    level = median(baseline)
    scale = robust_scale(baseline, level, relative_floor, absolute_floor)
    z = [(value - level) / scale for value in values]
    side = 1 if z[-1] > 0 else -1
    if abs(z[-1]) < min_score:
        return None  # the series is back inside the band now: whatever happened is not going on
    index, strays = len(values) - 1, 0
    while index > 0:
        previous = z[index - 1] * side
        if previous >= min_score:
            index -= 1
        elif strays == 0 and index > 1 and z[index - 2] * side >= min_score:
            strays, index = 1, index - 2  # one sample back inside the band does not end the run
        else:
            break
    run = values[index:]
    if len(run) < min_run:
        return None
    reference = values[: min(index, baseline_end)]
    if len(reference) < min_baseline:
        return None
    p_value = mann_whitney_p(run, reference, greater=side > 0)
    if p_value >= max_p:
        return None
    recent = median(run[len(run) // 2 :])
    score = max(-SCORE_CAP, min(SCORE_CAP, (recent - level) / scale))
    if abs(score) < min_score:
        return None
    return Change(index=index, p_value=p_value, baseline=level, recent=recent, score=score)
