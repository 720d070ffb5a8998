"""End to end: emitters -> logd (a real process) -> files on disk: what needs a process
of its own. The rest of emitters -> files runs logd in-process: tests/component."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.configs import emitter_file_config
from testkit.harness import (
    REPO,
    LogdProcess,
    env_for_testkit,
    read_all_lines,
    run_loadgen,
)
from testkit.wire import frame, random_payloads


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


@pytest.fixture
def start_logd(tmp_path: Path) -> Iterator:
    started: list[LogdProcess] = []

    def start(config: str) -> LogdProcess:
        p = LogdProcess(config, tmp_path).start()
        started.append(p)
        return p

    yield start
    for p in started:
        if p.alive():
            p.stop(signal.SIGKILL)


def test_direct_io_falls_back_on_a_filesystem_that_refuses_it(tmp_path: Path) -> None:
    """ramfs refuses O_DIRECT at open; logd warns once and writes buffered, byte-exact.

    The ramfs is mounted in a private mount namespace, so nothing outlives the test.
    """
    mnt = tmp_path / "ramfs"
    mnt.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    rng = random.Random(4)
    payloads = random_payloads(rng, 500)
    (tmp_path / "frames.bin").write_bytes(b"".join(frame(p) for p in payloads))
    (tmp_path / "expected.bin").write_bytes(b"".join(p + b"\n" for p in payloads))
    driver = f"""
import json, os, socket, subprocess, sys
from pathlib import Path
from testkit.harness import LogdProcess
subprocess.run(["mount", "-t", "ramfs", "ramfs", {str(mnt)!r}], check=True)
logd = LogdProcess({emitter_file_config(mnt)!r}, Path({str(work)!r})).start()
with socket.create_connection(("127.0.0.1", logd.port("emitters"))) as s:
    s.sendall(Path({str(tmp_path / "frames.bin")!r}).read_bytes())
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
code = logd.stop()
fs = subprocess.run(["stat", "-f", "-c", "%T", {str(mnt)!r}], capture_output=True, text=True)
written = Path({str(mnt)!r}, "emitters.log").read_bytes()
print(json.dumps({{
    "code": code, "fs": fs.stdout.strip(),
    "same": written == Path({str(tmp_path / "expected.bin")!r}).read_bytes(),
    "warnings": sum("filesystem refuses O_DIRECT" in line for line in logd.raw_stderr),
}}))
"""
    (tmp_path / "driver.py").write_text(driver)
    unshare = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        unshare.insert(1, "--map-root-user")
    proc = subprocess.run([*unshare, sys.executable, str(tmp_path / "driver.py")],
                          capture_output=True, timeout=90, cwd=REPO, env=env_for_testkit())
    assert proc.returncode == 0, proc.stderr.decode()
    result = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    assert result == {"code": 0, "fs": "ramfs", "same": True, "warnings": 1}


def test_sigterm_drains_everything_accepted(start_logd, out_dir: Path) -> None:
    """Stop logd while loadgen is still sending: every record logd took is in the file."""
    logd = start_logd(emitter_file_config(out_dir, buffer='buffer = { max_bytes = "256MiB" }'))
    port = logd.port("emitters")
    gen = subprocess.Popen([sys.executable, "tools/loadgen", "--target",
                            f"tcp://127.0.0.1:{port}", "--rate", "0", "--duration", "20",
                            "--size", "300", "--connections", "4"],
                           cwd=REPO,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Wait until records are flowing and a good part has reached the disk.
        _wait_for_file_bytes(out_dir / "emitters.log", 20 * 2**20, logd)
        assert logd.stop() == 0
    finally:
        gen.kill()
        gen.wait()
    accepted = logd.listener_stats("emitters")["records"]
    lines = read_all_lines(out_dir, "emitters.log")
    assert accepted > 0
    assert len(lines) == accepted
    assert logd.metrics("files")["Logs"] == accepted
    assert logd.entries("stopped")[-1]["unwritten_records"] == 0


def _wait_for_file_bytes(path: Path, n: int, logd: LogdProcess, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while not (path.exists() and path.stat().st_size >= n):
        assert logd.alive(), "logd exited"
        assert time.monotonic() < end, f"{path} stayed under {n} bytes"
        time.sleep(0.05)  # polling a file size: there is no event to await for it


def test_unterminated_last_line_is_kept_when_logd_stops(start_logd, out_dir: Path) -> None:
    """An emitter that is still connected at SIGTERM, its last line without LF: a record."""
    logd = start_logd(emitter_file_config(out_dir, framing="lines"))
    with socket.create_connection(("127.0.0.1", logd.port("emitters"))) as s:
        s.sendall(b"first\nsecond without newline")
        _wait_for_file_bytes(out_dir / "emitters.log", len(b"first\n"), logd)
        assert logd.stop() == 0
    assert (out_dir / "emitters.log").read_bytes() == b"first\nsecond without newline\n"


def test_a_reader_tailing_the_file_never_sees_padding_or_a_shrink(
        start_logd, out_dir: Path) -> None:
    """Flushes every 10 ms under load while a reader follows the file like `tail -F`."""
    import threading

    logd = start_logd(emitter_file_config(out_dir, output_extra='buffer_size = "64KiB"')
                      .replace('flush_interval = "100ms"', 'flush_interval = "10ms"'))
    path = out_dir / "emitters.log"
    problems: list[str] = []
    done = threading.Event()

    def follow() -> None:
        seen = 0
        while not done.is_set() or (path.exists() and path.stat().st_size > seen):
            if not path.exists():
                time.sleep(0.001)  # nothing to read yet; the file appears with the first flush
                continue
            size = path.stat().st_size
            if size < seen:
                problems.append(f"file shrank from {seen} to {size}")
                return
            with path.open("rb") as f:
                f.seek(seen)
                chunk = f.read(size - seen)
            nul = chunk.find(b"\0")
            if nul >= 0:
                problems.append(f"NUL byte at offset {seen + nul}")
                return
            seen += len(chunk)

    reader = threading.Thread(target=follow)
    reader.start()
    try:
        run_loadgen("--target", f"tcp://127.0.0.1:{logd.port('emitters')}", "--rate",
                    "50000", "--duration", "3", "--size", "300", "--connections", "2")
        assert logd.stop() == 0
    finally:
        done.set()
        reader.join(30)
    assert problems == []
    assert path.stat().st_size == 150_000 * 301
