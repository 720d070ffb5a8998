"""The analyzer port through a real logd process: shutdown with and without analyzers, and
logctl's analyzer commands. The rest runs logd in-process: tests/component/test_analyzers.py."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.analyzer_client import TestAnalyzer
from testkit.harness import LogdProcess, logctl, run_loadgen


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
