"""Several logd instances on one host: reuse_port, {instance} paths, logctl per instance, and
the template unit logd@.service."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from logd.ctl import request
from logd.linescan import COMPILED
from testkit.analyzer_client import TestAnalyzer
from testkit.harness import REPO, LogdProcess, free_port, read_all_lines, wait_for_lines
from testkit.wire import frame

# Connections a test opens before it gives up on the kernel reaching both instances: each
# goes to either by a hash of its ports, so 2 x 0.5^N is the chance of failing for nothing.
MAX_CONNECTIONS = 300



def shared_config(out: Path, tcp: int, http: int, analyzer: int) -> str:
    """One file for every instance: {instance} keeps their paths apart."""
    return f"""
[daemon]
state_dir = "{out}/{{instance}}/state"
control_socket = "{out}/{{instance}}/control.sock"
stats_interval = "0s"
shutdown_timeout = "30s"

[listeners.emitters]
type = "tcp"
address = "127.0.0.1:{tcp}"
reuse_port = true

[listeners.http]
type = "http"
address = "127.0.0.1:{http}"
reuse_port = true

[listeners.analyzers]
type = "analyzer"
address = "127.0.0.1:{analyzer}"
reuse_port = true

[outputs.files]
type = "file"
path = "{out}/{{app}}-{{instance}}.log"
flush_interval = "100ms"

[routes.all]
to = ["files"]
"""


@dataclass
class Pair:
    out: Path
    config: Path
    ports: dict[str, int]
    procs: dict[str, LogdProcess]  # by instance name

    def socket(self, instance: str) -> str:
        return str(self.out / instance / "control.sock")

    def listener(self, instance: str, name: str) -> dict:
        return request(self.socket(instance), "listeners")[name]

    def stop(self) -> None:
        for p in self.procs.values():
            assert p.stop() == 0, "\n".join(p.raw_stderr[-20:])


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    """Instances a and b of one config file, sharing the TCP, HTTP and analyzer ports."""
    out = tmp_path / "out"
    out.mkdir()
    ports = {"emitters": free_port(), "http": free_port(), "analyzers": free_port()}
    text = shared_config(out, ports["emitters"], ports["http"], ports["analyzers"])
    procs: dict[str, LogdProcess] = {}
    try:
        for name in ("a", "b"):
            workdir = tmp_path / f"run-{name}"
            workdir.mkdir()
            procs[name] = LogdProcess(text, workdir, env={"LOGD_INSTANCE": name}).start()
        for p in procs.values():
            for listener, port in ports.items():
                assert p.port(listener) == port
        yield Pair(out, procs["a"].config_path, ports, procs)
    finally:
        for p in procs.values():
            if p.alive():
                p.stop(signal.SIGKILL)


def until_both_instances(pair: Pair, connect: Callable[[int], None], listener: str,
                         counter: str) -> int:
    """Open connections (connect(i) opens the i-th) until both instances' `listener` shows
    `counter` > 0; returns how many were opened."""
    for i in range(MAX_CONNECTIONS):
        connect(i)
        if i % 10 == 9 and all(pair.listener(n, listener)[counter] > 0 for n in pair.procs):
            return i + 1
    seen = {n: pair.listener(n, listener)[counter] for n in pair.procs}
    raise AssertionError(f"{MAX_CONNECTIONS} connections did not reach both instances: {seen}")


def test_reuse_port_spreads_tcp_connections_and_each_record_lands_once(pair: Pair) -> None:
    port = pair.ports["emitters"]

    def connect(i: int) -> None:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(frame(b"record %d" % i))

    sent = until_both_instances(pair, connect, "emitters", "records")
    pair.stop()
    lines = {n: read_all_lines(pair.out, f"emitters-{n}.log") for n in pair.procs}
    assert all(lines.values()), {n: len(v) for n, v in lines.items()}
    # Every record in exactly one instance's file.
    assert Counter(lines["a"] + lines["b"]) == Counter(b"record %d" % i for i in range(sent))
    for name, p in pair.procs.items():
        stats = p.listener_stats("emitters")
        assert stats["records"] == len(lines[name])
        assert stats["accepted"] == len(lines[name])  # one record per connection


def test_reuse_port_spreads_http_connections_and_each_record_lands_once(pair: Pair) -> None:
    url = f"http://127.0.0.1:{pair.ports['http']}/api/logs"

    def connect(i: int) -> None:
        body = json.dumps({"message": f"request {i}", "app_id": "web"}).encode()
        req = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json", "Connection": "close"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 202

    sent = until_both_instances(pair, connect, "http", "records")
    pair.stop()
    messages = {n: [json.loads(line)["message"]
                    for line in read_all_lines(pair.out, f"web-{n}.log")]
                for n in pair.procs}
    assert all(messages.values()), {n: len(v) for n, v in messages.items()}
    assert Counter(messages["a"] + messages["b"]) == Counter(f"request {i}"
                                                             for i in range(sent))
    for name, p in pair.procs.items():
        stats = p.listener_stats("http")
        assert stats["records"] == len(messages[name])
        assert stats["accepted_connections"] == len(messages[name])


def test_each_analyzer_reaches_one_instance_of_a_reuse_port_analyzer_listener(
        pair: Pair) -> None:
    analyzers: list[TestAnalyzer] = []

    def in_pools() -> dict[str, int]:
        return {n: pair.listener(n, "analyzers")["connections"] for n in pair.procs}

    try:
        seen = in_pools()
        while not all(seen.values()):
            assert len(analyzers) < MAX_CONNECTIONS, f"no analyzer reached one instance: {seen}"
            analyzers.extend(TestAnalyzer(pair.ports["analyzers"], 1.0) for _ in range(10))
            # An analyzer joins a pool once logd has read its weight: wait for all of them.
            end = time.monotonic() + 10
            while sum((seen := in_pools()).values()) < len(analyzers):
                assert time.monotonic() < end, f"{len(analyzers)} analyzers, pools: {seen}"
                time.sleep(0.02)  # polling logd's counters: no event to await from outside
        # Each analyzer is in exactly one instance's pool.
        assert sum(seen.values()) == len(analyzers)
    finally:
        for a in analyzers:
            a.close()


def single_config(out: Path, listener: str, port: int, reuse_port: bool) -> str:
    kind = {"emitters": "tcp", "http": "http", "analyzers": "analyzer"}[listener]
    return f"""
