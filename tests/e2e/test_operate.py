"""Operating logd: logctl, /metrics, reload, systemd notifications and unit."""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.configs import emitter_file_config
from testkit.harness import REPO, LogdProcess, logctl, read_all_lines
from testkit.wire import frame

STATS_KEYS = {"process", "daemon", "listeners", "outputs", "router"}
PROCESS_KEYS = {"pid", "rss_bytes", "cpu_user_s", "cpu_system_s", "open_fds", "threads",
                "uptime_s", "start_time", "gc_cycles", "gc_pause_ms", "cpu_pct"}
LISTENER_KEYS = {"type", "connections", "accepted", "records", "bytes", "pauses", "errors"}
OUTPUT_KEYS = {"queued_records", "queued_bytes", "accepted", "dropped", "dropped_pct",
               "written", "bytes", "flushes", "swaps", "errors", "retries", "failed",
               "rotations", "open_files", "avg_flush_ms", "max_flush_ms", "avg_write_ms",
               "max_write_ms", "write_pct", "direct_io", "flush_seconds", "batch_records"}


@pytest.fixture
def running(tmp_path: Path) -> Iterator[LogdProcess]:
    out = tmp_path / "out"
    out.mkdir()
    p = LogdProcess(emitter_file_config(out).replace('stats_interval = "0s"',
                                             'stats_interval = "0s"\n'
                                             'metrics_address = "127.0.0.1:0"'),
                    tmp_path).start()
    p.out = out  # type: ignore[attr-defined]
    yield p
    if p.alive():
        p.stop(signal.SIGKILL)


def sock(p: LogdProcess) -> str:
    return str(p.workdir / "out" / "control.sock")


