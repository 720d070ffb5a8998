"""loadgenkit.tcp_sender.Sender on a fake clock: records go out when they are due, never
before; a server that stalls gets the records due meanwhile at once (no coordinated
omission); the connections of a run share out its records exactly."""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator

import pytest

from loadgenkit.config import Config
from loadgenkit.payloads import make_filler
from loadgenkit.schedule import MIN_TICK, make_schedule
from loadgenkit.shared import NFIELDS, ST_MAXLAG_US, ST_SENT, Shared
from loadgenkit.tcp_sender import Sender

from .support import FakeClock, config, shared_state

TEXT_HEAD = re.compile(rb"^t (\d+)-(\d+) (\d+)")


class Wire:
    """A socket that takes every write at once and notes when it came; `stalls` makes the
    n-th write (1-based) take that many seconds, as a server that stops reading would."""

    def __init__(self, clock: FakeClock, stalls: dict[int, float] | None = None) -> None:
        self.clock = clock
        self.stalls = stalls or {}
        self.writes: list[tuple[float, bytes]] = []

    def sendall(self, data: bytes | memoryview) -> None:
        self.writes.append((self.clock.t, bytes(data)))
        self.clock.t += self.stalls.get(len(self.writes), 0.0)


def frames(data: bytes) -> Iterator[bytes]:
    pos = 0
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        yield data[pos + 5:pos + 4 + length]
        pos += 4 + length
    assert pos == len(data), "a write ended inside a frame"


def sent(wire: Wire) -> list[tuple[float, int, int, int]]:
    """Every record written: (when, worker, connection, seq), in order."""
    out = []
    for when, data in wire.writes:
        for payload in frames(data):
            m = TEXT_HEAD.match(payload)
            assert m is not None, payload[:40]
            out.append((when, int(m[1]), int(m[2]), int(m[3])))
    return out


def run_sender(cfg: Config, shared: Shared, clock: FakeClock, worker: int = 0, conn: int = 0,
               stalls: dict[int, float] | None = None) -> Wire:
    wire = Wire(clock, stalls)
    sender = Sender(cfg, shared, worker, conn, wire, make_filler(cfg.seed, cfg.size))  # type: ignore[arg-type]
    sender.monotonic = clock.monotonic  # type: ignore[method-assign]
    sender.sleep = clock.sleep  # type: ignore[method-assign]
    sender.send_loop()
    return wire


def test_each_record_goes_out_when_it_is_due_never_before() -> None:
    cfg = config("--target", "tcp://127.0.0.1:9", "--rate", "1000", "--count", "2000")
    clock = FakeClock()
    shared = shared_state(cfg, clock)
    start = shared.start.value
    sched = make_schedule(cfg)
    assert sched is not None
    records = sent(run_sender(cfg, shared, clock))
    assert [seq for _, _, _, seq in records] == list(range(2000))
    for when, _, _, seq in records:
        due = start + sched.time_of(seq + 1)
        assert when >= due - 1e-5, f"record {seq} went out {due - when:.6f} s early"
        # Waiting costs at most one tick: records due within a tick go out in one write.
        assert when - due <= MIN_TICK + 1e-5, f"record {seq} went out {when - due:.6f} s late"
    assert clock.t - start == pytest.approx(sched.time_of(2000), abs=MIN_TICK)


def test_a_stalled_server_gets_what_fell_due_meanwhile_at_once() -> None:
    """The open loop: a write that takes 1 s does not lower the rate. The next write carries
    every record that fell due during the stall, the lag is reported, and the run ends when
    the schedule says, not 1 s later."""
    cfg = config("--target", "tcp://127.0.0.1:9", "--rate", "1000", "--count", "3000")
    clock = FakeClock()
    shared = shared_state(cfg, clock)
    start = shared.start.value
    wire = run_sender(cfg, shared, clock, stalls={50: 1.0})
    records = sent(wire)
    assert [seq for _, _, _, seq in records] == list(range(3000)), "nothing skipped"
    stalled_at = wire.writes[49][0]
    after = [seq for when, _, _, seq in records if when == wire.writes[50][0]]
    due_by_then = int((wire.writes[50][0] - start) * 1000 + 1e-7)
    assert after[-1] + 1 == due_by_then, "the catch-up write carries all that is due"
    assert len(after) >= 1000 - 2, "about 1 s of records in one write"
    lag = shared.status[ST_MAXLAG_US] / 1e6
    assert lag == pytest.approx(1.0, abs=2 * MIN_TICK), "the stall shows as lag"
    assert stalled_at - start < 0.1
    assert clock.t - start == pytest.approx(3.0, abs=2 * MIN_TICK), "the rate was kept"


@pytest.mark.parametrize(("workers", "connections", "count"),
                         [(1, 1, 1000), (2, 3, 10_001), (3, 2, 601)])
def test_the_connections_share_out_the_count_and_the_schedule_exactly(
        workers: int, connections: int, count: int) -> None:
    cfg = config("--target", "tcp://127.0.0.1:9", "--rate", "3000", "--count", str(count),
                 "--workers", str(workers), "--connections", str(connections))
    n = cfg.total_connections
    sched = make_schedule(cfg)
    assert sched is not None
    clock = FakeClock()
    shared = shared_state(cfg, clock)
    start = shared.start.value
    seen: list[int] = []
    for w in range(workers):
        for c in range(connections):
            clock.t = start - 0.05  # every connection starts with the run
            for when, worker, conn, seq in sent(run_sender(cfg, shared, clock, w, c)):
                assert (worker, conn) == (w, c)
                j = seq * n + w * connections + c  # the record's place in the whole run
                assert when >= start + sched.time_of(j + 1) - 1e-5
                assert when - (start + sched.time_of(j + 1)) <= MIN_TICK + 1e-5
                seen.append(j)
    assert sorted(seen) == list(range(count)), "every record of the run once, none extra"
    per_connection = [shared.status[k * NFIELDS + ST_SENT] for k in range(n)]
    assert sum(per_connection) == count and max(per_connection) - min(per_connection) <= 1


def test_a_burst_pattern_sends_at_the_burst_rate_in_its_windows() -> None:
    cfg = config("--target", "tcp://127.0.0.1:9", "--rate", "1000", "--pattern", "burst",
                 "--burst-rate", "5000", "--burst-seconds", "1", "--burst-every", "3",
                 "--duration", "7", "--unique")
    clock = FakeClock()
    shared = shared_state(cfg, clock)
    start = shared.start.value
    times = [when - start for when, _, _, _ in sent(run_sender(cfg, shared, clock))]

    def count(a: float, b: float) -> int:
        return sum(a <= t < b for t in times)

    assert len(times) == 1000 * 3 + 5000 + 1000 * 2 + 5000  # what is due by 7 s
    # Each window's records, give or take what a tick (1 ms, 5 records at 5000/s) moves
    # across its edges.
    assert count(0, 3) == pytest.approx(3000, abs=10)
    assert count(3, 4) == pytest.approx(5000, abs=10)
    assert count(4, 6) == pytest.approx(2000, abs=10)
    assert count(6, 7.001) == pytest.approx(5000, abs=10)
