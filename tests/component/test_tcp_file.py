"""Emitters -> logd -> files on disk, with logd in the test's event loop (testkit.inprocess).

Emitters and loadgen run in threads (`asyncio.to_thread`): the loop is logd's. What needs a
process of its own (a stop by SIGTERM, a ramfs in a mount namespace, a reader racing logd's
writes) is in tests/e2e/test_tcp_file.py.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import socket
import time
from pathlib import Path

import pytest

import logd.outputs.file as file_output
from testkit.configs import emitter_file_config
from testkit.harness import read_all_lines, run_loadgen
from testkit.inprocess import run_daemon
from testkit.wire import frame, random_payloads, send_in_random_chunks


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


async def test_frames_are_written_byte_exact(tmp_path: Path, out_dir: Path) -> None:
    rng = random.Random(1)
    payloads = random_payloads(rng, 3000)
    data = b"".join(frame(p, rng.randrange(8)) for p in payloads)
    async with run_daemon(emitter_file_config(out_dir), tmp_path) as logd:
        await asyncio.to_thread(send_in_random_chunks, logd.port("emitters"), data, rng)
        assert await logd.stop() == 0
    assert (out_dir / "emitters.log").read_bytes() == b"".join(p + b"\n" for p in payloads)
    m = logd.metrics("files")
    assert m["Logs"] == len(payloads) and m["Dropped"] == 0


async def test_lines_are_written_byte_exact(tmp_path: Path, out_dir: Path) -> None:
    rng = random.Random(2)
    payloads = [p for p in random_payloads(rng, 3000) if p]
    data = b"".join(p + b"\n" for p in payloads)
    async with run_daemon(emitter_file_config(out_dir, framing="lines"), tmp_path) as logd:
        await asyncio.to_thread(send_in_random_chunks, logd.port("emitters"), data, rng)
        assert await logd.stop() == 0
    assert (out_dir / "emitters.log").read_bytes() == b"".join(p + b"\n" for p in payloads)


async def test_json_payloads_split_into_per_app_files(tmp_path: Path, out_dir: Path) -> None:
    lines = [b'{"app": "billing", "n": %d}' % i if i % 3 else b'{"app": "auth", "n": %d}' % i
             for i in range(300)]
    async with run_daemon(emitter_file_config(out_dir, framing="lines"), tmp_path) as logd:
        await asyncio.to_thread(send_in_random_chunks, logd.port("emitters"),
                                b"\n".join(lines) + b"\n", random.Random(3))
        assert await logd.stop() == 0
    assert (out_dir / "billing.log").read_bytes().count(b"\n") == 200
    assert (out_dir / "auth.log").read_bytes().count(b"\n") == 100


async def test_a_path_that_cannot_be_written_fails_only_its_records(
        tmp_path: Path, out_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The pause before a refused path is tried again: 5 s in logd, shorter here, where
    # what is under test is that it is tried again, not how long logd waits.
    monkeypatch.setattr(file_output, "UNWRITABLE_RETRY_S", 0.5)
    (out_dir / "blocked").write_text("a file where logd wants a directory\n")
    lines = [b'{"app": "blocked", "n": %d}' % i if i % 2 else b'{"app": "fine", "n": %d}' % i
             for i in range(400)]
    config = emitter_file_config(out_dir, framing="lines", path="{app}/x.log")
    async with run_daemon(config, tmp_path) as logd:
        port = logd.port("emitters")

        def first_batches() -> None:
            with socket.create_connection(("127.0.0.1", port)) as s:
                for i in range(0, 400, 50):  # several batches: the refused path must not stall
                    s.sendall(b"\n".join(lines[i:i + 50]) + b"\n")

        await asyncio.to_thread(first_batches)
        warned = await logd.wait_for(lambda e: "cannot write to this path" in e.get("msg", ""))
        assert warned["path"].endswith("blocked/x.log") and "File exists" in warned["error"]
        (out_dir / "blocked").unlink()  # fixed: the path is tried again after a pause
        deadline = time.monotonic() + 30
        s = await asyncio.to_thread(socket.create_connection, ("127.0.0.1", port))
        with s:
            while not (out_dir / "blocked" / "x.log").exists():
                assert time.monotonic() < deadline, "the fixed path was never tried again"
                await asyncio.to_thread(s.sendall, b'{"app": "blocked", "late": true}\n')
                await asyncio.sleep(0.2)  # the retry pause runs on logd's clock: polled
        failed = logd.stats()["outputs"]["files"]["failed"]
        assert await logd.stop() == 0
    assert (out_dir / "fine" / "x.log").read_bytes().count(b"\n") == 200
    assert b'"late": true' in (out_dir / "blocked" / "x.log").read_bytes()
    assert failed >= 200  # the 200 refused, and late ones sent before the retry


def send_lines(port: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(data)


async def test_time_rotation_follows_the_clock_across_restarts(tmp_path: Path,
                                                               out_dir: Path) -> None:
    old = out_dir / "emitters.log"
    old.write_bytes(b"from yesterday\n")
    yesterday = time.time() - 86400
    os.utime(old, (yesterday, yesterday))
    config = emitter_file_config(out_dir, framing="lines", output_extra='rotate_interval = "1h"')
    async with run_daemon(config, tmp_path) as logd:
        await asyncio.to_thread(send_lines, logd.port("emitters"), b"from today\n")
        assert await logd.stop() == 0
    assert old.read_bytes() == b"from today\n"
    rotated = [p for p in out_dir.glob("emitters.log.*")]
    assert len(rotated) == 1 and rotated[0].read_bytes() == b"from yesterday\n"


async def test_time_rotation_at_each_interval_boundary(tmp_path: Path, out_dir: Path) -> None:
    config = emitter_file_config(out_dir, framing="lines", output_extra='rotate_interval = "1s"')
    sent = 0
    async with run_daemon(config, tmp_path) as logd:
        s = await asyncio.to_thread(socket.create_connection,
                                    ("127.0.0.1", logd.port("emitters")))
        with s:
            deadline = time.monotonic() + 20
            while len(list(out_dir.glob("emitters.log.*"))) < 2:
                assert time.monotonic() < deadline, "no rotation at the second boundaries"
                await asyncio.to_thread(s.sendall, b"line %d\n" % sent)
                sent += 1
                # records spread over several seconds: the clock is under test
                await asyncio.sleep(0.05)
        assert await logd.stop() == 0
    files = sorted(out_dir.glob("emitters.log*"))
    lines = [line for f in files for line in f.read_bytes().splitlines()]
    assert sorted(lines) == sorted(b"line %d" % i for i in range(sent))


@pytest.mark.parametrize("framing", ["frames", "lines"])
async def test_loadgen_records_arrive_exactly_once_across_rotations(
        tmp_path: Path, out_dir: Path, framing: str) -> None:
    count = 200_000
    config = emitter_file_config(out_dir, framing=framing,
                                 output_extra='rotate_bytes = "2MiB"\nkeep = 0')
    async with run_daemon(config, tmp_path) as logd:
        summary = await asyncio.to_thread(
            run_loadgen, "--target", f"tcp://127.0.0.1:{logd.port('emitters')}",
            "--rate", "0", "--count", str(count), "--size", "200",
            "--framing", framing, "--connections", "4", "--workers", "2")
        assert summary["sent"] == count
        assert await logd.stop() == 0
    lines = read_all_lines(out_dir, "emitters.log")
    rotated = [p for p in out_dir.iterdir() if re.search(r"\.log\.\d{8}-\d{6}", p.name)]
    assert len(rotated) >= 10, "expected many rotations at 2 MiB per file"
    assert len(lines) == count
    assert len(set(lines)) == count, "a record was written twice"
    assert all(len(line) == 200 for line in lines), "a record was cut or merged"


async def test_drop_newest_counts_every_drop(tmp_path: Path, out_dir: Path) -> None:
    """A batch bigger than the whole buffer cannot fit: it is dropped and counted."""
    config = emitter_file_config(
        out_dir, buffer='buffer = { max_bytes = "4KiB", when_full = "drop_newest" }')
    payloads = [b"x" * 100] * 5000

    def send(port: int) -> None:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"".join(frame(p) for p in payloads))
            s.shutdown(socket.SHUT_WR)
            s.recv(1)

    async with run_daemon(config, tmp_path) as logd:
        await asyncio.to_thread(send, logd.port("emitters"))
        assert await logd.stop() == 0
    m = logd.metrics("files")
    written = len(read_all_lines(out_dir, "emitters.log"))
    assert m["Dropped"] > 0
    assert m["Logs"] == len(payloads)
    assert written + m["Dropped"] == len(payloads)


async def test_block_pauses_readers_and_loses_nothing(tmp_path: Path, out_dir: Path) -> None:
    config = emitter_file_config(out_dir, buffer='buffer = { max_bytes = "4KiB" }')
    count = 50_000
    async with run_daemon(config, tmp_path) as logd:
        await asyncio.to_thread(
            run_loadgen, "--target", f"tcp://127.0.0.1:{logd.port('emitters')}", "--rate",
            "0", "--count", str(count), "--size", "100", "--connections", "2")
        assert await logd.stop() == 0
    assert logd.listener_stats("emitters")["pauses"] > 0
    lines = read_all_lines(out_dir, "emitters.log")
    assert len(lines) == count and len(set(lines)) == count
