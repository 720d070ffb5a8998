"""logd as a real process for a test: temp dir, port 0, logs parsed, clean stop; and the
command-line tools (loadgen, logctl) the tests drive it with."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / "tools"
LOADGEN = TOOLS / "loadgen"


class LogLines:
    """What logd's log says, for a logd with a `logs` list of its JSON log lines."""

    logs: list[dict[str, Any]]

    def _log_snapshot(self) -> list[dict[str, Any]]:
        return list(self.logs)

    def entries(self, msg: str) -> list[dict[str, Any]]:
        """The log entries whose message starts with `msg`."""
        return [e for e in self._log_snapshot() if e.get("msg", "").startswith(msg)]

    def listener_stats(self, name: str) -> dict[str, Any]:
        """The last "listener stats" line of `name` (logd logs them at its stop)."""
        found = [e for e in self.entries("listener stats") if e.get("listener") == name]
        assert found, f"no listener stats logged for {name}"
        return found[-1]

    def metrics(self, output: str) -> dict[str, float]:
        """The last METRICS line of `output`, as numbers by field name."""
        found = [e for e in self.entries("METRICS:") if e.get("output") == output]
        assert found, f"no METRICS line for {output}"
        return parse_metrics_line(found[-1]["msg"])


class LogdProcess(LogLines):
    """logd as a subprocess; its JSON log lines are collected as they arrive."""

    def __init__(self, config: str, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.env = {**os.environ, **(env or {})}
        self.workdir = workdir
        self.config_path = workdir / "logd.toml"
        self.config_path.write_text(config)
        self.proc: subprocess.Popen[bytes] | None = None
        self.logs: list[dict[str, Any]] = []
        self.raw_stderr: list[str] = []
        self._changed = threading.Condition()
        self._reader: threading.Thread | None = None

    def start(self, timeout: float = 15.0) -> LogdProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "logd", "--config", str(self.config_path)],
            cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=self.env,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.wait_for(lambda e: e.get("msg") == "started", timeout)
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._changed:
                self.raw_stderr.append(line)
                with contextlib.suppress(ValueError):
                    self.logs.append(json.loads(line))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 15.0,
                 count: int = 1) -> dict[str, Any]:
        """The `count`-th log entry matching `pred` (the first, by default), waiting for it;
        fails if logd exits first."""
        end = time.monotonic() + timeout
        seen = matched = 0
        with self._changed:
            while True:
                for entry in self.logs[seen:]:
                    if pred(entry):
                        matched += 1
                        if matched == count:
                            return entry
                seen = len(self.logs)
                assert self.proc is not None
                if self.proc.poll() is not None and not (self._reader and
                                                         self._reader.is_alive()):
                    raise AssertionError("logd exited ({}):\n{}".format(
                        self.proc.returncode, "\n".join(self.raw_stderr[-30:])))
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError("timed out waiting for a log entry; last lines:\n"
                                         + "\n".join(self.raw_stderr[-30:]))
                self._changed.wait(min(left, 0.5))

    def port(self, listener: str) -> int:
        entry = self.wait_for(lambda e: e.get("msg") == "listening"
                              and e.get("listener") == listener)
        return int(entry["port"])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"logd did not stop within {timeout}s") from None
        if self._reader is not None:
            self._reader.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return code

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process (all its threads) so far, from /proc."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_bytes(self) -> int:
        """The process's peak resident set (VmHWM)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM in /proc/PID/status")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _log_snapshot(self) -> list[dict[str, Any]]:
        with self._changed:
            return list(self.logs)


def parse_metrics_line(line: str) -> dict[str, float]:
    import re
    out: dict[str, float] = {}
    for key, value in re.findall(r"(\w+): ([0-9.]+)", line):
        out[key] = float(value)
    return out


def run_loadgen(*args: str, timeout: float = 120.0) -> dict[str, Any]:
    """tools/loadgen with --json; returns its summary (fails the test on a non-zero exit)."""
    proc = subprocess.run([sys.executable, str(LOADGEN), "--json", *args],
                          capture_output=True, timeout=timeout, cwd=REPO)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


def env_for_testkit() -> dict[str, str]:
    """The environment of a Python subprocess (a test's driver script) that imports testkit:
    tools/ on its PYTHONPATH, as pytest puts it on the tests' path."""
    inherited = os.environ.get("PYTHONPATH")
    path = str(TOOLS) if not inherited else f"{TOOLS}{os.pathsep}{inherited}"
    return {**os.environ, "PYTHONPATH": path}


def free_port() -> int:
    """A loopback port free now (for configs that need it before logd starts)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_lines(directory: Path, prefix: str, count: int,
                   timeout: float = 60.0) -> list[bytes]:
    """read_all_lines, once `count` lines are there (or at the timeout): another process
    writes them, so they are looked at every 50 ms (no event to await)."""
    end = time.monotonic() + timeout
    while True:
        lines = read_all_lines(directory, prefix)
        if len(lines) >= count or time.monotonic() > end:
            return lines
        time.sleep(0.05)


def read_all_lines(directory: Path, prefix: str) -> list[bytes]:
    """Every line of every file (current and rotated) whose name starts with `prefix`."""
    lines: list[bytes] = []
    for path in sorted(directory.iterdir()):
        if path.name.startswith(prefix):
            data = path.read_bytes()
            assert data == b"" or data.endswith(b"\n"), f"{path.name} ends mid-record"
            lines.extend(data.split(b"\n")[:-1])
    return lines


def logctl(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run logctl (as `python -m logd.ctl`) and return its result, whatever the exit code."""
    return subprocess.run([sys.executable, "-m", "logd.ctl", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


def post_records(p: LogdProcess, records: list[dict[str, Any]],
                 listener: str = "http") -> dict[str, Any]:
    """POST a JSON array to logd's /api/logs; the 202 answer's body (anything else fails)."""
    import urllib.request
    req = urllib.request.Request(f"http://127.0.0.1:{p.port(listener)}/api/logs",
                                 data=json.dumps(records).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 202
        return json.loads(r.read())
