"""What is measured, the same way for every tool: records written (LF bytes appended to the
files of an output folder), and the tool's CPU% and RSS (psutil), once a second."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

READ_CHUNK = 4 << 20


class LineCounter:
    """Counts LF bytes appended to the files under a folder since it was made. A record is
    written when its LF is in a file: both tools write each record and then an LF."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.offsets: dict[Path, int] = {}
        self.total = 0

    def poll(self) -> int:
        """Reads what was appended since the last poll; returns the running total."""
        try:
            names = sorted(os.listdir(self.folder))
        except FileNotFoundError:
            return self.total
        for name in names:
            path = self.folder / name
            offset = self.offsets.get(path, 0)
            try:
                with open(path, "rb") as f:
                    f.seek(offset)
                    while chunk := f.read(READ_CHUNK):
                        self.total += chunk.count(b"\n")
                        offset += len(chunk)
            except (FileNotFoundError, IsADirectoryError):
                continue
            self.offsets[path] = offset
        return self.total


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


def sample_every_second(meter: ProcessMeter, lines: LineCounter, seconds: int,
                        clock: Callable[[], float] = time.monotonic,
                        sleep: Callable[[float], None] = time.sleep) -> Iterator[Tick]:
    """One Tick per second for `seconds` seconds from now, on a fixed grid so that a late
    wake-up shortens the next wait instead of shifting every later sample."""
    start = clock()
    meter.read()
    before = lines.poll()
    for second in range(1, seconds + 1):
        left = start + second - clock()
        if left > 0:
            sleep(left)
        cpu, rss = meter.read()
        total = lines.poll()
        yield Tick(second, total - before, cpu, rss)
        before = total


def wait_until_settled(lines: LineCounter, quiet: float, timeout: float,
                       expected: int | None = None,
                       clock: Callable[[], float] = time.monotonic,
                       sleep: Callable[[float], None] = time.sleep) -> int:
    """The line total once it has not grown for `quiet` seconds (longer than either tool's
    flush interval), or at once when it reaches `expected`; TimeoutError after `timeout`."""
    end = clock() + timeout
    total = lines.poll()
    changed = clock()
    while total != expected:
        now = clock()
        if now - changed >= quiet:
            break
        if now >= end:
            raise TimeoutError(f"{lines.folder}: still growing after {timeout:g} s "
                               f"({total:,} lines)")
        sleep(0.1)
        newer = lines.poll()
        if newer != total:
            total, changed = newer, clock()
    return total