[daemon]
state_dir = "{out}/state"
control_socket = "{out}/control.sock"
stats_interval = "0s"

[listeners.{listener}]
type = "{kind}"
address = "127.0.0.1:{port}"
reuse_port = {str(reuse_port).lower()}

[outputs.files]
type = "file"
path = "{out}/{{app}}.log"
"""


@pytest.mark.parametrize(("listener", "first", "second"), [
    ("emitters", False, False), ("emitters", True, False), ("emitters", False, True),
    ("http", False, False), ("http", True, False), ("analyzers", True, False)])
def test_a_second_instance_without_reuse_port_on_both_fails_to_start(
        tmp_path: Path, listener: str, first: bool, second: bool) -> None:
    port = free_port()
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    running = LogdProcess(single_config(one, listener, port, first), one).start()
    try:
        (two / "logd.toml").write_text(single_config(two, listener, port, second))
        result = subprocess.run([sys.executable, "-m", "logd", "--config", "logd.toml"],
                                capture_output=True, text=True, timeout=60, cwd=two)
        assert result.returncode == 1, result.stderr
        failed = [json.loads(line) for line in result.stderr.splitlines()
                  if '"start failed"' in line]
        assert len(failed) == 1, result.stderr
        assert re.fullmatch(rf"listeners\.{listener}: cannot listen on 127\.0\.0\.1:{port}: "
                            r".*address already in use", failed[0]["reason"], re.IGNORECASE)
        # The first keeps its port.
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        assert running.alive()
    finally:
        assert running.stop() == 0


def run_logctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "LOGD_INSTANCE"}
    return subprocess.run([sys.executable, "-m", "logd.ctl", *args], capture_output=True,
                          text=True, timeout=60, cwd=REPO, env={**base, **(env or {})})


def instance_of(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return str(json.loads(result.stdout)["daemon"]["instance"])


def test_instance_in_paths_keeps_instances_apart_and_logctl_finds_each(
        tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    # One config text for both; ports 0, so each instance has its own.
    text = f"""
