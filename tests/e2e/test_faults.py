"""Promises under faults and hostile clients: each test tries to break one, and counts.

What was answered 2xx (or written to a socket logd read) is compared with what was stored.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testkit.clickhouse import ClickHouseDatabase
from testkit.harness import REPO, LogdProcess, read_all_lines


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[LogdProcess]]:
    procs: list[LogdProcess] = []
    yield procs
    for p in procs:
        if p.proc is not None:
            p.stop(signal.SIGKILL)  # also closes the pipe of one killed during the test


def daemon_table(out: Path, shutdown_timeout: str = "30s") -> str:
    return f"""
[daemon]
state_dir = "{out}/state"
control_socket = "{out}/control.sock"
stats_interval = "0s"
shutdown_timeout = "{shutdown_timeout}"
"""


def peak_rss(pid: int) -> int:
    """The process's peak resident set (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def http_post(port: int, body: bytes, timeout: float = 90.0,
              path: str = "/v1/logs") -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def listener_stats(p: LogdProcess, name: str) -> dict[str, Any]:
    from logd.ctl import request
    return request(str(p.workdir / "out" / "control.sock"), "listeners")[name]


# -- a file output killed mid-write ----------------------------------------------------------

def test_kill_9_mid_write_never_glues_records_together(tmp_path: Path,
                                                       started: list[LogdProcess]) -> None:
    """kill -9 while whole O_DIRECT buffers reach the disk leaves the file ending inside a
    record; the next start cuts it back (counted, logged) instead of appending onto it."""
    out = tmp_path / "out"
    out.mkdir()
    config = daemon_table(out) + f"""
[listeners.lines]
type = "tcp"
address = "127.0.0.1:0"
framing = "lines"

[outputs.files]
type = "file"
path = "{out}/app.log"
buffer_size = "64KiB"
flush_interval = "5s"
"""
    log_file = out / "app.log"
    torn_rounds = 0
    for round_ in range(6):
        data = log_file.read_bytes() if log_file.exists() else b""
        torn = bool(data) and not data.endswith(b"\n")
        torn_rounds += torn
        p = LogdProcess(config, tmp_path)
        started.append(p)
        p.start()
        if round_ < 5:
            assert _send_lines_until_killed(p.port("lines"), p, seconds=0.4 + 0.15 * round_)
        else:  # a last clean run
            with socket.create_connection(("127.0.0.1", p.port("lines"))) as s:
                s.sendall(_line(10**9))
            assert p.stop() == 0
        # The file is opened (and repaired) when the first records arrive.
        repaired = p.entries("file ended inside a record")
        assert bool(repaired) == torn, (round_, torn, repaired)
    assert torn_rounds >= 1, "no kill left a torn record: the test did not test anything"
    print(f"kill -9 mid-write: {torn_rounds} of 5 kills left a torn record, each cut back")
    lines = read_all_lines(out, "app.log")
    bad = [line for line in lines if not _whole(line)]
    assert not bad, f"{len(bad)} glued or torn lines, e.g. {bad[0][:120]!r}"
    assert lines[-1] == _line(10**9).rstrip(b"\n")


def _line(seq: int) -> bytes:
    return json.dumps({"seq": seq, "pad": "x" * 150}).encode() + b"\n"


def _whole(line: bytes) -> bool:
    try:
        obj = json.loads(line)
    except ValueError:
        return False
    return isinstance(obj, dict) and set(obj) == {"seq", "pad"} and len(obj["pad"]) == 150


def _send_lines_until_killed(port: int, p: LogdProcess, seconds: float) -> int:
    """Send lines as fast as possible; kill -9 logd after `seconds`. Returns lines sent."""
    sent = 0
    stop = threading.Event()
    killer = threading.Timer(seconds, lambda: (p.proc.send_signal(signal.SIGKILL),  # type: ignore[union-attr]
                                               stop.set()))
    killer.start()
    try:
        with socket.create_connection(("127.0.0.1", port)) as s:
            seq = 0
            while not stop.is_set():
                chunk = b"".join(_line(seq + i) for i in range(400))
                try:
                    s.sendall(chunk)
                except OSError:
                    break
                seq += 400
                sent += 400
    finally:
        killer.join()
        p.proc.wait(10)  # type: ignore[union-attr]
    return sent


# -- one dead database -------------------------------------------------------------------------

