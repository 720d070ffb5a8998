"""Hostile and broken emitters: each is counted and logged, nobody else notices."""

from __future__ import annotations

import contextlib
import json
import resource
import signal
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testkit.configs import emitter_file_config
from testkit.harness import LogdProcess, logctl, read_all_lines
from testkit.wire import frame


@pytest.fixture
def logd(tmp_path: Path) -> Iterator[LogdProcess]:
    out = tmp_path / "out"
    out.mkdir()
    p = LogdProcess(emitter_file_config(out, listener_extra="max_frame_bytes = \"1KiB\"\n"
                                "max_connections = 3000"), tmp_path).start()
    p.out = out  # type: ignore[attr-defined]
    yield p
    if p.alive():
        p.stop(signal.SIGKILL)


def connect(p: LogdProcess) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", p.port("emitters")))
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


def good_records(p: LogdProcess) -> list[bytes]:
    return [line for line in read_all_lines(p.out, "emitters.log")  # type: ignore[attr-defined]
            if line.startswith(b"good")]


def wait_for_good_records(p: LogdProcess, n: int, timeout: float = 30) -> None:
    """Poll the output file (flushed every 100 ms) until n good records are in it."""
    end = time.monotonic() + timeout
    while len(good_records(p)) < n:
        assert time.monotonic() < end, f"fewer than {n} records reached the file"
        time.sleep(0.05)


def send_good(s: socket.socket, start: int, n: int) -> None:
    s.sendall(b"".join(frame(b"good %d" % i) for i in range(start, start + n)))


def test_garbage_closes_only_that_connection(logd: LogdProcess) -> None:
    good = connect(logd)
    send_good(good, 0, 100)
    bad = connect(logd)
    bad.sendall(bytes(range(256)) * 64)
    assert closed_by_peer(bad)
    bad.close()
    send_good(good, 100, 100)
    good.close()
    assert logd.stop() == 0
    assert good_records(logd) == [b"good %d" % i for i in range(200)]
    errors = logd.listener_stats("emitters")["errors"]
    assert errors.get("oversized", 0) + errors.get("zero_length", 0) == 1
    assert logd.entries("closing connection")


def test_zero_length_frame_is_refused_with_its_offset(logd: LogdProcess) -> None:
    bad = connect(logd)
    bad.sendall(frame(b"good 0") + b"\x00\x00\x00\x00")
    assert closed_by_peer(bad)
    bad.close()
    assert logd.stop() == 0
    warning = logd.entries("closing connection")[0]
    assert warning["offset"] == len(frame(b"good 0"))
    assert good_records(logd) == [b"good 0"], "the frame before the bad one is kept"
    assert logd.listener_stats("emitters")["errors"] == {"zero_length": 1}


def test_oversized_frame_is_refused_from_its_header_alone(logd: LogdProcess) -> None:
    bad = connect(logd)
    bad.sendall(struct.pack(">I", 5000))  # no body: the header is enough to refuse it
    assert closed_by_peer(bad)
    bad.close()
    assert logd.stop() == 0
    assert logd.listener_stats("emitters")["errors"] == {"oversized": 1}


def test_truncated_frame_at_eof_is_counted_and_earlier_frames_kept(logd: LogdProcess) -> None:
    s = connect(logd)
    s.sendall(frame(b"good 0") + frame(b"good 1") + struct.pack(">IB", 100, 6) + b"partial")
    s.shutdown(socket.SHUT_WR)
    assert closed_by_peer(s)
    s.close()
    assert logd.stop() == 0
    assert good_records(logd) == [b"good 0", b"good 1"]
    assert logd.listener_stats("emitters")["errors"] == {"truncated": 1}


def test_invalid_utf8_is_counted_and_kept_byte_exact(logd: LogdProcess) -> None:
    s = connect(logd)
    s.sendall(frame(b"good \xff\xfe bytes") + frame(b"good 1"))
    s.shutdown(socket.SHUT_WR)
    assert closed_by_peer(s)
    s.close()
    assert logd.stop() == 0
    assert good_records(logd) == [b"good \xff\xfe bytes", b"good 1"]
    assert logd.listener_stats("emitters")["errors"] == {"invalid_utf8": 1}


def test_silent_and_slow_connections_do_not_stall_others(logd: LogdProcess) -> None:
    silent = [connect(logd) for _ in range(50)]  # half-open from logd's point of view
    slow = connect(logd)
    fast = connect(logd)
    slow_frame = frame(b"good slow")
    for i, byte in enumerate(slow_frame):
        slow.sendall(bytes([byte]))
        send_good(fast, i * 100, 100)
        time.sleep(0.01)  # the point of the test: a byte every 10 ms
    slow.close()
    fast.close()
    started = time.monotonic()
    assert logd.stop() == 0
    assert time.monotonic() - started < 10, "silent connections held up the shutdown"
    records = good_records(logd)
    assert b"good slow" in records
    assert len(records) == 1 + 100 * len(slow_frame)
    for s in silent:
        s.close()


