"""What is measured, the same way for every tool: records written, and the tool's CPU% and
RSS (psutil), once a second.

Records written are counted two ways. Each second: bytes appended to the output files,
divided by the record length (every record of a run has the same length, loadgen --size
plus LF), from the files' sizes alone. Reading the new bytes each second to count LFs
would read logd's output back from the disk (O_DIRECT: it is not in the page cache) while
rsyslog's comes from memory, and it did slow logd down: 10-13 million records in 16 s
against 16-18 million when only the sizes were read. When a tool has settled (after the
filter check and at the end): LFs counted in the whole files, which must agree with the
sizes."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import psutil

READ_CHUNK = 4 << 20


class RecordCounter(Protocol):
    folder: Path

    def poll(self) -> int:
        """Records written so far."""


class GrowthCounter:
    """Records in the files under a folder, from their sizes: complete records of
    `record_bytes` each (a record and its LF). Reads no data, so it costs the tool nothing."""

    def __init__(self, folder: Path, record_bytes: int) -> None:
        self.folder = folder
        self.record_bytes = record_bytes
        self.total = 0

    def bytes_now(self) -> int:
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return 0
        size = 0
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                size += (self.folder / name).stat().st_size
        return size

    def poll(self) -> int:
        """Complete records in the files now (the running total)."""
        self.total = self.bytes_now() // self.record_bytes
        return self.total


def count_lines(folder: Path) -> int:
    """LF bytes in every file under `folder`: the records written, counted one by one."""
    total = 0
    for path in sorted(folder.iterdir()) if folder.exists() else ():
        with open(path, "rb") as f:
            while chunk := f.read(READ_CHUNK):
                total += chunk.count(b"\n")
    return total


class ProcessMeter:
    """CPU% (user + system, all threads; 100 = one core busy) since the last reading, and RSS,
    of one process."""

    def __init__(self, pid: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.process = psutil.Process(pid)
        self.clock = clock
        self.last_cpu = self.cpu_seconds()
        self.last_at = clock()

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the process so far."""
        t = self.process.cpu_times()
        return t.user + t.system

    def read(self) -> tuple[float, int]:
        """(CPU% since the last read, RSS bytes now)."""
        cpu, now = self.cpu_seconds(), self.clock()
        elapsed = now - self.last_at
        percent = 100.0 * (cpu - self.last_cpu) / elapsed if elapsed > 0 else 0.0
        self.last_cpu, self.last_at = cpu, now
        return percent, self.process.memory_info().rss


@dataclass(frozen=True)
class Tick:
    second: int          # 1, 2, ...: the second that just ended
    records: int         # records written in it
    cpu_percent: float
    rss_bytes: int


def sample_every_second(meter: ProcessMeter, records: GrowthCounter, seconds: int,
                        clock: Callable[[], float] = time.monotonic,
                        sleep: Callable[[float], None] = time.sleep) -> Iterator[Tick]:
    """One Tick per second for `seconds` seconds from now, on a fixed grid so that a late
    wake-up shortens the next wait instead of shifting every later sample."""
    start = clock()
    meter.read()
    before = records.poll()
    for second in range(1, seconds + 1):
        left = start + second - clock()
        if left > 0:
            sleep(left)
        cpu, rss = meter.read()
        total = records.poll()
        yield Tick(second, total - before, cpu, rss)
        before = total


def wait_until_settled(records: RecordCounter, quiet: float, timeout: float,
                       expected: int | None = None,
                       clock: Callable[[], float] = time.monotonic,
                       sleep: Callable[[float], None] = time.sleep) -> int:
    """The record total once it has not grown for `quiet` seconds (longer than either
    tool's flush interval), or at once when it reaches `expected`; TimeoutError after
    `timeout`."""
    end = clock() + timeout
    total = records.poll()
    changed = clock()
    while total != expected:
        now = clock()
        if now - changed >= quiet:
            break
        if now >= end:
            raise TimeoutError(f"{records.folder}: still growing after {timeout:g} s "
                               f"({total:,} records)")
        sleep(0.1)
        newer = records.poll()
        if newer != total:
            total, changed = newer, clock()
    return total