def stats(p: LogdProcess) -> dict:
    result = logctl("--socket", sock(p), "stats", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_written(p: LogdProcess, output: str, n: int, timeout: float = 30) -> dict:
    end = time.monotonic() + timeout
    while True:
        s = stats(p)
        if s["outputs"][output]["written"] >= n:
            return s
        assert time.monotonic() < end, f"{output} wrote {s['outputs'][output]['written']}/{n}"
        time.sleep(0.05)  # polling logd's counters: no event to await from outside


def test_stats_match_what_was_sent(running: LogdProcess) -> None:
    payloads = [b"record %d" % i for i in range(1000)]
    data = b"".join(frame(p) for p in payloads)
    with socket.create_connection(("127.0.0.1", running.port("emitters"))) as s:
        s.sendall(data)
    s = wait_written(running, "files", 1000)
    assert set(s) == STATS_KEYS
    assert set(s["process"]) >= PROCESS_KEYS
    lst = s["listeners"]["emitters"]
    assert set(lst) >= LISTENER_KEYS
    assert lst["records"] == 1000 and lst["bytes"] == len(data) and lst["errors"] == {}
    out = s["outputs"]["files"]
    assert set(out) >= OUTPUT_KEYS
    assert out["written"] == 1000 and out["accepted"] == 1000 and out["dropped"] == 0
    assert out["bytes"] == sum(len(p) + 1 for p in payloads)

    table = logctl("--socket", sock(running), "stats")
    assert table.returncode == 0
    assert "emitters" in table.stdout and "files" in table.stdout and "1,000" in table.stdout
    line = logctl("--socket", sock(running), "stats", "--line")
    assert line.stdout.startswith("METRICS: Logs: 1000 Dropped: 0 (0.0000%) | Bytes: ")


def test_metrics_endpoint_parses_with_prometheus_client(running: LogdProcess) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    with socket.create_connection(("127.0.0.1", running.port("emitters"))) as s:
        s.sendall(b"".join(frame(b"m %d" % i) for i in range(500)))
    wait_written(running, "files", 500)
    port = running.wait_for(lambda e: e.get("msg") == "metrics listening")["port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}
    assert samples[("logd_listener_records_total", (("listener", "emitters"),))] == 500
    assert samples[("logd_output_written_records_total", (("output", "files"),))] == 500
    assert families["logd_output_flush_seconds"].type == "histogram"
    assert families["logd_output_batch_records"].type == "histogram"
    assert samples[("logd_output_batch_records_count", (("output", "files"),))] >= 1
    assert samples[("process_resident_memory_bytes", ())] > 0
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as r:
        # The same answer as the HTTP listener's /health (one function serves both).
        assert json.loads(r.read()) == {"status": "ok", "outputs": {
            "files": {"ready": True, "queued_records": 0}}}


def test_logctl_without_a_daemon_says_so_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "nothing.sock"
    result = logctl("--socket", str(path), "stats")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert str(path) in result.stderr and "is logd running?" in result.stderr


def test_logctl_usage_errors_exit_2() -> None:
    assert logctl().returncode == 2
    assert logctl("frobnicate").returncode == 2
    help_text = logctl("--help")
    assert help_text.returncode == 0 and "reload" in help_text.stdout


def test_logctl_check_config() -> None:
    good = logctl("check-config", "etc/logd.toml")
    assert good.returncode == 0 and good.stdout.strip() == "etc/logd.toml: ok"
    bad = logctl("check-config", "README.md")
    assert bad.returncode == 2 and "invalid TOML" in bad.stderr


def two_listener_config(out: Path, second_output: bool, second_listener: bool) -> str:
    cfg = f"""
[daemon]
state_dir = "{out}/state"
control_socket = "{out}/control.sock"
stats_interval = "0s"

[listeners.a]
type = "tcp"
address = "127.0.0.1:0"
"""
    if second_listener:
        cfg += '\n[listeners.b]\ntype = "tcp"\naddress = "127.0.0.1:0"\n'
    cfg += f"""
[outputs.first]
type = "file"
path = "{out}/first/{{source}}.log"
flush_interval = "50ms"
"""
    if second_output:
        cfg += f"""
[outputs.second]
type = "file"
path = "{out}/second/{{source}}.log"
flush_interval = "50ms"
"""
    return cfg


def test_reload_adds_an_output_and_removes_a_listener_under_load(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    p = LogdProcess(two_listener_config(out, second_output=False, second_listener=True),
                    tmp_path).start()
    try:
        gens = [subprocess.Popen([sys.executable, "tools/loadgen", "--target",
                                  f"tcp://127.0.0.1:{p.port(name)}", "--rate", "20000",
                                  "--duration", "3", "--size", "120", "--json"],
                                 cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                for name in ("a", "b")]
        wait_written(p, "first", 10_000)
        p.config_path.write_text(two_listener_config(out, second_output=True,
                                                     second_listener=False))
        result = logctl("--socket", str(out / "control.sock"), "reload")
        assert result.returncode == 0, result.stderr
        assert "output second added" in result.stdout and "listener b removed" in result.stdout
        a_summary = json.loads(gens[0].communicate(60)[0].decode().splitlines()[-1])
        gens[1].communicate(60)  # cut off by the reload: its count is not what logd took
        assert p.stop() == 0
    finally:
        if p.alive():
            p.stop(signal.SIGKILL)
    b_taken = [e for e in p.entries("listener stats") if e["listener"] == "b"][-1]["records"]
    a_taken = p.listener_stats("a")["records"]
    assert a_taken == a_summary["sent"] == 60_000
    first_a = read_all_lines(out / "first", "a.log")
    first_b = read_all_lines(out / "first", "b.log")
    second_a = read_all_lines(out / "second", "a.log")
    assert len(first_a) == a_taken and len(set(first_a)) == a_taken
    assert len(first_b) == b_taken and len(set(first_b)) == b_taken
    assert 0 < len(second_a) < a_taken, "the new output gets what came after the reload"
    assert first_a[-len(second_a):] == second_a
    # b's records in the moment between the swap and its removal went to both outputs.
    second_b = read_all_lines(out / "second", "b.log") if (out / "second").exists() else []
    assert set(second_b) <= set(first_b)


def test_invalid_reload_keeps_the_running_config(running: LogdProcess) -> None:
    good = running.config_path.read_text()
    running.config_path.write_text(good.replace('framing = "frames"', 'framing = "bogus"'))
    result = logctl("--socket", sock(running), "reload")
    assert result.returncode == 1
    assert "reload refused" in result.stderr
    assert "listeners.emitters.framing" in result.stderr
    with socket.create_connection(("127.0.0.1", running.port("emitters"))) as s:
        s.sendall(frame(b"still here"))
    wait_written(running, "files", 1)
    assert running.alive()


def test_sighup_reloads(running: LogdProcess) -> None:
    running.config_path.write_text(running.config_path.read_text()
                                   + '\n[routes.all]\nmatch = "*"\nto = ["files"]\n')
    assert running.proc is not None
    running.proc.send_signal(signal.SIGHUP)
    entry = running.wait_for(lambda e: e.get("msg") == "reloaded")
    assert "routes updated" in entry["changes"]


def test_sd_notify_messages_arrive_in_order(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    notify = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(notify))
        listener.settimeout(15)
        p = LogdProcess(emitter_file_config(out), tmp_path,
                        env={"NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": "200000"})
        p.start()
        try:
            def next_message() -> dict[str, str]:
                while True:
                    fields = dict(line.split("=", 1) for line in
                                  listener.recv(4096).decode().splitlines())
                    if "WATCHDOG" not in fields:
                        return fields
                    seen.add("WATCHDOG")

            seen: set[str] = set()
            assert next_message()["READY"] == "1"
            assert logctl("--socket", str(out / "control.sock"), "reload").returncode == 0
            reloading = next_message()
            assert reloading["RELOADING"] == "1" and int(reloading["MONOTONIC_USEC"]) > 0
            assert next_message()["READY"] == "1"
            while "WATCHDOG" not in seen:  # pings every 100 ms (half of WATCHDOG_USEC)
                if "WATCHDOG=1" in listener.recv(4096).decode():
                    seen.add("WATCHDOG")
            assert p.proc is not None
            p.proc.send_signal(signal.SIGTERM)
            assert next_message()["STOPPING"] == "1"
            assert p.proc.wait(30) == 0
            p.stop()  # collects the log reader; the process has exited already
        finally:
            if p.alive():
                p.stop(signal.SIGKILL)


def test_the_control_socket_is_0660_under_any_umask(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    old = os.umask(0)  # logd inherits it
    try:
        p = LogdProcess(emitter_file_config(out), tmp_path).start()
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE(os.stat(out / "control.sock").st_mode) == 0o660
    finally:
        assert p.stop() == 0


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is needed (Debian package systemd; make test installs it)"
    logd_bin = Path(sys.executable).parent / "logd"
    unit = (REPO / "systemd" / "logd.service").read_text()
    assert "Type=notify" in unit and "ExecReload=" in unit and "WatchdogSec=" in unit
    unit = unit.replace("/usr/local/bin/logd", str(logd_bin))
    (tmp_path / "logd.service").write_text(unit)
    result = subprocess.run([analyze, "verify", str(tmp_path / "logd.service")],
                            capture_output=True, text=True, timeout=60)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if "logd.service" in line]
    assert result.returncode == 0 and problems == [], result.stdout + result.stderr


def tail(p: LogdProcess, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "logd.ctl", "--socket", sock(p), "tail",
                             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO)


def send_until_done(p: LogdProcess, reader: subprocess.Popen[str], data: bytes) -> None:
    """Send `data` every 50 ms until `reader` exits: the tail connects at its own pace."""
    with socket.create_connection(("127.0.0.1", p.port("emitters"))) as s:
        for _ in range(400):
            s.sendall(data)
            try:
                reader.wait(0.05)
                return
            except subprocess.TimeoutExpired:
                pass
    reader.kill()
    raise AssertionError("logctl tail did not finish")


def test_logctl_tail_streams_matching_records(running: LogdProcess) -> None:
    reader = tail(running, "--filter", "level >= warn && disk", "--count", "3", "--json")
    send_until_done(running, reader, frame(b"disk full", 3) + frame(b"disk ok", 6)
                    + frame(b"cpu hot", 4))
    out, err = reader.communicate(10)
    assert reader.returncode == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 3
    assert {(r["source"], r["level"], r["payload"]) for r in records} == \
        {("emitters", "error", "disk full")}
    assert all(abs(r["time"] - time.time()) < 60 for r in records)
    plain = tail(running, "--count", "1")
    send_until_done(running, plain, frame(b"hello there", 5))
    line = plain.communicate(10)[0].strip()
    assert line.endswith(" emitters notice hello there") and line[:4].isdigit()
    raw = tail(running, "--count", "1", "--raw")
    send_until_done(running, raw, frame(b"just this", 6))
    assert raw.communicate(10)[0] == "just this\n"


def test_logctl_tail_filters_on_json_fields_numbers_and_regexes(running: LogdProcess) -> None:
    reader = tail(running, "-f", 'attrs.user.id == 42 && metadata.region in ["eu-west-1"] '
                  "&& /time(out)?/", "--count", "2", "--raw")
    wanted = b'{"message":"timeout","attrs":{"user":{"id":42}},"metadata":{"region":"eu-west-1"}}'
    send_until_done(running, reader, frame(wanted, 6) + frame(
        b'{"message":"timeout","attrs":{"user":{"id":"42"}},"metadata":{"region":"eu-west-1"}}',
        6) + frame(b'{"message":"ok","attrs":{"user":{"id":42}},"metadata":{"region":'
                   b'"eu-west-1"}}', 6) + frame(b"timeout 42 eu-west-1", 6))
    out, err = reader.communicate(10)
    assert reader.returncode == 0, err
    assert out.splitlines() == [wanted.decode()] * 2


def test_logctl_tail_shows_a_bad_field_filter_with_a_caret(running: LogdProcess) -> None:
    bad = logctl("--socket", sock(running), "tail", "-f", "duration_ms > slow && app == web")
    assert bad.returncode == 2, bad.stderr
    assert bad.stderr.splitlines() == [
        "logctl: logd: filter: '>' compares numbers; expected a number at column 15, "
        "found 'slow'",
        "    duration_ms > slow && app == web",
        "                  ^",
    ]


def test_logctl_tail_refuses_a_bad_filter_and_ends_when_logd_stops(
        running: LogdProcess) -> None:
    bad = logctl("--socket", sock(running), "tail", "--filter", "level >=")
    assert bad.returncode == 2, bad.stderr  # the request's fault: a usage error
    assert bad.stderr == ("logctl: logd: filter: expected a value after '>=' at column 9\n"
                          "    level >=\n"
                          "            ^\n")
    reader = tail(running)
    send_until_done_or_streaming(running, reader)
    assert running.stop() == 0
    _, err = reader.communicate(10)
    assert reader.returncode == 1 and "closed the stream" in err


def send_until_done_or_streaming(p: LogdProcess, reader: subprocess.Popen[str]) -> None:
    """Send until the tail has printed a record (it is connected)."""
    assert reader.stdout is not None
    with socket.create_connection(("127.0.0.1", p.port("emitters"))) as s:
        s.sendall(frame(b"first", 6))
        # the first line arrives once the tail is registered and a record passes
        sel = selectors.DefaultSelector()
        sel.register(reader.stdout, selectors.EVENT_READ)
        for _ in range(400):
            if sel.select(0.05):
                assert reader.stdout.readline()
                return
            s.sendall(frame(b"again", 6))
    raise AssertionError("logctl tail printed nothing")


def test_a_filter_nested_5000_deep_is_refused_in_three_short_lines(
        running: LogdProcess) -> None:
    deep = "(" * 5000 + "a" + ")" * 5000
    result = logctl("--socket", sock(running), "tail", "-f", deep)
    assert result.returncode == 2
    message, line, caret = result.stderr.splitlines()
    assert message == "logctl: logd: filter: expression nests deeper than 64 levels at column 65"
    # a window of the expression around the column, not all 10,001 characters
    assert line == "    ..." + "(" * 72 + "..."
    assert caret == " " * (4 + 3 + 64 - 24) + "^"
    assert running.alive() and stats(running)["daemon"]["control_errors"] == 0


def test_a_thousand_bad_requests_get_a_thousand_answers_and_few_log_lines(
        running: LogdProcess) -> None:
    bad = [b'{"cmd": "set_weight", "id": "ghost", "weight": 1}',
           b'{"cmd": "set_weight", "id": "ghost", "weight": "x"}',
           b'{"cmd": "set_weight"}', b"not json", b"\xff", b'{"cmd": "frobnicate"}']
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(sock(running))
        s.settimeout(30)
        s.sendall(b"".join(bad[i % len(bad)] + b"\n" for i in range(1000)))
        data = b""
        while data.count(b"\n") < 1000:
            chunk = s.recv(65536)
            assert chunk, f"logd closed the connection after {len(data.splitlines())} answers"
            data += chunk
    replies = [json.loads(line) for line in data.splitlines()]
    assert len(replies) == 1000 and not any(r["ok"] for r in replies)
    assert {r["code"] for r in replies} == {"bad_request", "not_found"}
    assert replies[0]["error"] == "no analyzer 'ghost'; see logctl analyzers"
    result = logctl("--socket", sock(running), "analyzers", "set-weight", "ghost", "-1")
    assert result.returncode == 2 and "finite and >= 0" in result.stderr
    assert stats(running)["daemon"]["control_errors"] == 0
    assert [e for e in running.logs if e.get("logger") == "logd.control"
            and e.get("level") != "info"] == []
