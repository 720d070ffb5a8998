"""End to end: files -> logd (a real process) -> a file output, across a kill -9. The rest
of the tail listener's tests run logd in-process: tests/component/test_tail.py."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from pathlib import Path

from filegenkit.writer import LogFileWriter, line_number
from testkit.configs import tail_file_config
from testkit.harness import LogdProcess


def arrived(out: Path) -> list[bytes]:
    path = out / "tailed.log"
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    lines.pop()  # after a kill -9, a torn last record (cut back at the next start)
    return lines


def wait_for_lines(out: Path, n: int, timeout: float = 90) -> None:
    """Poll the output file (logd writes it; there is no event to await)."""
    end = time.monotonic() + timeout
    while len(arrived(out)) < n:
        assert time.monotonic() < end, f"timed out waiting for {n} lines"
        time.sleep(0.05)


def test_kill_9_while_tailing_loses_nothing_and_repeats_a_bounded_few(
        tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    config = tail_file_config(out, [f"{src}/app.log"])
    w = LogFileWriter(str(src / "app.log"), size=100, rotation="rename", rotate_lines=40_000)
    done = threading.Event()

    def write_steadily() -> None:  # about 100,000 lines/s, with a rotation every 0.4 s
        while w.written < 300_000:
            w.write(1000)
            time.sleep(0.01)
        done.set()
    writer = threading.Thread(target=write_steadily, daemon=True)
    logd = LogdProcess(config, tmp_path).start()
    try:
        writer.start()
        wait_for_lines(out, 100_000)
        logd.stop(signal.SIGKILL)
        before_kill = len(arrived(out))
        logd = LogdProcess(config, tmp_path).start()
        assert done.wait(60)
        w.close()
        wait_for_lines(out, w.written)
        time.sleep(0.5)  # polls enough to read anything twice that would be
        assert logd.stop() == 0
    finally:
        if logd.alive():
            logd.stop(signal.SIGKILL)
    seen = Counter(line_number(x) for x in arrived(out))
    missing = [n for n in range(w.written) if n not in seen]
    duplicates = sum(c - 1 for c in seen.values())
    print(f"{w.written} written, {before_kill} in the output at the kill, {len(missing)} "
          f"missing, {duplicates} duplicates, {w.rotations} rotations")
    assert not missing, f"{len(missing)} lines lost, first {missing[:5]}"
    assert set(seen) == set(range(w.written))
    # Only what was read and not yet checkpointed (secured) at the kill is read again.
    assert duplicates <= before_kill
