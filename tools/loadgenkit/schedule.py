"""The open-loop schedule: how many records are due at a time since the start, when a record
is due, and how a total is split over connections. Pure arithmetic, no clock."""

from __future__ import annotations

from loadgenkit.config import Config

MIN_TICK = 0.001               # at high rates, gather ~1 ms of records into one write
MAX_TICK = 0.05                # bound on how long a sleeping sender ignores the stop flag


def share(total: int, parts: int, index: int) -> int:
    """Part `index` of `total` split into `parts` near-equal integers that sum to `total`.

    It is also how many of records 0..total-1 fall on `index` when record j goes to part
    j % parts, which is what lets every connection derive its share of the global schedule.
    """
    return (total + parts - 1 - index) // parts


class Schedule:
    """Records due over all connections `t` seconds after start, and its inverse.

    steady: `rate` records/s. burst: `rate`, except for `burst_seconds` starting at every
    multiple of `burst_every` (not at 0, so a run shows its base level first) when it is
    `burst_rate`.
    """

    def __init__(self, rate: float, burst_rate: float | None = None, burst_seconds: float = 0.0,
                 burst_every: float = 0.0) -> None:
        self.base = rate
        self.burst = burst_rate
        self.seconds = burst_seconds
        self.every = burst_every
        if burst_rate is not None:
            self.first = rate * burst_every
            self.in_burst = burst_rate * burst_seconds
            self.cycle = self.in_burst + rate * (burst_every - burst_seconds)

    def due(self, t: float) -> float:
        if self.burst is None:
            return self.base * t
        k = int(t // self.every)
        if k == 0:
            return self.base * t
        burst_time = (k - 1) * self.seconds + min(t - k * self.every, self.seconds)
        return self.base * t + (self.burst - self.base) * burst_time

    def time_of(self, x: float) -> float:
        """When due() reaches `x`: record j (0-based, global) is due at time_of(j + 1)."""
        if self.burst is None:
            return x / self.base
        if x <= self.first:
            return x / self.base
        k, r = divmod(x - self.first, self.cycle)
        t0 = (k + 1) * self.every
        if r <= self.in_burst:
            return t0 + r / self.burst
        return t0 + self.seconds + (r - self.in_burst) / self.base


def make_schedule(cfg: Config) -> Schedule | None:
    if cfg.rate <= 0:
        return None
    if cfg.pattern == "burst":
        return Schedule(cfg.rate, cfg.burst_rate, cfg.burst_seconds, cfg.burst_every)
    return Schedule(cfg.rate)
