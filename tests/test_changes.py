"""Change detection on synthetic series whose truth we know (seeded noise, so every run sees the same data)."""

from __future__ import annotations

import math
import random

import pytest

from analysis.changes import detect_change, mann_whitney_p


def noisy(level: float, n: int, sigma: float, rng: random.Random) -> list[float]:
    return [level + rng.gauss(0, sigma) for _ in range(n)]


def test_a_step_is_found_where_it_happened_with_its_size() -> None:
    rng = random.Random(1)
    values = noisy(0.01, 120, 0.002, rng) + noisy(0.35, 30, 0.02, rng)
    change = detect_change(values, 100)
    assert change is not None
    assert change.index == 120
    assert change.baseline == pytest.approx(0.01, abs=0.002)
    assert change.recent == pytest.approx(0.35, abs=0.02)
    assert change.direction == "up" and change.score > 50
    assert change.p_value < 1e-6


def test_a_drop_is_a_change_down() -> None:
    rng = random.Random(2)
    values = noisy(5.0, 80, 0.1, rng) + noisy(2.0, 40, 0.1, rng)
    change = detect_change(values, 70)
    assert change is not None and change.direction == "down" and change.score < -3 and change.index == 80
    assert change.ratio == pytest.approx(0.4, abs=0.05)


def test_drift_inside_the_band_does_not_move_the_onset() -> None:
    # A slow drift over 280 samples and a short sharp rise at the end: a rank change-point test puts the change in
    # the middle of the drift; the control chart puts it where the series left its band.
    drift = [0.00816 - 0.0000005 * i for i in range(280)]
    rise = [0.03 + 0.015 * i for i in range(20)]
    change = detect_change(drift + rise, 220)
    assert change is not None and change.index == 280


@pytest.mark.parametrize("seed", range(20))
def test_stationary_noise_is_not_a_change(seed: int) -> None:
    values = noisy(100.0, 150, 5.0, random.Random(seed))
    assert detect_change(values, 100) is None


def test_spikes_are_not_changes() -> None:
    rng = random.Random(3)
    values = noisy(1.0, 150, 0.05, rng)
    values[120] = values[121] = 1000.0  # a two-sample spike in the middle
    assert detect_change(values, 100) is None
    values[-1] = values[-2] = 1000.0  # and at the end: too short to be a change yet
    assert detect_change(values, 100) is None


def test_a_change_that_recovered_is_not_going_on() -> None:
    values = [1.0] * 100 + [5.0] * 20 + [1.0] * 10
    assert detect_change(values, 90) is None


def test_one_stray_sample_inside_the_band_does_not_split_the_run() -> None:
    values = [1.0] * 100 + [5.0] * 10 + [1.0] + [5.0] * 10
    change = detect_change(values, 90)
    assert change is not None and change.index == 100


def test_a_tiny_shift_on_a_flat_baseline_is_not_a_change() -> None:
    # 0.0010 -> 0.0012 on a perfectly flat baseline is consistent, but not an effect worth a page.
    assert detect_change([0.001] * 100 + [0.0012] * 30, 90) is None


def test_a_flat_baseline_that_jumps_is_a_change_with_a_capped_score() -> None:
    change = detect_change([0.0] * 100 + [3.0] * 30, 90)  # e.g. restarts
    assert change is not None and change.index == 100 and change.score == 100.0


def test_too_little_baseline_or_non_finite_values_give_no_verdict() -> None:
    assert detect_change([0.0] * 5 + [1.0] * 40, 5) is None
    values = [0.0] * 50 + [1.0] * 50
    values[10] = math.nan
    assert detect_change(values, 40) is None


def test_mann_whitney_p_values() -> None:
    low, high = list(range(20)), list(range(100, 110))
    assert mann_whitney_p(high, low, greater=True) < 1e-4
    assert mann_whitney_p(high, low, greater=False) > 0.99
    assert mann_whitney_p([5.0] * 10, [5.0] * 10, greater=True) == 1.0  # all ties: no evidence
    # Against a table value: U = 0 for m = n = 5 has exact one-sided p = 1/252 = 0.004; the normal approximation
    # lands nearby.
    assert mann_whitney_p([1, 2, 3, 4, 5], [6, 7, 8, 9, 10], greater=False) == pytest.approx(0.0061, abs=0.001)


def test_a_huge_label_set_is_trimmed_to_what_identifies_the_series() -> None:
    from datetime import UTC, datetime

    from analysis.findings import Series, find_changes
    from analysis.queries import saturation_queries

    query = next(q for q in saturation_queries("food") if q.metric == "cpu_usage")
    labels = {f"label_{i}": "v" * 200 for i in range(500)} | {"namespace": "food", "pod": "search-894587957d-x7k2p"}
    start = 1_700_000_000.0
    series = Series(labels, [start + 15 * i for i in range(200)], [0.1] * 180 + [2.0] * 20)
    onset = datetime.fromtimestamp(start + 15 * 185, tz=UTC)
    [finding] = find_changes(query, [series], onset=onset, pod_owners={})
    assert finding.labels == {"namespace": "food", "pod": "search-894587957d-x7k2p"}
    assert finding.workload == "search" and len(finding.model_dump_json()) < 2000