[daemon]
state_dir = "{out}/{{instance}}/state"
control_socket = "{out}/{{instance}}/control.sock"
stats_interval = "0s"

[listeners.emitters]
type = "tcp"
address = "127.0.0.1:0"

[outputs.files]
type = "file"
path = "{out}/{{app}}-{{instance}}.log"
flush_interval = "100ms"
"""
    procs: dict[str, LogdProcess] = {}
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            procs[name] = LogdProcess(text, tmp_path / name,
                                      env={"LOGD_INSTANCE": name}).start()
        started = {n: p.wait_for(lambda e: e.get("msg") == "started") for n, p in procs.items()}
        assert {n: e["instance"] for n, e in started.items()} == {"a": "a", "b": "b"}
        for name, p in procs.items():
            with socket.create_connection(("127.0.0.1", p.port("emitters"))) as s:
                s.sendall(b"".join(frame(f"{name} {i}".encode()) for i in range(100)))
        config = str(procs["a"].config_path)
        # logctl reads the config as logd does: LOGD_INSTANCE, or --instance over it.
        assert instance_of(run_logctl("-c", config, "stats", "--json",
                                      env={"LOGD_INSTANCE": "a"})) == "a"
        assert instance_of(run_logctl("-c", config, "stats", "--json",
                                      env={"LOGD_INSTANCE": "b"})) == "b"
        assert instance_of(run_logctl("-c", config, "--instance", "b", "stats", "--json",
                                      env={"LOGD_INSTANCE": "a"})) == "b"
        table = run_logctl("-c", config, "-i", "b", "stats")
        assert table.returncode == 0 and table.stdout.startswith("logd@b pid "), table.stdout
        unset = run_logctl("-c", config, "stats")
        assert unset.returncode == 2
        assert "daemon.control_socket: uses {instance}, but no instance is set" in unset.stderr
    finally:
        for p in procs.values():
            assert p.stop() == 0
    for name in procs:
        assert not (out / name / "control.sock").exists()  # removed at stop
        lines = read_all_lines(out, f"emitters-{name}.log")
        assert lines == [f"{name} {i}".encode() for i in range(100)]


def test_logctl_instance_alone_reads_that_instances_file_in_etc_logd() -> None:
    missing = run_logctl("--instance", "no-such-instance", "stats")
    assert missing.returncode == 2
    assert "/etc/logd/no-such-instance.toml: cannot read config" in missing.stderr
    bad = run_logctl("--instance", "../x", "stats")
    assert bad.returncode == 2
    assert bad.stderr.startswith("logctl: --instance: expected a name"), bad.stderr


def test_check_config_names_the_keys_that_use_instance_when_none_is_set(
        tmp_path: Path) -> None:
    config = tmp_path / "shared.toml"
    config.write_text(shared_config(tmp_path, 8080, 3000, 8081))
    env = {k: v for k, v in os.environ.items() if k != "LOGD_INSTANCE"}

    def check(*args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                              timeout=60, cwd=REPO, env={**env, **(extra or {})})

    bad = check("logd", "--check-config", str(config))
    assert bad.returncode == 2
    expected = "uses {instance}, but no instance is set"
    for key in ("daemon.state_dir", "daemon.control_socket", "outputs.files.path"):
        assert f"{config}: {key}: {expected}" in bad.stderr, bad.stderr
    assert check("logd", "--check-config", str(config),
                 extra={"LOGD_INSTANCE": "1"}).returncode == 0
    assert check("logd.ctl", "--instance", "1", "check-config", str(config)).returncode == 0
    assert check("logd.ctl", "check-config", str(config)).returncode == 2


def test_a_reload_cannot_change_the_instance(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    text = single_config(out, "emitters", 0, False).replace("[daemon]",
                                                            '[daemon]\ninstance = "a"')
    p = LogdProcess(text, tmp_path).start()
    try:
        p.config_path.write_text(text.replace('instance = "a"', 'instance = "b"'))
        result = run_logctl("--socket", str(out / "control.sock"), "reload")
        assert result.returncode == 1
        assert "daemon.instance changes only with a restart" in result.stderr
        stats = request(str(out / "control.sock"), "stats")
        assert stats["daemon"]["instance"] == "a" and stats["daemon"]["reloads"] == 0
        assert stats["daemon"]["line_scan"] == ("compiled" if COMPILED else "python")
    finally:
        assert p.stop() == 0


SANDBOX = re.compile(r"(User|Group|Type|NotifyAccess|ExecReload|Restart|RestartSec|"
                     r"TimeoutStartSec|TimeoutStopSec|WatchdogSec|LimitNOFILE|UMask|"
                     r"NoNewPrivileges|Protect\w+|Private\w+|Restrict\w+|LockPersonality|"
                     r"SystemCallArchitectures|\w+DirectoryMode|WantedBy)=")


def test_template_unit_verifies_and_is_sandboxed_like_logd_service(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is needed (Debian package systemd; make test installs it)"
    template = (REPO / "systemd" / "logd@.service").read_text()
    single = (REPO / "systemd" / "logd.service").read_text()

    def settings(unit: str) -> set[str]:
        return {line for line in unit.splitlines() if SANDBOX.match(line)}

    assert settings(template) == settings(single)
    lines = set(template.splitlines())
    assert {"Environment=LOGD_INSTANCE=%i", "StateDirectory=logd/%i",
            "RuntimeDirectory=logd/%i", "LogsDirectory=logd/%i",
            "ExecStart=/usr/local/bin/logd --config /etc/logd/%i.toml",
            "ExecStartPre=/usr/local/bin/logd --check-config /etc/logd/%i.toml",
            "ReadWritePaths=/var/log/logd/%i /var/lib/logd/%i /run/logd/%i"} <= lines
    assert "systemd/logd@.service /etc/systemd/system/logd@.service" in (
        REPO / "Makefile").read_text()
    logd_bin = Path(sys.executable).parent / "logd"
    (tmp_path / "logd@.service").write_text(template.replace("/usr/local/bin/logd",
                                                             str(logd_bin)))
    # The template itself, and an instance of it (found next to it by its name).
    result = subprocess.run([analyze, "verify", str(tmp_path / "logd@.service"),
                             str(tmp_path / "logd@1.service")],
                            capture_output=True, text=True, timeout=60)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if "logd@" in line]
    assert result.returncode == 0 and problems == [], result.stdout + result.stderr


def shared_file_config(own: Path, shared: Path) -> str:
    """Two instances whose file outputs write one path, as when {instance} was forgotten."""
    return f"""
