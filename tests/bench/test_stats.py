import math
import random

import numpy as np
import pytest

from bench.stats import percentile, summarize


def test_percentile_matches_numpy_linear_interpolation() -> None:
    rng = random.Random(3)
    for size in (1, 2, 7, 100, 1001):
        values = [rng.expovariate(1.0) for _ in range(size)]
        for q in (0, 1, 50, 95, 99, 99.9, 100):
            assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_ignores_input_order_and_handles_ties() -> None:
    assert percentile([5.0, 1.0, 3.0], 50) == 3.0
    assert percentile([2.0, 2.0, 2.0, 9.0], 50) == 2.0
    assert percentile([1.0, 2.0], 50) == 1.5


def test_percentile_of_nothing_is_nan_and_bad_q_is_refused() -> None:
    assert math.isnan(percentile([], 99))
    with pytest.raises(ValueError, match="within"):
        percentile([1.0], 101)
    with pytest.raises(ValueError, match="within"):
        percentile([1.0], -1)


def test_summarize_rates_and_milliseconds() -> None:
    stats = summarize([0.010, 0.020, 0.030, 0.040], texts=8, errors=1, duration_s=2.0)
    assert stats.requests == 4
    assert stats.requests_per_s == 2.0
    assert stats.texts_per_s == 4.0
    assert stats.errors == 1
    assert stats.p50_ms == pytest.approx(25.0)
    assert stats.p99_ms == pytest.approx(39.7)


def test_summarize_empty_window_has_zero_rate_and_nan_latency() -> None:
    stats = summarize([], texts=0, errors=3, duration_s=1.0)
    assert stats.requests_per_s == 0.0
    assert math.isnan(stats.p50_ms)
