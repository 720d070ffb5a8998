"""The analyzer port with logd in the test's event loop: weighted shares, weight updates,
redelivery, bad analyzers, scale. Analyzers are threads (testkit.analyzer_client) and
emitters loadgen runs in a thread; logd's own tables and counters are read directly.
Shutdown and the logctl commands are in tests/e2e/test_analyzers.py."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import selectors
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from testkit.analyzer_client import TestAnalyzer
from testkit.harness import run_loadgen
from testkit.inprocess import RunningDaemon, run_daemon
from testkit.wire import frame

Start = Callable[..., Awaitable[RunningDaemon]]


def pool_config(out: Path, ack_timeout: str = "30s", max_unacked: int = 10000) -> str:
    return f"""
[daemon]
state_dir = "{out}/state"
control_socket = "{out}/control.sock"
stats_interval = "0s"
shutdown_timeout = "20s"

[listeners.emitters]
type = "tcp"
address = "127.0.0.1:0"

[listeners.analyzers]
type = "analyzer"
address = "127.0.0.1:0"
ack_timeout = "{ack_timeout}"
max_unacked = {max_unacked}
"""


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    async with contextlib.AsyncExitStack() as running:
        async def run(**kw: Any) -> RunningDaemon:
            return await running.enter_async_context(
                run_daemon(pool_config(tmp_path, **kw), tmp_path))

        yield run


async def analyzer(d: RunningDaemon, weight: float, **kw: Any) -> TestAnalyzer:
    """A test analyzer connected to logd's analyzer port (connecting blocks: in a thread)."""
    return await asyncio.to_thread(TestAnalyzer, d.port("analyzers"), weight, **kw)


async def close(*analyzers: TestAnalyzer, abort: bool = False) -> None:
    for a in analyzers:
        await asyncio.to_thread(a.close, abort)


def pool(d: RunningDaemon) -> Any:
    return d.daemon.listeners["analyzers"]


