"""End to end: emitters -> logd (a real process) -> files on disk."""

from __future__ import annotations

import json
import os
import random
import re
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
    logctl,
    read_all_lines,
    run_loadgen,
)
from testkit.wire import frame, random_payloads, send_in_random_chunks


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


def test_frames_are_written_byte_exact(start_logd, out_dir: Path) -> None:
    rng = random.Random(1)
    payloads = random_payloads(rng, 3000)
    logd = start_logd(emitter_file_config(out_dir))
    send_in_random_chunks(logd.port("emitters"),
                          b"".join(frame(p, rng.randrange(8)) for p in payloads), rng)
    assert logd.stop() == 0
    assert (out_dir / "emitters.log").read_bytes() == b"".join(p + b"\n" for p in payloads)
    m = logd.metrics("files")
    assert m["Logs"] == len(payloads) and m["Dropped"] == 0


def test_lines_are_written_byte_exact(start_logd, out_dir: Path) -> None:
    rng = random.Random(2)
    payloads = [p for p in random_payloads(rng, 3000) if p]
    logd = start_logd(emitter_file_config(out_dir, framing="lines"))
    send_in_random_chunks(logd.port("emitters"), b"".join(p + b"\n" for p in payloads), rng)
    assert logd.stop() == 0
    assert (out_dir / "emitters.log").read_bytes() == b"".join(p + b"\n" for p in payloads)


def test_json_payloads_split_into_per_app_files(start_logd, out_dir: Path) -> None:
    logd = start_logd(emitter_file_config(out_dir, framing="lines"))
    lines = [b'{"app": "billing", "n": %d}' % i if i % 3 else b'{"app": "auth", "n": %d}' % i
             for i in range(300)]
    send_in_random_chunks(logd.port("emitters"), b"\n".join(lines) + b"\n", random.Random(3))
    assert logd.stop() == 0
    assert (out_dir / "billing.log").read_bytes().count(b"\n") == 200
    assert (out_dir / "auth.log").read_bytes().count(b"\n") == 100


def test_a_path_that_cannot_be_written_fails_only_its_records(start_logd,
                                                               out_dir: Path) -> None:
    (out_dir / "blocked").write_text("a file where logd wants a directory\n")
    logd = start_logd(emitter_file_config(out_dir, framing="lines", path="{app}/x.log"))
    lines = [b'{"app": "blocked", "n": %d}' % i if i % 2 else b'{"app": "fine", "n": %d}' % i
             for i in range(400)]
    with socket.create_connection(("127.0.0.1", logd.port("emitters"))) as s:
        for i in range(0, 400, 50):  # several batches: the refused path must not stall
            s.sendall(b"\n".join(lines[i:i + 50]) + b"\n")
    warned = logd.wait_for(lambda e: "cannot write to this path" in e.get("msg", ""))
    assert warned["path"].endswith("blocked/x.log") and "File exists" in warned["error"]
    (out_dir / "blocked").unlink()  # fixed: the path is tried again after a pause
    deadline = time.monotonic() + 30
    with socket.create_connection(("127.0.0.1", logd.port("emitters"))) as s:
        while not (out_dir / "blocked" / "x.log").exists():
            assert time.monotonic() < deadline, "the fixed path was never tried again"
            s.sendall(b'{"app": "blocked", "late": true}\n')
            time.sleep(0.2)  # the retry pause runs on logd's clock: nothing to await
    result = logctl("--socket", str(out_dir / "control.sock"), "outputs", "--json")
    failed = json.loads(result.stdout)["files"]["failed"]
    assert logd.stop() == 0
    assert (out_dir / "fine" / "x.log").read_bytes().count(b"\n") == 200
    assert b'"late": true' in (out_dir / "blocked" / "x.log").read_bytes()
    assert failed >= 200  # the 200 refused, and late ones sent before the retry


