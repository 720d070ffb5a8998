"""Hostile and broken emitters: each is counted and logged, nobody else notices.

logd runs in the test's event loop (testkit.inprocess); the emitters are plain blocking
sockets in a thread (`in_thread`), so what they do is what a client program does.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from testkit.configs import emitter_file_config
from testkit.harness import read_all_lines
from testkit.inprocess import RunningDaemon, run_daemon
from testkit.wire import frame

T = TypeVar("T")


async def in_thread(fn: Callable[[], T]) -> T:
    """Run a blocking client in a thread: the daemon needs this loop to answer it."""
    return await asyncio.to_thread(fn)


@pytest.fixture
async def logd(tmp_path: Path, out: Path) -> AsyncIterator[RunningDaemon]:
    config = emitter_file_config(out, listener_extra="max_frame_bytes = \"1KiB\"\n"
                                 "max_connections = 3000")
    async with run_daemon(config, tmp_path) as d:
        yield d


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(10)
    return s


def closed_by_peer(s: socket.socket) -> bool:
    """True once logd has closed (or reset) this connection; waits for it."""
    try:
        while True:
            if s.recv(65536) == b"":
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def good_records(out: Path) -> list[bytes]:
    return [line for line in read_all_lines(out, "emitters.log") if line.startswith(b"good")]


async def wait_for_good_records(out: Path, n: int, timeout: float = 30) -> None:
    """Poll the output file (flushed every 100 ms) until n good records are in it."""
    end = time.monotonic() + timeout
    while len(good_records(out)) < n:
        assert time.monotonic() < end, f"fewer than {n} records reached the file"
        await asyncio.sleep(0.05)  # the file is flushed on logd's clock: polled


async def wait_until(cond: Callable[[], bool], what: str, timeout: float = 10) -> None:
    """Poll one of logd's counters until `cond` holds (there is no event to await for it)."""
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"timed out waiting until {what}"
        await asyncio.sleep(0.01)


def send_good(s: socket.socket, start: int, n: int) -> None:
    s.sendall(b"".join(frame(b"good %d" % i) for i in range(start, start + n)))


async def test_garbage_closes_only_that_connection(logd: RunningDaemon, out: Path) -> None:
    port = logd.port("emitters")

    def emitters() -> None:
        good = connect(port)
        send_good(good, 0, 100)
        bad = connect(port)
        bad.sendall(bytes(range(256)) * 64)
        assert closed_by_peer(bad)
        bad.close()
        send_good(good, 100, 100)
        good.close()

    await in_thread(emitters)
    assert await logd.stop() == 0
    assert good_records(out) == [b"good %d" % i for i in range(200)]
    errors = logd.listener_stats("emitters")["errors"]
    assert errors.get("oversized", 0) + errors.get("zero_length", 0) == 1
    assert logd.entries("closing connection")


async def test_zero_length_frame_is_refused_with_its_offset(logd: RunningDaemon,
                                                            out: Path) -> None:
    port = logd.port("emitters")

    def emitter() -> None:
        bad = connect(port)
        bad.sendall(frame(b"good 0") + b"\x00\x00\x00\x00")
        assert closed_by_peer(bad)
        bad.close()

    await in_thread(emitter)
    assert await logd.stop() == 0
    warning = logd.entries("closing connection")[0]
    assert warning["offset"] == len(frame(b"good 0"))
    assert good_records(out) == [b"good 0"], "the frame before the bad one is kept"
    assert logd.listener_stats("emitters")["errors"] == {"zero_length": 1}


async def test_oversized_frame_is_refused_from_its_header_alone(logd: RunningDaemon) -> None:
    port = logd.port("emitters")

    def emitter() -> None:
        bad = connect(port)
        bad.sendall(struct.pack(">I", 5000))  # no body: the header is enough to refuse it
        assert closed_by_peer(bad)
        bad.close()

    await in_thread(emitter)
    assert await logd.stop() == 0
    assert logd.listener_stats("emitters")["errors"] == {"oversized": 1}


async def test_truncated_frame_at_eof_is_counted_and_earlier_frames_kept(
        logd: RunningDaemon, out: Path) -> None:
    port = logd.port("emitters")

    def emitter() -> None:
        s = connect(port)
        s.sendall(frame(b"good 0") + frame(b"good 1") + struct.pack(">IB", 100, 6)
                  + b"partial")
        s.shutdown(socket.SHUT_WR)
        assert closed_by_peer(s)
        s.close()

    await in_thread(emitter)
    assert await logd.stop() == 0
    assert good_records(out) == [b"good 0", b"good 1"]
    assert logd.listener_stats("emitters")["errors"] == {"truncated": 1}