[daemon]
state_dir = "{own}/state"
control_socket = "{own}/control.sock"
stats_interval = "0s"

[listeners.lines]
type = "tcp"
address = "127.0.0.1:0"
framing = "lines"

[outputs.files]
type = "file"
path = "{shared}"
flush_interval = "50ms"

[routes.all]
to = ["files"]
"""


def send_lines(port: int, lines: list[bytes]) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"".join(line + b"\n" for line in lines))



def test_two_instances_sharing_a_file_path_never_write_it_at_once(tmp_path: Path) -> None:
    """The second waits, saying who holds the file, and writes once the first has stopped:
    every line of both once, none cut or glued."""
    shared = tmp_path / "shared.log"
    procs = []
    try:
        for name in ("a", "b"):
            own = tmp_path / name
            own.mkdir()
            procs.append(LogdProcess(shared_file_config(own, shared), own).start())
        a, b = procs
        assert a.proc is not None
        a_lines = [b"a %05d " % i + b"x" * (i % 300) for i in range(2000)]
        b_lines = [b"b %05d " % i + b"y" * (i % 300) for i in range(2000)]
        send_lines(a.port("lines"), a_lines)
        assert wait_for_lines(tmp_path, "shared.log", 2000) == a_lines
        send_lines(b.port("lines"), b_lines)
        refused = b.wait_for(lambda e: e.get("msg") == "cannot open output file; retrying")
        assert f"written by another process (pid {a.proc.pid})" in refused["error"]
        assert refused["path"] == str(shared)
        assert shared.read_bytes().splitlines() == a_lines  # b wrote nothing meanwhile
        assert a.stop() == 0
        assert wait_for_lines(tmp_path, "shared.log", 4000) == a_lines + b_lines
        assert b.stop() == 0
        assert shared.read_bytes() == b"".join(line + b"\n" for line in a_lines + b_lines)
    finally:
        for p in procs:
            if p.alive():
                p.stop(signal.SIGKILL)
