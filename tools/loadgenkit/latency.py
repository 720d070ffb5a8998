"""Answer times of HTTP POSTs, kept as a histogram with log-spaced buckets (2% wide, 1 us to
100 s), one per connection in shared memory: percentiles without keeping every sample.

A POST's time runs from when it was due by the schedule (not when it was sent), to its
answer: a server that makes senders fall behind is not excused by it (no coordinated
omission). At `--rate 0` it runs from the send.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

GROWTH = 1.02
BUCKETS = int(math.log(100e6) / math.log(GROWTH)) + 2  # up to 100 s, in microseconds
_LOG_GROWTH = math.log(GROWTH)


def bucket_of(seconds: float) -> int:
    us = seconds * 1e6
    if us < 1.0:
        return 0
    return min(BUCKETS - 1, int(math.log(us) / _LOG_GROWTH) + 1)


def upper_us(bucket: int) -> float:
    """The largest time (us) a bucket holds."""
    return GROWTH ** bucket


def percentiles(counts: Sequence[int], wanted: Sequence[float]) -> dict[float, float]:
    """The given percentiles (0-100) in milliseconds, each the upper edge of its bucket."""
    total = sum(counts)
    out: dict[float, float] = {}
    if not total:
        return {p: 0.0 for p in wanted}
    for p in wanted:
        rank = max(1, math.ceil(total * p / 100))
        seen = 0
        for b, n in enumerate(counts):
            seen += n
            if seen >= rank:
                out[p] = upper_us(b) / 1000
                break
    return out