def test_max_connections_refuses_the_excess(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    p = LogdProcess(emitter_file_config(out, listener_extra="max_connections = 5"),
                    tmp_path).start()
    try:
        kept = [connect(p) for _ in range(5)]
        for s in kept:
            send_good(s, 0, 1)  # make sure each was accepted before opening more
        extra = [connect(p) for _ in range(3)]
        assert all(closed_by_peer(s) for s in extra)
        for s in kept + extra:
            s.close()
        assert p.stop() == 0
        assert p.listener_stats("emitters")["errors"] == {"refused": 3}
    finally:
        if p.alive():
            p.stop(signal.SIGKILL)


def test_two_thousand_connections_at_once(logd: LogdProcess) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4500:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    conns = [connect(logd) for _ in range(2000)]
    try:
        for i, s in enumerate(conns):
            s.sendall(frame(b"good %d" % i))
    finally:
        for s in conns:
            s.close()
    wait_for_good_records(logd, 2000)
    assert logd.stop() == 0
    assert sorted(good_records(logd)) == sorted(b"good %d" % i for i in range(2000))


def test_oversized_line_keeps_the_lines_before_it(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    p = LogdProcess(emitter_file_config(out, framing="lines",
                                listener_extra='max_frame_bytes = "1KiB"'), tmp_path).start()
    p.out = out  # type: ignore[attr-defined]
    try:
        s = connect(p)
        s.sendall(b"good 0\ngood 1\n" + b"x" * 5000 + b"\ngood never\n")
        assert closed_by_peer(s)
        s.close()
        assert p.stop() == 0
        assert good_records(p) == [b"good 0", b"good 1"]
        assert p.listener_stats("emitters")["errors"] == {"oversized": 1}
    finally:
        if p.alive():
            p.stop(signal.SIGKILL)


def test_incomplete_frames_over_the_budget_close_the_biggest_holders(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    p = LogdProcess(emitter_file_config(out, listener_extra='max_frame_bytes = "1MiB"\n'
                                'max_pending_bytes = "2MiB"'), tmp_path).start()
    p.out = out  # type: ignore[attr-defined]
    try:
        holders = []
        for size in (300_000, 900_000, 800_000, 700_000):  # 2.7 MB of unfinished frames
            s = connect(p)
            s.sendall(struct.pack(">IB", 1_000_000, 6) + b"x" * size)
            holders.append(s)
            time.sleep(0.1)  # in this order, so the budget is crossed by the last one
        # 2.7 MB - 0.9 MB (the biggest) = 1.8 MB fits: one connection closed, the biggest.
        assert closed_by_peer(holders[1])
        for s in (holders[0], holders[2], holders[3]):  # closed in the same step, if at all
            s.settimeout(0.2)
            assert not closed_by_peer(s)
        with connect(p) as s:
            s.sendall(frame(b"good after", 6))
        wait_for_good_records(p, 1)
        for s in holders:
            s.close()
        assert p.stop() == 0
        stats = p.listener_stats("emitters")
        assert stats["errors"]["over_pending_budget"] == 1
        assert stats["pending_bytes"] == 0
        warned = p.entries("closing connection: incomplete frames over the listener's "
                           "max_pending_bytes")
        assert warned and warned[0]["held"] == 900_005
    finally:
        if p.alive():
            p.stop(signal.SIGKILL)


def listeners(out: Path) -> dict[str, Any]:
    result = logctl("--socket", str(out / "control.sock"), "listeners", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


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


def test_a_full_buffer_stops_every_connection_not_one_read_each(tmp_path: Path) -> None:
    # An analyzer pool nobody is connected to: its 1 MiB buffer fills and stays full.
    out = tmp_path / "out"
    out.mkdir()
    config = stalled_pool_config(out, "1MiB")
    p = LogdProcess(config, tmp_path).start()
    closing: list[socket.socket] = []
    try:
        chunk = frame(b"x" * 1000, 6) * 256  # 256 KiB per send
        senders = [connect(p) for _ in range(40)]
        closing.extend(senders)
        deadline = time.monotonic() + 10
        while listeners(out)["emitters"]["connections"] < 40:  # all taken before data flows
            assert time.monotonic() < deadline, "logd did not take 40 connections"
            time.sleep(0.05)  # polling logd's counters: no event to await from outside
        unsent = [memoryview(chunk) for _ in senders]  # partial sends keep frames whole
        for s in senders:
            s.setblocking(False)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # every connection keeps offering data
            for i, s in enumerate(senders):
                with contextlib.suppress(BlockingIOError):
                    unsent[i] = unsent[i][s.send(unsent[i]):] or memoryview(chunk)
            time.sleep(0.01)  # offered steadily for 5 s: the bound is what is under test
        pool = listeners(out)["analyzers"]
        # Per-connection pausing let each of the 40 add a read (up to 10 MiB) past the bound.
        assert pool["peak_queued_bytes"] < 3 * 1024**2, pool["peak_queued_bytes"]
    finally:
        for s in closing:  # also when an assertion failed: no socket left to a later test
            s.close()
        p.stop(signal.SIGKILL)


def test_a_reload_that_routes_elsewhere_lets_paused_connections_read(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    base = stalled_pool_config(out, "64KiB") + f"""
[outputs.files]
type = "file"
path = "{out}/emitters.log"
flush_interval = "50ms"
"""
    p = LogdProcess(base + '\n[routes.all]\nto = ["analyzers"]\n', tmp_path).start()
    try:
        with connect(p) as s:
            s.sendall(frame(b"y" * 1000, 6) * 200)  # fills the pool's buffer: paused
            deadline = time.monotonic() + 10
            while not listeners(out)["emitters"]["pauses"]:
                assert time.monotonic() < deadline, "the listener never paused"
                time.sleep(0.05)  # polling logd's counters: no event to await from outside
            p.config_path.write_text(base + '\n[routes.all]\nto = ["files"]\n')
            p.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
            p.wait_for(lambda e: e.get("msg") == "reloaded")
            s.sendall(frame(b"good after reload", 6))
            deadline = time.monotonic() + 20
            while b"good after reload" not in ((out / "emitters.log").read_bytes()
                                               if (out / "emitters.log").exists() else b""):
                assert time.monotonic() < deadline, "the connection stayed paused"
                time.sleep(0.05)  # the file is flushed every 50 ms: polled
    finally:
        p.stop(signal.SIGKILL)
