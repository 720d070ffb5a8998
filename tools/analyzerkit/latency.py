"""End-to-end latency: which token carries a message's send time, and the samples kept."""

from __future__ import annotations

import array
import math
import random
import re
from typing import Any

MAX_SAMPLES = 2_000_000
MIN_TS_NS = 10**17             # smaller "ts" values are epoch seconds (loadgen json), not ns

# Text payloads carry "ts=<ns>", json ones '"ts": <ns>' (any spaces after the colon). A
# fractional part means epoch seconds, which loadgen writes when it is not stamping send times.
TS_TEXT = b"ts="
TS_JSON = b'"ts":'
TS_DIGITS = re.compile(rb" *(\d+)(?![\d.])")


class Latencies:
    """Latency samples in ns: all of them up to MAX_SAMPLES, then a uniform reservoir (so the
    percentiles of a long run still describe the whole run). The maximum is always exact."""

    def __init__(self, cap: int = MAX_SAMPLES) -> None:
        self.cap = cap
        self.samples = array.array("q")
        self.seen = 0
        self.max = -(1 << 63)
        self.rng = random.Random()

    def add_many(self, values: list[int]) -> None:
        if not values:
            return
        top = max(values)
        if top > self.max:
            self.max = top
        room = self.cap - len(self.samples)
        if room > 0:
            self.samples.extend(values[:room])
            self.seen += min(room, len(values))
            values = values[room:]
        randrange = self.rng.randrange
        samples = self.samples
        cap = self.cap
        seen = self.seen
        for v in values:
            seen += 1
            j = randrange(seen)
            if j < cap:
                samples[j] = v
        self.seen = seen

    def summary(self) -> dict[str, Any] | None:
        if not self.seen:
            return None
        ordered = sorted(self.samples)
        n = len(ordered)

        def pct(p: float) -> float:
            # nearest rank: the smallest sample with at least p of all samples at or below it
            return ordered[min(n - 1, max(0, math.ceil(p * n) - 1))] / 1e6

        return {
            "p50": round(pct(0.50), 3),
            "p99": round(pct(0.99), 3),
            "p999": round(pct(0.999), 3),
            "max": round(self.max / 1e6, 3),
            "samples": self.seen,
        }


def detect_timestamps(payload: bytes) -> tuple[bool, bytes]:
    """Whether the stream carries send times, judged by its first message, and which token
    marks them; deciding once keeps untimed streams free of any per-message search."""
    for needle in (TS_TEXT, TS_JSON):
        i = payload.find(needle)
        if i >= 0:
            m = TS_DIGITS.match(payload, i + len(needle))
            if m is not None and int(m.group(1)) >= MIN_TS_NS:
                return True, needle
    return False, TS_TEXT
