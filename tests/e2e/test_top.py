"""logctl top against a real logd: in an 80x24 pseudo-terminal while records flow, on a
pipe (--once), and without a logd to ask."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from logd.ctl import request
from testkit.configs import emitter_file_config
from testkit.harness import REPO, LogdProcess, free_port, logctl
from testkit.kafka import KafkaTopic
from testkit.pty_program import PtyProgram
from testkit.screen import Screen

LEAVE_ALTERNATE, SHOW_CURSOR = "\x1b[?1049l", "\x1b[?25h"
SENT = 4000


@pytest.fixture
def running(tmp_path: Path) -> Iterator[LogdProcess]:
    out = tmp_path / "out"
    out.mkdir()
    config = emitter_file_config(out, framing="lines") + """
[listeners.http]
type = "http"
address = "127.0.0.1:0"

[listeners.spare]
type = "tcp"
address = "127.0.0.1:0"
"""
    p = LogdProcess(config, tmp_path).start()
    yield p
    if p.alive():
        p.stop(signal.SIGKILL)


def sock(p: LogdProcess) -> str:
    return str(p.workdir / "out" / "control.sock")


def top(*args: str, columns: int = 80, rows: int = 24) -> PtyProgram:
    return PtyProgram([sys.executable, "-m", "logd.ctl", *args], columns, rows, cwd=str(REPO))


def send_lines(port: int, count: int, seconds: float) -> None:
    """`count` lines at an even pace over about `seconds`: traffic flows while top samples."""
    steps = 40
    with socket.create_connection(("127.0.0.1", port)) as s:
        for step in range(steps):
            s.sendall(b"".join(b"record %d\n" % i for i in range(step * count // steps,
                                                              (step + 1) * count // steps)))
            time.sleep(seconds / steps)  # pacing the load, not waiting for logd


def row(screen: Screen | str, name: str) -> list[str]:
    """The cells of a component's row: NAME TYPE REC/S BYTES/S TOTAL QUEUE FILL DROPS ERRS
    RETRY LAG."""
    text = screen if isinstance(screen, str) else screen.text()
    for line in text.splitlines():
        cells = line.split()
        if cells and cells[0] == name:
            return cells
    return []


def rate_shown(screen: Screen, name: str) -> bool:
    cells = row(screen, name)
    return len(cells) == 11 and cells[2] not in ("-", "0")


def total_shown(screen: Screen, name: str, n: int) -> bool:
    cells = row(screen, name)
    return len(cells) == 11 and cells[4] == str(n)


def test_top_in_a_terminal_shows_logd_live_and_leaves_the_terminal_as_it_was(
        running: LogdProcess) -> None:
    view = top("--socket", sock(running), "top", "--interval", "0.3")
    try:
        view.wait_screen(lambda s: row(s, "emitters") != [], what="the listeners")
        assert not view.local_modes() & (termios.ECHO | termios.ICANON)  # keys one by one

        sender = threading.Thread(target=send_lines, args=(running.port("emitters"), SENT, 3))
        sender.start()
        flowing = view.wait_screen(lambda s: rate_shown(s, "emitters") and
                                   rate_shown(s, "files"), what="records/s above 0")
        sender.join()
        print(flowing)
        header = flowing.splitlines()[0]
        assert header.startswith("logd 0.1.0  up ")
        rss = re.search(r"rss (\d+(?:\.\d)?)(MiB|GiB)", header)
        assert rss is not None and float(rss.group(1)) > 0, header
        assert re.search(r"in \d[\d.]*k?/s", header) and "out " in header
        names = {cells[0] for cells in map(str.split, flowing.splitlines()) if cells}
        assert {"emitters", "http", "spare", "files"} <= names
        assert row(flowing, "files")[1] == "file" and row(flowing, "emitters")[1] == "tcp"

        done = view.wait_screen(lambda s: total_shown(s, "emitters", SENT) and
                                total_shown(s, "files", SENT), what=f"{SENT} records")
        print(done)
        files = row(done, "files")
        assert files[5].endswith("B") and files[6].endswith("%")  # queue, fill
        assert files[7:10] == ["0", "0", "0"]                     # drops, errors, retries
        assert row(done, "emitters")[8] == "0" and row(done, "spare")[4] == "0"

        # A smaller window: SIGWINCH, the screen redrawn to it, the rows left out counted.
        view.resize(80, 9)
        small = view.wait_screen(lambda s: "more" in s.text(), what="+N more")
        print(small)
        assert len(small.splitlines()) == 9 and "  +" in small

        assert view.screen.overflows == [], view.screen.overflows  # no line past column 80
        assert view.screen.unknown == []

        # logd goes away: the view says so, and top keeps trying.
        running.stop()
        gone = view.wait_screen(lambda s: "not reachable" in s.text(), what="unreachable")
        print(gone)
        assert "cannot connect" in gone and "Traceback" not in view.raw

        view.type(b"q")
        assert view.wait() == 0
        assert view.raw.rfind(LEAVE_ALTERNATE) > view.raw.rfind("\x1b[?1049h")
        assert view.raw.rfind(SHOW_CURSOR) > view.raw.rfind("\x1b[?25l")
        assert not view.screen.alternate and view.screen.cursor_visible
        assert view.local_modes() & termios.ECHO and view.local_modes() & termios.ICANON
    finally:
        view.close()


def test_top_without_logd_says_so_and_sigterm_restores_the_terminal(tmp_path: Path) -> None:
    view = top("--socket", str(tmp_path / "none.sock"), "top", "--interval", "0.2")
    try:
        text = view.wait_screen(lambda s: "not reachable" in s.text(), what="unreachable")
        assert "no such socket" in " ".join(text.split())
        tried = re.search(r"tried (\d\d:\d\d:\d\d)", text)
        assert tried is not None
        view.wait_screen(lambda s: f"tried {tried.group(1)}" not in s.text(),
                         what="a second try")  # it keeps trying
        view.proc.send_signal(signal.SIGTERM)
        assert view.wait() == 128 + signal.SIGTERM
        assert view.raw.endswith(SHOW_CURSOR + LEAVE_ALTERNATE)
        assert view.local_modes() & termios.ECHO and view.local_modes() & termios.ICANON
        assert "Traceback" not in view.raw
    finally:
        view.close()


def test_ctrl_z_gives_the_terminal_back_and_ctrl_c_quits_with_status_0(
        tmp_path: Path) -> None:
    view = top("--socket", str(tmp_path / "none.sock"), "top")
    try:
        view.wait_screen(lambda s: "not reachable" in s.text(), what="unreachable")
        typed_at = len(view.raw)
        view.type(b"\x1a")  # SIGTSTP. A test's child is in an orphaned process group, where
        # the kernel discards the stop itself: what is seen is the terminal given back
        # before it and taken again after it.
        view.wait_screen(lambda s: re.search(re.escape(LEAVE_ALTERNATE) + ".*" +
                                             re.escape("\x1b[?1049h") + ".*not reachable",
                                             view.raw[typed_at:], re.S) is not None,
                         what="the screen left and taken again")
        assert not view.local_modes() & termios.ECHO
        view.type(b"\x03")  # the terminal turns it into SIGINT
        assert view.wait() == 0
        assert view.raw.endswith(SHOW_CURSOR + LEAVE_ALTERNATE)
        assert view.local_modes() & termios.ECHO and "Traceback" not in view.raw
    finally:
        view.close()


def test_top_once_prints_one_plain_snapshot(running: LogdProcess) -> None:
    with socket.create_connection(("127.0.0.1", running.port("emitters"))) as s:
        s.sendall(b"".join(b"line %d\n" % i for i in range(1500)))
    deadline = time.monotonic() + 30
    while True:  # polling logd's counters: no event to await from outside
        result = logctl("--config", str(running.config_path), "top", "--once",
                        "--interval", "0.2")  # the socket found as every command finds it
        assert result.returncode == 0, result.stderr
        if row(result.stdout, "files")[4:5] == ["1500"]:
            break
        assert time.monotonic() < deadline, result.stdout
    print(result.stdout)
    assert "\x1b" not in result.stdout
    lines = result.stdout.splitlines()
    assert lines[0].startswith("logd 0.1.0  up ") and "rss " in lines[0]
    assert lines[2].split() == ["LISTENER", "TYPE", "REC/S", "BYTES/S", "TOTAL", "QUEUE",
                                "FILL", "DROPS", "ERRS", "RETRY", "LAG"]
    assert row(result.stdout, "emitters")[:2] == ["emitters", "tcp"]
    assert row(result.stdout, "emitters")[4] == "1500"
    assert row(result.stdout, "http")[4] == "0"


def test_top_on_a_pipe_prints_a_snapshot_per_interval(running: LogdProcess) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "logd.ctl", "--socket", sock(running),
                             "top", "--interval", "0.2"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        headers = 0
        for line in proc.stdout:
            assert "\x1b" not in line
            headers += line.startswith("logd 0.1.0")
            if headers == 3:
                break
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and "Traceback" not in err


def test_top_once_without_logd_fails_in_one_line(tmp_path: Path) -> None:
    result = logctl("--socket", str(tmp_path / "none.sock"), "top", "--once")
    assert result.returncode == 1
    assert result.stderr.startswith("logctl: cannot connect to ")
    assert len(result.stderr.splitlines()) == 1 and result.stdout == ""


def test_top_is_in_logctl_help() -> None:
    assert " top " in logctl("--help").stdout
    help_text = logctl("top", "--help").stdout
    for word in ("--interval", "--once", "REC/S", "QUEUE, FILL", "LAG"):
        assert word in help_text
    refused = logctl("--socket", "/nonexistent", "top", "--interval", "0")
    assert refused.returncode == 2 and "--interval" in refused.stderr


def produce(topic: KafkaTopic, values: list[bytes]) -> None:
    """`values` into a one-partition topic, each acknowledged."""
    async def run() -> None:
        from aiokafka import AIOKafkaProducer
        producer = AIOKafkaProducer(bootstrap_servers=topic.bootstrap, linger_ms=5)
        await producer.start()
        try:
            sent = [await producer.send(topic.topic, v, partition=0) for v in values]
            await asyncio.gather(*sent)
        finally:
            await producer.stop()
    asyncio.run(run())



def test_top_shows_a_kafka_inputs_lag_behind_a_stuck_output(
        tmp_path: Path, kafka: KafkaTopic) -> None:
    produce(kafka, [b"record %05d " % i + b"x" * 100 for i in range(5000)])
    out = tmp_path / "out"
    out.mkdir()
    # Nothing listens on the output's port: its buffer fills, the consumer stops taking,
    # and what it has not taken is its lag.
    config = f"""