def test_time_rotation_follows_the_clock_across_restarts(start_logd, out_dir: Path) -> None:
    old = out_dir / "emitters.log"
    old.write_bytes(b"from yesterday\n")
    yesterday = time.time() - 86400
    os.utime(old, (yesterday, yesterday))
    logd = start_logd(emitter_file_config(out_dir, framing="lines",
                                  output_extra='rotate_interval = "1h"'))
    with socket.create_connection(("127.0.0.1", logd.port("emitters"))) as s:
        s.sendall(b"from today\n")
    assert logd.stop() == 0
    assert old.read_bytes() == b"from today\n"
    rotated = [p for p in out_dir.glob("emitters.log.*")]
    assert len(rotated) == 1 and rotated[0].read_bytes() == b"from yesterday\n"


def test_time_rotation_at_each_interval_boundary(start_logd, out_dir: Path) -> None:
    logd = start_logd(emitter_file_config(out_dir, framing="lines",
                                  output_extra='rotate_interval = "1s"'))
    sent = 0
    with socket.create_connection(("127.0.0.1", logd.port("emitters"))) as s:
        deadline = time.monotonic() + 20
        while len(list(out_dir.glob("emitters.log.*"))) < 2:
            assert time.monotonic() < deadline, "no rotation at the second boundaries"
            s.sendall(b"line %d\n" % sent)
            sent += 1
            time.sleep(0.05)  # records spread over several seconds: the clock is under test
    assert logd.stop() == 0
    files = sorted(out_dir.glob("emitters.log*"))
    lines = [line for f in files for line in f.read_bytes().splitlines()]
    assert sorted(lines) == sorted(b"line %d" % i for i in range(sent))


@pytest.mark.parametrize("framing", ["frames", "lines"])
def test_loadgen_records_arrive_exactly_once_across_rotations(
        start_logd, out_dir: Path, framing: str) -> None:
    count = 200_000
    logd = start_logd(emitter_file_config(out_dir, framing=framing,
                                  output_extra='rotate_bytes = "2MiB"\nkeep = 0'))
    summary = run_loadgen("--target", f"tcp://127.0.0.1:{logd.port('emitters')}",
                          "--rate", "0", "--count", str(count), "--size", "200",
                          "--framing", framing, "--connections", "4", "--workers", "2")
    assert summary["sent"] == count
    assert logd.stop() == 0
    lines = read_all_lines(out_dir, "emitters.log")
    rotated = [p for p in out_dir.iterdir() if re.search(r"\.log\.\d{8}-\d{6}", p.name)]
    assert len(rotated) >= 10, "expected many rotations at 2 MiB per file"
    assert len(lines) == count
    assert len(set(lines)) == count, "a record was written twice"
    assert all(len(line) == 200 for line in lines), "a record was cut or merged"


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
    import time
    end = time.monotonic() + timeout
    while not (path.exists() and path.stat().st_size >= n):
        assert logd.alive(), "logd exited"
        assert time.monotonic() < end, f"{path} stayed under {n} bytes"
        time.sleep(0.05)  # polling a file size: there is no event to await for it


def test_drop_newest_counts_every_drop(start_logd, out_dir: Path) -> None:
    """A batch bigger than the whole buffer cannot fit: it is dropped and counted."""
    logd = start_logd(emitter_file_config(
        out_dir, buffer='buffer = { max_bytes = "4KiB", when_full = "drop_newest" }'))
    payloads = [b"x" * 100] * 5000
    with socket.create_connection(("127.0.0.1", logd.port("emitters"))) as s:
        s.sendall(b"".join(frame(p) for p in payloads))
        s.shutdown(socket.SHUT_WR)
        s.recv(1)
    assert logd.stop() == 0
    m = logd.metrics("files")
    written = len(read_all_lines(out_dir, "emitters.log"))
    assert m["Dropped"] > 0
    assert m["Logs"] == len(payloads)
    assert written + m["Dropped"] == len(payloads)


def test_block_pauses_readers_and_loses_nothing(start_logd, out_dir: Path) -> None:
    logd = start_logd(emitter_file_config(out_dir, buffer='buffer = { max_bytes = "4KiB" }'))
    count = 50_000
    run_loadgen("--target", f"tcp://127.0.0.1:{logd.port('emitters')}", "--rate", "0",
                "--count", str(count), "--size", "100", "--connections", "2")
    assert logd.stop() == 0
    assert logd.listener_stats("emitters")["pauses"] > 0
    lines = read_all_lines(out_dir, "emitters.log")
    assert len(lines) == count and len(set(lines)) == count


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
    import time

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
