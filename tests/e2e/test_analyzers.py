"""The analyzer port: weighted shares, weight updates, redelivery, bad analyzers, scale."""

from __future__ import annotations

import contextlib
import json
import resource
import selectors
import signal
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.analyzer_client import TestAnalyzer
from testkit.harness import LogdProcess, logctl, run_loadgen
from testkit.wire import frame


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
def start(tmp_path: Path) -> Iterator:
    started: list[LogdProcess] = []

    def run(**kw: object) -> LogdProcess:
        p = LogdProcess(pool_config(tmp_path, **kw), tmp_path).start()  # type: ignore[arg-type]
        started.append(p)
        return p

    yield run
    for p in started:
        if p.alive():
            p.stop(signal.SIGKILL)


def analyzers_connected(p: LogdProcess, n: int, timeout: float = 30) -> None:
    sock = str(p.workdir / "control.sock")
    end = time.monotonic() + timeout
    while True:
        result = logctl("--socket", sock, "analyzers", "--json")
        table = json.loads(result.stdout)["analyzers"] if result.returncode == 0 else []
        if sum(a["weight"] is not None for a in table) >= n:
            return
        assert time.monotonic() < end, f"{len(table)}/{n} analyzers connected"
        time.sleep(0.05)  # polling logd's table: there is no event to await from outside


def send(p: LogdProcess, count: int, rate: str = "0") -> None:
    summary = run_loadgen("--target", f"tcp://127.0.0.1:{p.port('emitters')}", "--rate", rate,
                          "--count", str(count), "--size", "100")
    assert summary["sent"] == count


def wait_total(ans: list[TestAnalyzer], n: int, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while sum(a.count for a in ans) < n:
        assert time.monotonic() < end, f"analyzers got {sum(a.count for a in ans)}/{n}"
        time.sleep(0.01)  # counts grow in the analyzers' threads: polled, bounded


def test_shares_follow_weights_within_one_percent(start) -> None:
    p = start()
    weights = (0.4, 0.3, 0.2, 0.1)
    ans = [TestAnalyzer(p.port("analyzers"), w, ack_every=20) for w in weights]
    try:
        analyzers_connected(p, 4)
        send(p, 100_000)
        wait_total(ans, 100_000)
        shares = [a.count / 100_000 for a in ans]
        assert all(abs(s - w) <= 0.01 for s, w in zip(shares, weights, strict=True)), shares
        everything = [x for a in ans for x in a.payloads]
        assert len(set(everything)) == 100_000
    finally:
        for a in ans:
            a.close()


def test_a_weight_update_shifts_the_shares(start) -> None:
    p = start()
    ans = [TestAnalyzer(p.port("analyzers"), w, ack_every=20) for w in (0.5, 0.5)]
    try:
        analyzers_connected(p, 2)
        send(p, 20_000)
        wait_total(ans, 20_000)
        before = [a.count for a in ans]
        ans[0].set_weight(0.25)  # now 0.25 : 0.5
        p.wait_for(lambda e: e.get("msg") == "analyzer weight" and e.get("weight") == 0.25)
        send(p, 60_000)
        wait_total(ans, 80_000)
        after = [a.count - b for a, b in zip(ans, before, strict=True)]
        assert abs(after[0] / 60_000 - 1 / 3) <= 0.01, after
    finally:
        for a in ans:
            a.close()


def test_killed_analyzer_loses_nothing(start) -> None:
    """One analyzer never ACKs and is killed mid-stream: the others get all it held."""
    p = start()
    port = p.port("analyzers")
    survivors = [TestAnalyzer(port, 0.5, ack_every=20), TestAnalyzer(port, 0.3, ack_every=20)]
    victim = TestAnalyzer(port, 0.2, ack=False)
    try:
        analyzers_connected(p, 3)
        send(p, 30_000, rate="60000")
        victim.wait_count(1000)
        victim.close(abort=True)
        send(p, 30_000, rate="60000")
        wait_total(survivors, 60_000)
        received = [x for a in survivors for x in a.payloads]
        assert len(set(received)) == 60_000, "every record reached a live analyzer"
        assert len(received) == 60_000
        stats = json.loads(logctl("--socket", str(p.workdir / "control.sock"), "stats",
                                  "--json").stdout)
        pool = stats["listeners"]["analyzers"]
        assert pool["redelivered"] == victim.count > 0
        assert pool["acked"] == 60_000
    finally:
        for a in survivors:
            a.close()


def test_ack_timeout_redelivers(start) -> None:
    p = start(ack_timeout="1s")
    port = p.port("analyzers")
    good = TestAnalyzer(port, 0.5, ack_every=10)
    stuck = TestAnalyzer(port, 0.5, ack=False)
    try:
        analyzers_connected(p, 2)
        send(p, 2_000, rate="20000")
        wait_total([good], 2_000, timeout=30)
        assert stuck.count > 0
        assert len(set(good.payloads)) == 2_000
        p.wait_for(lambda e: "did not ACK in time" in e.get("msg", ""))
        stuck.wait_closed()
    finally:
        good.close()
        stuck.close()


@pytest.mark.parametrize(("first", "then", "reason"), [
    (struct.pack(">d", 1.0), b"\x07\x00\x00\x00\x01", "unknown_type"),
    (struct.pack(">d", 1.0), struct.pack(">Bf", 1, float("nan")), "bad_weight"),
    (struct.pack(">d", 1.0), struct.pack(">Bf", 1, -2.0), "bad_weight"),
    (struct.pack(">d", float("inf")), b"", "bad_weight"),
    (struct.pack(">d", -1.0), b"", "bad_weight"),
    (struct.pack(">d", 1.0), b"\xff" * 64, "unknown_type"),
    (struct.pack(">d", 1.0), struct.pack(">BI", 0, 99), "ack_beyond_sent"),
])
def test_bad_control_messages_close_only_that_analyzer(start, first: bytes, then: bytes,
                                                       reason: str) -> None:
    p = start()
    port = p.port("analyzers")
    good = TestAnalyzer(port, 1.0, ack_every=10)
    try:
        analyzers_connected(p, 1)
        bad = socket.create_connection(("127.0.0.1", port))
        bad.settimeout(10)
        bad.sendall(first + then)
        with contextlib.suppress(ConnectionResetError):
            assert bad.recv(1) == b""
        bad.close()
        send(p, 1_000)
        wait_total([good], 1_000)
        stats = json.loads(logctl("--socket", str(p.workdir / "control.sock"), "stats",
                                  "--json").stdout)
        assert stats["listeners"]["analyzers"]["errors"] == {reason: 1}
    finally:
        good.close()


def test_records_wait_for_the_first_analyzer(start) -> None:
    p = start()
    send(p, 5_000)
    late = TestAnalyzer(p.port("analyzers"), 1.0, ack_every=50)
    try:
        wait_total([late], 5_000)
        assert len(set(late.payloads)) == 5_000
    finally:
        late.close()


def test_logctl_lists_analyzers_and_sets_weights(start) -> None:
    p = start()
    ans = [TestAnalyzer(p.port("analyzers"), w) for w in (0.7, 0.3)]
    sock = str(p.workdir / "control.sock")
    try:
        analyzers_connected(p, 2)
        table = json.loads(logctl("--socket", sock, "analyzers", "--json").stdout)["analyzers"]
        assert sorted(a["weight"] for a in table) == [0.3, 0.7]
        target = next(a["id"] for a in table if a["weight"] == 0.3)
        result = logctl("--socket", sock, "analyzers", "set-weight", target, "0")
        assert result.returncode == 0, result.stderr
        send(p, 2_000)
        wait_total(ans, 2_000)
        assert ans[1].count == 0, "weight 0 drains an analyzer"
        text = logctl("--socket", sock, "analyzers").stdout
        assert target in text and "WEIGHT" in text
        missing = logctl("--socket", sock, "analyzers", "set-weight", "nope", "1")
        assert missing.returncode == 1 and "no analyzer" in missing.stderr
    finally:
        for a in ans:
            a.close()


def test_one_thousand_analyzers_at_once(start) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 3000:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    p = start()
    port = p.port("analyzers")
    sel = selectors.DefaultSelector()
    conns = []
    for _ in range(1000):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(struct.pack(">d", 1.0))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, {"buf": b"", "n": 0})
        conns.append(s)
    try:
        analyzers_connected(p, 1000)
        count = 5_000
        with socket.create_connection(("127.0.0.1", p.port("emitters"))) as e:
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
        busy = sum(1 for key in sel.get_map().values() if key.data["n"])
        assert busy == 1000, "every analyzer got its share"
    finally:
        for s in conns:
            sel.unregister(s)
            s.close()
        sel.close()


