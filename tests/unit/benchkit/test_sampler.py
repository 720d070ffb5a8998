"""benchkit.sampler: LF counting in growing files, waiting for them to settle, and CPU%/RSS
sampled every second from a real child process."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchkit.sampler import (
    GrowthCounter,
    ProcessMeter,
    count_lines,
    sample_every_second,
    wait_until_settled,
)


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


def test_records_are_counted_from_sizes_as_files_grow_and_appear(tmp_path: Path) -> None:
    counter = GrowthCounter(tmp_path / "out", record_bytes=4)
    assert counter.poll() == 0                       # no folder yet
    (tmp_path / "out").mkdir()
    a = tmp_path / "out" / "a.log"
    a.write_bytes(b"one\ntwo\nth")                 # a record cut short is not counted
    assert counter.poll() == 2
    with open(a, "ab") as f:
        f.write(b"r\nfou")
    (tmp_path / "out" / "b.log").write_bytes(b"xyz\n" * 1000)
    assert counter.poll() == 1003
    assert count_lines(tmp_path / "out") == 1003


def test_lines_are_counted_one_by_one_whatever_their_length(tmp_path: Path) -> None:
    assert count_lines(tmp_path / "nothing") == 0
    (tmp_path / "a.log").write_bytes(b"a\n" + b"long " * 2_000_000 + b"\nno LF yet")
    (tmp_path / "b.log").write_bytes(b"\n\n")
    assert count_lines(tmp_path) == 4


def test_settled_at_the_expected_count_or_after_a_quiet_spell(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"x\n" * 10)
    clock = FakeClock()
    assert wait_until_settled(GrowthCounter(tmp_path, 2), quiet=3, timeout=60, expected=10,
                              clock=clock, sleep=clock.sleep) == 10
    assert clock.t == 100.0                          # no waiting when the count is there
    assert wait_until_settled(GrowthCounter(tmp_path, 2), quiet=3, timeout=60, clock=clock,
                              sleep=clock.sleep) == 10
    assert 103.0 <= clock.t < 103.5


def test_a_count_that_keeps_growing_times_out(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"")
    clock = FakeClock()

    def sleep_and_grow(seconds: float) -> None:
        clock.sleep(seconds)
        with open(log, "ab") as f:
            f.write(b"x\n")

    with pytest.raises(TimeoutError, match="still growing after 5 s"):
        wait_until_settled(GrowthCounter(tmp_path, 2), quiet=3, timeout=5, clock=clock,
                           sleep=sleep_and_grow)


BUSY_CHILD = """
import sys
hold = bytearray(96 << 20)          # touched: resident
for i in range(0, len(hold), 4096):
    hold[i] = 1
out = open(sys.argv[1], "ab", buffering=0)
print("ready", flush=True)
n = 0
while True:                         # until killed
    n += 1
    if n % 20000 == 0:
        out.write(b"line\\n")
"""


def test_a_busy_child_shows_one_core_its_memory_and_its_lines(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with subprocess.Popen([sys.executable, "-c", BUSY_CHILD, str(out / "child.log")],
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == b"ready\n"
            lines = GrowthCounter(out, len(b"line\n"))
            t0 = time.monotonic()
            ticks = list(sample_every_second(ProcessMeter(child.pid), lines, 2))
            elapsed = time.monotonic() - t0
        finally:
            child.kill()
    print("ticks", ticks)
    assert [t.second for t in ticks] == [1, 2]
    assert 1.9 <= elapsed < 3.0
    for t in ticks:
        # One thread spinning: one core at most; on a busy shared machine much less.
        assert 15.0 <= t.cpu_percent <= 130.0
        assert t.rss_bytes >= 96 << 20
        assert t.records > 0
    assert sum(t.records for t in ticks) <= lines.total