[daemon]
state_dir = "{out}/state"
control_socket = "{out}/control.sock"
stats_interval = "0s"

[listeners.from_kafka]
type = "kafka"
brokers = ["{kafka.bootstrap}"]
topics = ["{kafka.topic}"]
group = "top"
format = "raw"
max_batch_records = 100

[outputs.clickhouse]
type = "clickhouse"
url = "clickhouse://default@127.0.0.1:{free_port()}/logs"
buffer = {{ type = "memory", max_bytes = "64KiB", when_full = "block" }}
"""
    p = LogdProcess(config, tmp_path).start()
    try:
        deadline = time.monotonic() + 60
        while True:  # polling logd's counters: no event to await from outside
            before = request(sock(p), "stats")
            result = logctl("--socket", sock(p), "top", "--once", "--interval", "0.2")
            after = request(sock(p), "stats")
            assert result.returncode == 0, result.stderr
            lag = after["listeners"]["from_kafka"].get("backlog", {}).get("records", 0)
            if after["listeners"]["from_kafka"]["pauses"] and lag and \
                    before["listeners"]["from_kafka"]["backlog"]["records"] == lag:
                break
            assert time.monotonic() < deadline, result.stdout
        print(result.stdout)
        assert 0 < lag < 5000
        listener, output = row(result.stdout, "from_kafka"), row(result.stdout, "clickhouse")
        assert listener[1] == "kafka" and listener[10] == str(lag)  # exact: not a screen
        assert listener[4] == str(after["listeners"]["from_kafka"]["records"])
        assert int(output[6].rstrip("%")) >= 75  # FILL of 64KiB
        assert output[4] == "0"                   # nothing written
        assert "! clickhouse: not connected" in result.stdout.splitlines()
    finally:
        p.stop(signal.SIGKILL)