def test_shutdown_without_analyzers_reports_undelivered_at_once(start) -> None:
    p = start()
    send(p, 1_000)
    started = time.monotonic()
    assert p.stop() == 1
    assert time.monotonic() - started < 10, "no analyzer to wait for: no reason to linger"
    entry = p.wait_for(lambda e: e.get("msg", "").startswith("shutdown: no analyzer"))
    assert entry["records"] == 1_000
    assert p.entries("stopped")[-1]["unwritten_records"] == 1_000


def test_shutdown_delivers_to_connected_analyzers(start) -> None:
    p = start()
    send(p, 3_000)
    a = TestAnalyzer(p.port("analyzers"), 1.0, ack_every=100)
    try:
        a.wait_count(1)
        assert p.stop() == 0
        assert a.count == 3_000
    finally:
        a.close()


def test_last_analyzer_leaving_during_shutdown_is_reported_at_once(start) -> None:
    p = start()
    stuck = TestAnalyzer(p.port("analyzers"), 1.0, ack=False)
    send(p, 500)
    stuck.wait_count(500)
    assert p.proc is not None
    p.proc.send_signal(signal.SIGTERM)
    p.wait_for(lambda e: e.get("msg") == "stopping")
    started = time.monotonic()
    stuck.close(abort=True)  # its 500 unacked messages have nowhere to go now
    assert p.proc.wait(15) == 1
    p.stop()
    assert time.monotonic() - started < 10
    assert p.entries("stopped")[-1]["unwritten_records"] == 500


def test_sighup_while_stopping_does_not_hold_up_the_stop(start) -> None:
    p = start()
    a = TestAnalyzer(p.port("analyzers"), 1.0)
    try:
        analyzers_connected(p, 1)
        send(p, 1_000)
        assert p.proc is not None
        p.proc.send_signal(signal.SIGTERM)
        p.proc.send_signal(signal.SIGHUP)
        assert p.proc.wait(15) == 0
        p.stop()
        assert a.count == 1_000
    finally:
        a.close()