async def poll(cond: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Until `cond` holds: logd's tables and the analyzers' counts change with no event to
    await from here."""
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"timed out waiting until {what}"
        await asyncio.sleep(0.01)


async def analyzers_connected(d: RunningDaemon, n: int) -> None:
    await poll(lambda: sum(a["weight"] is not None for a in pool(d).analyzer_table()) >= n,
               f"{n} analyzers announced their weights")


async def send(d: RunningDaemon, count: int, rate: str = "0") -> None:
    summary = await asyncio.to_thread(
        run_loadgen, "--target", f"tcp://127.0.0.1:{d.port('emitters')}", "--rate", rate,
        "--count", str(count), "--size", "100")
    assert summary["sent"] == count


async def wait_total(ans: list[TestAnalyzer], n: int, timeout: float = 60) -> None:
    await poll(lambda: sum(a.count for a in ans) >= n,
               f"the analyzers got {n} (now {sum(a.count for a in ans)})", timeout)


async def test_shares_follow_weights_within_one_percent(start: Start) -> None:
    d = await start()
    weights = (0.4, 0.3, 0.2, 0.1)
    ans = [await analyzer(d, w, ack_every=20) for w in weights]
    try:
        await analyzers_connected(d, 4)
        await send(d, 100_000)
        await wait_total(ans, 100_000)
        shares = [a.count / 100_000 for a in ans]
        assert all(abs(s - w) <= 0.01 for s, w in zip(shares, weights, strict=True)), shares
        everything = [x for a in ans for x in a.payloads]
        assert len(set(everything)) == 100_000
    finally:
        await close(*ans)


async def test_a_weight_update_shifts_the_shares(start: Start) -> None:
    d = await start()
    ans = [await analyzer(d, w, ack_every=20) for w in (0.5, 0.5)]
    try:
        await analyzers_connected(d, 2)
        await send(d, 20_000)
        await wait_total(ans, 20_000)
        before = [a.count for a in ans]
        await asyncio.to_thread(ans[0].set_weight, 0.25)  # now 0.25 : 0.5
        await d.wait_for(lambda e: e.get("msg") == "analyzer weight"
                         and e.get("weight") == 0.25)
        await send(d, 60_000)
        await wait_total(ans, 80_000)
        after = [a.count - b for a, b in zip(ans, before, strict=True)]
        assert abs(after[0] / 60_000 - 1 / 3) <= 0.01, after
    finally:
        await close(*ans)


async def test_killed_analyzer_loses_nothing(start: Start) -> None:
    """One analyzer never ACKs and is killed mid-stream: the others get all it held."""
    d = await start()
    survivors = [await analyzer(d, 0.5, ack_every=20), await analyzer(d, 0.3, ack_every=20)]
    victim = await analyzer(d, 0.2, ack=False)
    try:
        await analyzers_connected(d, 3)
        await send(d, 30_000, rate="60000")
        await asyncio.to_thread(victim.wait_count, 1000)
        await close(victim, abort=True)
        await send(d, 30_000, rate="60000")
        await wait_total(survivors, 60_000)
        received = [x for a in survivors for x in a.payloads]
        assert len(set(received)) == 60_000, "every record reached a live analyzer"
        assert len(received) == 60_000
        # A test analyzer ACKs its last messages on a 50 ms read timeout: let that arrive.
        await poll(lambda: d.stats()["listeners"]["analyzers"]["acked"] >= 60_000,
                   "the survivors' last ACKs")
        stats = d.stats()["listeners"]["analyzers"]
        assert stats["redelivered"] == victim.count > 0
        assert stats["acked"] == 60_000
    finally:
        await close(*survivors)


async def test_ack_timeout_redelivers(start: Start) -> None:
    d = await start(ack_timeout="1s")
    good = await analyzer(d, 0.5, ack_every=10)
    stuck = await analyzer(d, 0.5, ack=False)
    try:
        await analyzers_connected(d, 2)
        await send(d, 2_000, rate="20000")
        await wait_total([good], 2_000, timeout=30)
        assert stuck.count > 0
        assert len(set(good.payloads)) == 2_000
        await d.wait_for(lambda e: "did not ACK in time" in e.get("msg", ""))
        await asyncio.to_thread(stuck.wait_closed)
    finally:
        await close(good, stuck)


@pytest.mark.parametrize(("first", "then", "reason"), [
    (struct.pack(">d", 1.0), b"\x07\x00\x00\x00\x01", "unknown_type"),
    (struct.pack(">d", 1.0), struct.pack(">Bf", 1, float("nan")), "bad_weight"),
    (struct.pack(">d", 1.0), struct.pack(">Bf", 1, -2.0), "bad_weight"),
    (struct.pack(">d", float("inf")), b"", "bad_weight"),
    (struct.pack(">d", -1.0), b"", "bad_weight"),
    (struct.pack(">d", 1.0), b"\xff" * 64, "unknown_type"),
    (struct.pack(">d", 1.0), struct.pack(">BI", 0, 99), "ack_beyond_sent"),
])
async def test_bad_control_messages_close_only_that_analyzer(start: Start, first: bytes,
                                                             then: bytes, reason: str) -> None:
    d = await start()
    port = d.port("analyzers")
    good = await analyzer(d, 1.0, ack_every=10)

    def bad_analyzer() -> None:
        bad = socket.create_connection(("127.0.0.1", port))
        bad.settimeout(10)
        bad.sendall(first + then)
        with contextlib.suppress(ConnectionResetError):
            assert bad.recv(1) == b""
        bad.close()

    try:
        await analyzers_connected(d, 1)
        await asyncio.to_thread(bad_analyzer)
        await send(d, 1_000)
        await wait_total([good], 1_000)
        assert d.stats()["listeners"]["analyzers"]["errors"] == {reason: 1}
    finally:
        await close(good)


async def test_records_wait_for_the_first_analyzer(start: Start) -> None:
    d = await start()
    await send(d, 5_000)
    late = await analyzer(d, 1.0, ack_every=50)
    try:
        await wait_total([late], 5_000)
        assert len(set(late.payloads)) == 5_000
    finally:
        await close(late)


async def test_one_thousand_analyzers_at_once(start: Start) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 3000:  # both ends of 1000 connections live in this process
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    d = await start()
    port, emitters = d.port("analyzers"), d.port("emitters")
    count = 5_000

    def connect_all(sel: selectors.DefaultSelector) -> list[socket.socket]:
        conns = []
        for _ in range(1000):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(struct.pack(">d", 1.0))
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, {"buf": b"", "n": 0})
            conns.append(s)
        return conns

    def receive(sel: selectors.DefaultSelector) -> int:
        with socket.create_connection(("127.0.0.1", emitters)) as e:
            e.sendall(b"".join(frame(b"rec %d" % i) for i in range(count)))
        seen: set[bytes] = set()
        end = time.monotonic() + 60
        while len(seen) < count:
            assert time.monotonic() < end, f"{len(seen)}/{count} delivered"
            for key, _ in sel.select(0.1):
                state = key.data
                data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                state["buf"] += data
                buf, off = state["buf"], 0
                while len(buf) - off >= 4:
                    length = int.from_bytes(buf[off:off + 4], "big")
                    if len(buf) - off - 4 < length:
                        break
                    seen.add(buf[off + 5:off + 4 + length])
                    state["n"] += 1
                    off += 4 + length
                state["buf"] = buf[off:]
                key.fileobj.sendall(struct.pack(">BI", 0, state["n"]))  # type: ignore[union-attr]
        return sum(1 for key in sel.get_map().values() if key.data["n"])

    sel = selectors.DefaultSelector()
    conns = await asyncio.to_thread(connect_all, sel)
    try:
        await analyzers_connected(d, 1000)
        busy = await asyncio.to_thread(receive, sel)
        assert busy == 1000, "every analyzer got its share"
    finally:
        for s in conns:
            sel.unregister(s)
            s.close()
        sel.close()