async def test_invalid_utf8_is_counted_and_kept_byte_exact(logd: RunningDaemon,
                                                           out: Path) -> None:
    port = logd.port("emitters")

    def emitter() -> None:
        s = connect(port)
        s.sendall(frame(b"good \xff\xfe bytes") + frame(b"good 1"))
        s.shutdown(socket.SHUT_WR)
        assert closed_by_peer(s)
        s.close()

    await in_thread(emitter)
    assert await logd.stop() == 0
    assert good_records(out) == [b"good \xff\xfe bytes", b"good 1"]
    assert logd.listener_stats("emitters")["errors"] == {"invalid_utf8": 1}


async def test_silent_and_slow_connections_do_not_stall_others(logd: RunningDaemon,
                                                               out: Path) -> None:
    port = logd.port("emitters")
    slow_frame = frame(b"good slow")

    def emitters() -> list[socket.socket]:
        silent = [connect(port) for _ in range(50)]  # half-open from logd's point of view
        slow = connect(port)
        fast = connect(port)
        for i, byte in enumerate(slow_frame):
            slow.sendall(bytes([byte]))
            send_good(fast, i * 100, 100)
            time.sleep(0.01)  # the point of the test: a byte every 10 ms
        slow.close()
        fast.close()
        return silent

    silent = await in_thread(emitters)
    try:
        started = time.monotonic()
        assert await logd.stop() == 0
        assert time.monotonic() - started < 10, "silent connections held up the shutdown"
    finally:
        for s in silent:
            s.close()
    records = good_records(out)
    assert b"good slow" in records
    assert len(records) == 1 + 100 * len(slow_frame)


async def test_max_connections_refuses_the_excess(tmp_path: Path, out: Path) -> None:
    config = emitter_file_config(out, listener_extra="max_connections = 5")
    async with run_daemon(config, tmp_path) as d:
        port = d.port("emitters")

        def emitters() -> None:
            kept = [connect(port) for _ in range(5)]
            for s in kept:
                send_good(s, 0, 1)  # make sure each was accepted before opening more
            extra = [connect(port) for _ in range(3)]
            assert all(closed_by_peer(s) for s in extra)
            for s in kept + extra:
                s.close()

        await in_thread(emitters)
        assert await d.stop() == 0
        assert d.listener_stats("emitters")["errors"] == {"refused": 3}