def test_a_dead_database_does_not_stop_the_file_output(tmp_path: Path,
                                                       started: list[LogdProcess]) -> None:
    """ClickHouse is unreachable the whole time: its (default) disk spool takes what it
    cannot write, and the file output keeps receiving everything."""
    out = tmp_path / "out"
    out.mkdir()
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    config = daemon_table(out, shutdown_timeout="2s") + f"""
[listeners.http]
type = "http"
address = "127.0.0.1:0"

[outputs.files]
type = "file"
path = "{out}/{{app}}.log"
flush_interval = "100ms"

[outputs.clickhouse]
type = "clickhouse"
url = "clickhouse://default@127.0.0.1:{dead_port}/logs_db"
retry_max = "1s"
"""
    p = LogdProcess(config, tmp_path)
    started.append(p)
    p.start()
    port = p.port("http")
    gen = subprocess.run(
        [sys.executable, "tools/loadgen", "--target", f"http://127.0.0.1:{port}/api/logs",
         "--rate", "40000", "--count", "200000", "--batch", "500", "--size", "300",
         "--apps", "one:1", "--give-up", "--json"],
        cwd=REPO, capture_output=True, timeout=120)
    summary = json.loads(gen.stdout.decode().strip().splitlines()[-1])
    assert summary["given_up"] == 0, gen.stderr.decode()
    assert summary["sent"] == 200_000
    status, health = _get(port, "/health")
    assert status == 503 and health["outputs"]["clickhouse"]["ready"] is False
    assert health["outputs"]["files"]["ready"] is True
    assert p.stop() == 0  # the spool keeps ClickHouse's records: not lost
    assert len(read_all_lines(out, "one.log")) == 200_000
    stopped = p.metrics("clickhouse")
    assert stopped["Logs"] == 200_000


def _get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


# -- hostile HTTP clients ---------------------------------------------------------------------

def http_only(out: Path, listener_extra: str = "") -> str:
    return daemon_table(out) + f"""
[listeners.http]
type = "http"
address = "127.0.0.1:0"
{listener_extra}

[outputs.files]
type = "file"
path = "{out}/{{app}}.log"
flush_interval = "100ms"
"""


