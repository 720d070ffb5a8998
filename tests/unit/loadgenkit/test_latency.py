"""loadgenkit.latency: answer-time buckets and their percentiles."""

from __future__ import annotations

import math
import random

from loadgenkit.latency import BUCKETS, GROWTH, bucket_of, percentiles, upper_us


def test_a_time_lands_in_the_bucket_whose_edges_hold_it() -> None:
    for us in (1.5, 10, 999, 12_345, 2_000_000):
        b = bucket_of(us / 1e6)
        assert upper_us(b - 1) <= us * (1 + 1e-9) and us <= upper_us(b) * (1 + 1e-9)
    assert bucket_of(0.0) == 0 and bucket_of(1e6) == BUCKETS - 1  # a day: the last bucket


def test_percentiles_are_within_one_bucket_of_the_exact_ones() -> None:
    rng = random.Random(4)
    samples = sorted(rng.lognormvariate(-6, 1.2) for _ in range(20_000))  # ~2.5 ms median
    counts = [0] * BUCKETS
    for s in samples:
        counts[bucket_of(s)] += 1
    got = percentiles(counts, (50, 99, 99.9, 100))
    for p, ms in got.items():
        exact = samples[max(1, math.ceil(len(samples) * p / 100)) - 1] * 1000
        assert exact <= ms * 1.0001 and ms <= exact * GROWTH * 1.0001, (p, exact, ms)
    assert percentiles([0] * BUCKETS, (50,)) == {50: 0.0}