async def test_two_thousand_connections_at_once(logd: RunningDaemon, out: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4500:  # both ends of 2000 connections live in this process
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    port = logd.port("emitters")

    def emitters() -> None:
        conns = [connect(port) for _ in range(2000)]
        try:
            for i, s in enumerate(conns):
                s.sendall(frame(b"good %d" % i))
        finally:
            for s in conns:
                s.close()

    await in_thread(emitters)
    await wait_for_good_records(out, 2000)
    assert await logd.stop() == 0
    assert sorted(good_records(out)) == sorted(b"good %d" % i for i in range(2000))


async def test_oversized_line_keeps_the_lines_before_it(tmp_path: Path, out: Path) -> None:
    config = emitter_file_config(out, framing="lines",
                                 listener_extra='max_frame_bytes = "1KiB"')
    async with run_daemon(config, tmp_path) as d:
        port = d.port("emitters")

        def emitter() -> None:
            s = connect(port)
            s.sendall(b"good 0\ngood 1\n" + b"x" * 5000 + b"\ngood never\n")
            assert closed_by_peer(s)
            s.close()

        await in_thread(emitter)
        assert await d.stop() == 0
        assert good_records(out) == [b"good 0", b"good 1"]
        assert d.listener_stats("emitters")["errors"] == {"oversized": 1}


async def test_incomplete_frames_over_the_budget_close_the_biggest_holders(
        tmp_path: Path, out: Path) -> None:
    config = emitter_file_config(out, listener_extra='max_frame_bytes = "1MiB"\n'
                                 'max_pending_bytes = "2MiB"')
    async with run_daemon(config, tmp_path) as d:
        port = d.port("emitters")
        holders: list[socket.socket] = []
        held = 0
        try:
            for size in (300_000, 900_000, 800_000, 700_000):  # 2.7 MB of unfinished frames
                s = await in_thread(lambda: connect(port))
                holders.append(s)
                await in_thread(lambda s=s, size=size: s.sendall(
                    struct.pack(">IB", 1_000_000, 6) + b"x" * size))
                held += 5 + size
                if held < 2 * 1024**2:
                    # Read in this order, so the budget is crossed by the last one.
                    await wait_until(lambda held=held: listeners(d)["emitters"]
                                     ["pending_bytes"] == held, "logd read the frames")

            def check() -> None:
                # 2.7 MB - 0.9 MB (the biggest) = 1.8 MB fits: one connection closed, the
                # biggest.
                assert closed_by_peer(holders[1])
                for s in (holders[0], holders[2], holders[3]):  # closed in the same step,
                    s.settimeout(0.2)                            # if at all
                    assert not closed_by_peer(s)
                with connect(port) as s:
                    s.sendall(frame(b"good after", 6))

            await in_thread(check)
            await wait_for_good_records(out, 1)
        finally:
            for s in holders:
                s.close()
        assert await d.stop() == 0
        stats = d.listener_stats("emitters")
        assert stats["errors"]["over_pending_budget"] == 1
        assert stats["pending_bytes"] == 0
        warned = d.entries("closing connection: incomplete frames over the listener's "
                           "max_pending_bytes")
        assert warned and warned[0]["held"] == 900_005


def stalled_pool_config(out: Path, max_bytes: str) -> str:
    """Emitters and an analyzer pool nobody connects to: its buffer fills and stays full."""
    return f"""
[daemon]
state_dir = "{out}/state"
control_socket = "{out}/control.sock"
shutdown_timeout = "1s"
stats_interval = "0s"

[listeners.emitters]
type = "tcp"
address = "127.0.0.1:0"

[listeners.analyzers]
type = "analyzer"
address = "127.0.0.1:0"
buffer = {{ max_bytes = "{max_bytes}", when_full = "block" }}
"""


def listeners(d: RunningDaemon) -> dict[str, Any]:
    """What `logctl listeners` shows."""
    return d.stats()["listeners"]


async def test_a_full_buffer_stops_every_connection_not_one_read_each(
        tmp_path: Path, out: Path) -> None:
    # An analyzer pool nobody is connected to: its 1 MiB buffer fills and stays full.
    async with run_daemon(stalled_pool_config(out, "1MiB"), tmp_path) as d:
        port = d.port("emitters")
        chunk = frame(b"x" * 1000, 6) * 256  # 256 KiB per send
        senders = await in_thread(lambda: [connect(port) for _ in range(40)])
        try:
            # all taken before data flows
            await wait_until(lambda: listeners(d)["emitters"]["connections"] >= 40,
                             "logd took 40 connections")

            def offer() -> None:
                unsent = [memoryview(chunk) for _ in senders]  # partial sends keep frames
                for s in senders:                              # whole
                    s.setblocking(False)
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:  # every connection keeps offering data
                    for i, s in enumerate(senders):
                        with contextlib.suppress(BlockingIOError):
                            unsent[i] = unsent[i][s.send(unsent[i]):] or memoryview(chunk)
                    time.sleep(0.01)  # offered steadily for 5 s: the bound is under test

            await in_thread(offer)
            pool = listeners(d)["analyzers"]
            # Per-connection pausing let each of the 40 add a read (up to 10 MiB) past the
            # bound.
            assert pool["peak_queued_bytes"] < 3 * 1024**2, pool["peak_queued_bytes"]
        finally:
            for s in senders:  # also when an assertion failed: no socket left to a later test
                s.close()


async def test_a_reload_that_routes_elsewhere_lets_paused_connections_read(
        tmp_path: Path, out: Path) -> None:
    base = stalled_pool_config(out, "64KiB") + f"""
[outputs.files]
type = "file"
path = "{out}/emitters.log"
flush_interval = "50ms"
"""
    async with run_daemon(base + '\n[routes.all]\nto = ["analyzers"]\n', tmp_path) as d:
        s = await in_thread(lambda: connect(d.port("emitters")))
        try:
            # fills the pool's buffer: paused
            await in_thread(lambda: s.sendall(frame(b"y" * 1000, 6) * 200))
            await wait_until(lambda: listeners(d)["emitters"]["pauses"] > 0,
                             "the listener paused")
            d.config_path.write_text(base + '\n[routes.all]\nto = ["files"]\n')
            result = await d.daemon.reload()  # what SIGHUP and `logctl reload` do
            assert result["applied"], result
            await in_thread(lambda: s.sendall(frame(b"good after reload", 6)))
            log = out / "emitters.log"
            deadline = time.monotonic() + 20
            while b"good after reload" not in (log.read_bytes() if log.exists() else b""):
                assert time.monotonic() < deadline, "the connection stayed paused"
                await asyncio.sleep(0.05)  # the file is flushed every 50 ms: polled
        finally:
            s.close()
