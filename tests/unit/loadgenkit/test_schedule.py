"""loadgenkit.schedule: records due over time (steady and burst), its inverse, and the exact
split of a total over workers x connections."""

from __future__ import annotations

import math

import pytest

from loadgenkit.schedule import Schedule, make_schedule, share

from .support import config


@pytest.mark.parametrize("parts", [1, 2, 3, 6, 7, 64])
@pytest.mark.parametrize("total", [0, 1, 5, 6, 100, 10_001])
def test_share_splits_a_total_exactly_and_evenly(total: int, parts: int) -> None:
    shares = [share(total, parts, i) for i in range(parts)]
    assert sum(shares) == total
    assert max(shares) - min(shares) <= 1
    # What part i gets is how many of records 0..total-1 fall on it when record j goes to
    # part j % parts: each connection can derive its share of the run by itself.
    assert shares == [len(range(i, total, parts)) for i in range(parts)]


def test_a_steady_schedule_is_rate_times_time() -> None:
    s = Schedule(2500.0)
    for t in (0.0, 0.001, 0.4, 1.0, 37.25):
        assert s.due(t) == pytest.approx(2500.0 * t)
    for x in (1, 2, 2500, 10_001):
        assert s.time_of(x) == pytest.approx(x / 2500.0)


def burst() -> Schedule:
    # 1000/s, but 5000/s for 1 s starting at 3 s, 6 s, 9 s ...
    return Schedule(1000.0, burst_rate=5000.0, burst_seconds=1.0, burst_every=3.0)


def test_a_burst_schedule_runs_at_the_base_rate_then_bursts_at_each_period() -> None:
    s = burst()

    def rate(a: float, b: float) -> float:
        return (s.due(b) - s.due(a)) / (b - a)

    assert rate(0.0, 3.0) == pytest.approx(1000.0)  # no burst at 0: the base level first
    for k in (1, 2, 5):
        start = 3.0 * k
        assert rate(start, start + 1.0) == pytest.approx(5000.0)
        assert rate(start + 1.0, start + 3.0) == pytest.approx(1000.0)
    # over whole periods: (5000 * 1 + 1000 * 2) / 3 records a second
    assert rate(3.0, 12.0) == pytest.approx(7000.0 / 3)


@pytest.mark.parametrize("schedule", [Schedule(750.0), burst()], ids=["steady", "burst"])
def test_time_of_is_the_inverse_of_due(schedule: Schedule) -> None:
    times = [i * 0.0137 for i in range(1500)]
    dues = [schedule.due(t) for t in times]
    assert dues == sorted(dues), "never fewer records due later"
    for t, x in zip(times[1:], dues[1:], strict=True):
        assert schedule.time_of(x) == pytest.approx(t, abs=1e-9)
    # record j is due at time_of(j + 1): exactly when due() reaches j + 1
    for j in range(0, 20_000, 97):
        assert math.floor(schedule.due(schedule.time_of(j + 1)) + 1e-7) == j + 1


def test_rate_zero_has_no_schedule_and_the_pattern_picks_one() -> None:
    assert make_schedule(config("--rate", "0", "--count", "10")) is None
    steady = make_schedule(config("--rate", "300"))
    assert steady is not None and steady.burst is None and steady.base == 300.0
    bursty = make_schedule(config("--rate", "300", "--pattern", "burst", "--burst-rate",
                                  "900", "--burst-seconds", "2", "--burst-every", "5"))
    assert bursty is not None
    assert (bursty.base, bursty.burst, bursty.seconds, bursty.every) == (300.0, 900.0, 2.0, 5.0)
    default = make_schedule(config("--rate", "300", "--pattern", "burst"))
    assert default is not None and default.burst == 3000.0  # 10 x --rate


@pytest.mark.parametrize(("workers", "connections"), [(1, 1), (2, 3), (3, 4)])
def test_what_is_due_splits_exactly_over_workers_and_connections(workers: int,
                                                                  connections: int) -> None:
    # How a sender computes its own part of what is due (tcp_sender, http_sender): record j
    # of the run belongs to connection j % n, so connection i has (D + n - 1 - i) // n of the
    # first D. At any time the parts add up to what the schedule has due, no more, no less.
    cfg = config("--rate", "1234.5", "--workers", str(workers), "--connections",
                 str(connections), "--count", "100000")
    n = cfg.total_connections
    s = make_schedule(cfg)
    assert s is not None
    for step in range(2000):
        t = step * 0.0173
        due = int(s.due(t) + 1e-7)
        parts = [(due + n - 1 - i) // n for i in range(n)]
        assert sum(parts) == due
        assert max(parts) - min(parts) <= 1
    # and a --count splits the same way: the parts of the limit add up to it
    assert sum(share(100_000, n, i) for i in range(n)) == 100_000