def test_large_bodies_at_once_are_parsed_a_few_at_a_time(tmp_path: Path,
                                                         started: list[LogdProcess]) -> None:
    """8 concurrent 9.5 MiB bodies took RSS from 100 MB to 470 MB; with max_inflight_bytes
    the rest wait their turn, and every batch is still taken."""
    out = tmp_path / "out"
    out.mkdir()
    p = LogdProcess(http_only(out), tmp_path)
    started.append(p)
    p.start()
    port = p.port("http")
    record = {"app_id": "big", "level": "info", "message": "m" * 180, "source": "s"}
    n = 9_500_000 // len(json.dumps(record))
    body = json.dumps([record] * n).encode()
    assert 9_000_000 < len(body) < 10 * 1024**2
    http_post(port, b'[{"message": "warm-up", "app_id": "big"}]')
    base = peak_rss(p.proc.pid)  # type: ignore[union-attr]
    answers: list[tuple[int, dict[str, Any]]] = []
    threads = [threading.Thread(target=lambda: answers.append(http_post(port, body)))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [a[0] for a in answers] == [202] * 8
    grew = peak_rss(p.proc.pid) - base  # type: ignore[union-attr]
    assert p.stop() == 0
    assert len(read_all_lines(out, "big.log")) == 8 * n + 1
    print(f"peak RSS grew {grew / 1024**2:.0f} MiB")
    assert grew < 300 * 1024**2, f"RSS grew {grew / 1024**2:.0f} MiB"


def test_slowloris_connections_are_closed_and_good_clients_served(
        tmp_path: Path, started: list[LogdProcess]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    p = LogdProcess(http_only(out, 'header_timeout = "1s"\nbody_timeout = "1s"'), tmp_path)
    started.append(p)
    p.start()
    port = p.port("http")
    slow = []
    for _ in range(2000):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /v1/logs HTTP/1.1\r\nHost: x\r\n")  # never finishes its headers
        slow.append(s)
    try:
        began = time.monotonic()
        assert http_post(port, b'{"message": "during", "app_id": "good"}')[0] == 202
        closed = 0
        for s in slow:
            s.settimeout(10)
            with contextlib.suppress(ConnectionError):
                if s.recv(1) == b"":
                    closed += 1
                    continue
            closed += 1  # reset counts as closed too
        assert closed == 2000
        assert time.monotonic() - began < 10
    finally:
        for s in slow:
            s.close()
    # A body shorter than its Content-Length: 408 once body_timeout passes.
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000\r\n\r\n[{\"message\"")
        s.settimeout(10)
        began = time.monotonic()
        answer = s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
        assert 0.9 < time.monotonic() - began < 5
    stats = listener_stats(p, "http")
    assert stats["errors"]["header_timeout"] == 2000
    assert stats["errors"]["body_timeout"] == 1
    assert p.stop() == 0
    assert read_all_lines(out, "good.log") == [b'{"message": "during", "app_id": "good"}']


# -- clients that give up on the first non-2xx ------------------------------------------------

def test_clients_that_give_up_on_503_lose_nothing_to_a_stalled_database(
        tmp_path: Path, started: list[LogdProcess],
        private_clickhouse: ClickHouseDatabase) -> None:
    """Seed 001's clients count any non-2xx as a failed batch. With a 16 MiB memory buffer
    and ClickHouse frozen under 4 such clients until the buffer is full, requests wait for
    room instead of being refused: every batch is answered 202 and stored."""
    out = tmp_path / "out"
    out.mkdir()
    config = daemon_table(out) + f"""
[listeners.http]
type = "http"
address = "127.0.0.1:0"

[outputs.clickhouse]
type = "clickhouse"
url = "{private_clickhouse.url}"
batch_timeout = "200ms"
retry_max = "1s"
buffer = {{ type = "memory", max_bytes = "16MiB", when_full = "block" }}
"""
    p = LogdProcess(config, tmp_path)
    started.append(p)
    p.start()
    p.wait_for(lambda e: e.get("msg") == "connected")
    gen = subprocess.Popen(
        [sys.executable, "tools/loadgen", "--target",
         f"http://127.0.0.1:{p.port('http')}/api/logs", "--rate", "0", "--count", "400000",
         "--workers", "4", "--batch", "1000", "--give-up", "--json"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while private_clickhouse.count() < 50_000:
            assert time.monotonic() < deadline, "ClickHouse got nothing"
            time.sleep(0.1)  # polling ClickHouse: no event to await from here
        os.kill(private_clickhouse.server.pid, signal.SIGSTOP)  # type: ignore[arg-type]
        # The stall lasts until it has filled the buffer and requests wait for room.
        deadline = time.monotonic() + 60
        while not buffer_full_and_requests_held(p):
            assert time.monotonic() < deadline, "the stall never filled the buffer"
            time.sleep(0.05)  # polling /health and logd's counters: no event from outside
        os.kill(private_clickhouse.server.pid, signal.SIGCONT)  # type: ignore[arg-type]
        stdout, stderr = gen.communicate(timeout=180)
    finally:
        if gen.poll() is None:
            gen.kill()
            gen.wait()
        with contextlib.suppress(ProcessLookupError, TypeError):
            os.kill(private_clickhouse.server.pid, signal.SIGCONT)  # type: ignore[arg-type]
    summary = json.loads(stdout.decode().strip().splitlines()[-1])
    assert summary["given_up"] == 0, stderr.decode()
    assert summary["sent"] == 400_000
    assert p.stop() == 0
    assert private_clickhouse.count() == 400_000
    assert listener_stats_after_stop(p)["waited_full"] > 0, "the stall never filled the buffer"


def buffer_full_and_requests_held(p: LogdProcess) -> bool:
    """/health says the ClickHouse output cannot take more, and HTTP holds request bodies."""
    status, health = _get(p.port("http"), "/health")
    return (status == 503 and health["outputs"]["clickhouse"]["ready"] is False
            and listener_stats(p, "http")["inflight_bytes"] > 0)


def listener_stats_after_stop(p: LogdProcess) -> dict[str, Any]:
    return p.listener_stats("http")


# -- the file output's own disk full ------------------------------------------------------------

_FULL_FILE_DISK_DRIVER = """
import atexit, json, os, signal, socket, subprocess
from pathlib import Path
from testkit.configs import emitter_file_config
from testkit.harness import LogdProcess
mnt = Path({mnt!r})
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], check=True)
filler = mnt / "filler"
filler.write_bytes(b"\\0" * (7 * 1024 * 1024 + 512 * 1024))  # ~0.5 MiB left for logd
out = mnt / "out"
out.mkdir()
logd = LogdProcess(emitter_file_config(out, framing="lines"), Path({work!r})).start()
atexit.register(lambda: logd.alive() and logd.stop(signal.SIGKILL))
lines = [json.dumps({{"seq": i, "pad": "x" * 180}}).encode() + b"\\n" for i in range({n})]
with socket.create_connection(("127.0.0.1", logd.port("emitters"))) as s:
    s.sendall(b"".join(lines))
    # The disk fills: logd retries its writes (and says so) rather than dropping them.
    logd.wait_for(lambda e: e.get("msg") == "write failed; retrying"
                  or e.get("msg") == "cannot open output file; retrying", timeout=30)
    filler.unlink()  # room again
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
code = logd.stop()
written = (out / "emitters.log").read_bytes().splitlines()
print(json.dumps({{"code": code, "taken": logd.listener_stats("emitters")["records"],
                  "written": len(written), "distinct": len(set(written)),
                  "whole": all(w.endswith(b'"}}') for w in written)}}))
"""


def test_a_full_disk_under_the_file_output_loses_nothing(tmp_path: Path) -> None:
    """The file output's filesystem (a tmpfs in a private mount namespace) is full: writes
    are retried, nothing is dropped, and every record logd took is written once there is
    room."""
    from testkit.harness import env_for_testkit
    n = 20_000  # ~4 MB of lines against ~0.5 MiB free
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "driver.py").write_text(_FULL_FILE_DISK_DRIVER.format(
        mnt=str(mnt), work=str(work), n=n))
    unshare = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        unshare.insert(1, "--map-root-user")
    proc = subprocess.run([*unshare, sys.executable, str(tmp_path / "driver.py")],
                          capture_output=True, timeout=120, cwd=REPO, env=env_for_testkit())
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    result = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    print(f"file output on a full disk: taken {result['taken']}, written {result['written']}")
    assert result == {"code": 0, "taken": n, "written": n, "distinct": n, "whole": True}
