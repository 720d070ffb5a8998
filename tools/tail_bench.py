"""The tail-file benchmark (tools/bench --scenario tail-file): lines/s read from a file into
a file output, and the CPU each line costs, for logd and, beside it, rsyslog's imfile.

A file of `count` lines of `size` bytes is written first (so it is in the page cache, as a
file being written is), then renamed into the followed directory once the reader has
started: the clock and the CPU count start at the rename and stop when the output holds
every line. CPU is user + system seconds of the reader's process (psutil), all threads.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil

from testkit.harness import LogdProcess

LOGD_CONFIG = """
[daemon]
state_dir = "{dir}/state"
control_socket = "{dir}/control.sock"
stats_interval = "0s"
shutdown_timeout = "120s"

[listeners.files_in]
type = "tail"
paths = ["{dir}/in/*.log"]

[outputs.files]
type = "file"
path = "{dir}/out/tailed.log"
direct_io = true
flush_interval = "100ms"
rotate_bytes = 0
buffer = {{ max_bytes = "64MiB", when_full = "block" }}
"""

RSYSLOG_CONFIG = """
global(workDirectory="{dir}/rsyslog-state" maxMessageSize="64k")
module(load="imfile" mode="inotify")
template(name="line" type="string" string="%rawmsg%\\n")
ruleset(name="tailed") {{
  action(type="omfile" file="{dir}/out/rsyslog.log" template="line" asyncWriting="on"
         ioBufferSize="1m" flushInterval="1")
}}
input(type="imfile" file="{dir}/in/*.log" tag="app" ruleset="tailed" freshStartTail="off")
"""


def write_lines(path: Path, count: int, size: int) -> int:
    """`count` lines of `size` bytes and LF; returns the file's size."""
    block_lines = 4096
    block = b"".join(b"%012d " % n + b"x" * (size - 13) + b"\n" for n in range(block_lines))
    with open(path, "wb") as f:
        left = count
        while left:
            n = min(left, block_lines)
            f.write(block if n == block_lines else block[:n * (size + 1)])
            left -= n
    return count * (size + 1)


def _wait_for_size(path: Path, expected: int, proc: psutil.Process, what: str,
                   timeout: float = 600) -> None:
    end = time.monotonic() + timeout
    while not (path.exists() and path.stat().st_size >= expected):
        if time.monotonic() > end:
            got = path.stat().st_size if path.exists() else 0
            raise SystemExit(f"{what}: timed out with {got} of {expected} bytes written")
        if not proc.is_running():
            raise SystemExit(f"{what} exited before writing every line")
        time.sleep(0.002)


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def _peak_rss(pid: int) -> int:
    """A process's peak resident set (VmHWM), as logd's is measured."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _result(count: int, elapsed: float, cpu: float, rss: float) -> dict[str, float]:
    return {"lines_per_s": count / elapsed, "cpu_us_per_line": 1e6 * cpu / count,
            "cpu_pct": 100 * cpu / elapsed, "peak_rss_mb": rss, "seconds": elapsed}


def logd_run(workdir: Path, count: int, size: int) -> dict[str, float]:
    (workdir / "in").mkdir()
    staged = workdir / "staged.log"
    expected = write_lines(staged, count, size)
    logd = LogdProcess(LOGD_CONFIG.format(dir=workdir), workdir).start(timeout=60)
    try:
        assert logd.proc is not None
        proc = psutil.Process(logd.proc.pid)
        target = workdir / "out" / "tailed.log"
        cpu0 = _cpu(proc)
        t0 = time.perf_counter()
        os.rename(staged, workdir / "in" / "app.log")
        _wait_for_size(target, expected, proc, "logd")
        elapsed = time.perf_counter() - t0
        cpu = _cpu(proc) - cpu0
        rss = logd.peak_rss_bytes() / 2**20
    finally:
        logd.stop(timeout=180)
    if target.stat().st_size != expected:
        raise SystemExit(f"logd wrote {target.stat().st_size} bytes, expected {expected}")
    return _result(count, elapsed, cpu, rss)


def rsyslog_run(workdir: Path, count: int, size: int) -> dict[str, Any] | None:
    """The same with rsyslogd's imfile -> omfile; None when rsyslogd is not installed."""
    rsyslogd = shutil.which("rsyslogd") or ("/usr/sbin/rsyslogd"
                                            if os.path.exists("/usr/sbin/rsyslogd") else None)
    if rsyslogd is None:
        return None
    for d in ("in", "out", "rsyslog-state"):
        (workdir / d).mkdir()
    staged = workdir / "staged.log"
    expected = write_lines(staged, count, size)
    conf = workdir / "rsyslog.conf"
    conf.write_text(RSYSLOG_CONFIG.format(dir=workdir))
    pidfile = workdir / "rsyslogd.pid"
    p = subprocess.Popen([rsyslogd, "-n", "-f", str(conf), "-i", str(pidfile)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        end = time.monotonic() + 30
        while not pidfile.exists():  # written once its config is read and inputs run
            if p.poll() is not None or time.monotonic() > end:
                err = p.stderr.read().decode() if p.stderr else ""
                raise SystemExit(f"rsyslogd did not start: {err}")
            time.sleep(0.05)
        proc = psutil.Process(p.pid)
        cpu0 = _cpu(proc)
        t0 = time.perf_counter()
        os.rename(staged, workdir / "in" / "app.log")
        _wait_for_size(workdir / "out" / "rsyslog.log", expected, proc, "rsyslogd")
        elapsed = time.perf_counter() - t0
        cpu = _cpu(proc) - cpu0
        rss = _peak_rss(p.pid) / 2**20
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return _result(count, elapsed, cpu, rss)


def tail_file_run(workdir: Path, count: int, size: int) -> dict[str, Any]:
    """logd, then rsyslog's imfile if installed, on files of the same lines."""
    logd_dir, rs_dir = workdir / "logd", workdir / "rsyslog"
    logd_dir.mkdir()
    rs_dir.mkdir()
    out: dict[str, Any] = {"lines": count}
    out.update(logd_run(logd_dir, count, size))
    shutil.rmtree(logd_dir, ignore_errors=True)
    rs = rsyslog_run(rs_dir, count, size)
    if rs is not None:
        out.update({f"rsyslog_{k}": v for k, v in rs.items()})
    return out
