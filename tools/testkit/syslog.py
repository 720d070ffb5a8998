"""Syslog for tests and the bench: a logd config with a syslog listener, and a private
rsyslogd that forwards to it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


def syslog_file_config(out: Path, *, transport: str = "tcp", path: str = "{app}.log",
                       fmt: str = "json", listener_extra: str = "", extra: str = "") -> str:
    """One syslog listener, "syslog", on port 0 and one file output, "files", under `out`."""
    return f"""
[daemon]
state_dir = "{out}/state"
control_socket = "{out}/control.sock"
shutdown_timeout = "30s"
stats_interval = "0s"

[listeners.syslog]
type = "syslog"
transport = "{transport}"
address = "127.0.0.1:0"
{listener_extra}

[outputs.files]
type = "file"
path = "{out}/{path}"
format = "{fmt}"
flush_interval = "100ms"
{extra}
"""


class Rsyslog:
    """rsyslogd of its own (config, pid file, work dir in `workdir`), in the foreground,
    reading an imuxsock-free input: it takes messages on a UDP port of its own and forwards
    them to `target_port` over TCP with `framing` ("octet-counted" or "traditional")."""

    def __init__(self, workdir: Path, target_port: int, framing: str,
                 protocol: str = "tcp",
                 template: str = "RSYSLOG_SyslogProtocol23Format") -> None:
        self.workdir = workdir
        self.target_port = target_port
        self.framing = framing
        self.protocol = protocol
        self.template = template
        self.proc: subprocess.Popen[bytes] | None = None
        self.input_port = 0

    def start(self, input_port: int) -> None:
        self.input_port = input_port
        work = self.workdir / "rsyslog-work"
        work.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "rsyslog.conf"
        framing = (f'TCP_Framing="{self.framing}"' if self.protocol == "tcp" else "")
        conf.write_text(f"""
global(workDirectory="{work}")
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="{input_port}")
*.* action(type="omfwd" target="127.0.0.1" port="{self.target_port}"
           protocol="{self.protocol}" {framing}
           template="{self.template}")
""")
        rsyslogd = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
        self.proc = subprocess.Popen(
            [rsyslogd, "-n", "-f", str(conf), "-i", str(self.workdir / "rsyslog.pid")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Until rsyslogd's UDP input is bound (the kernel's socket table shows the port)."""
        end = time.monotonic() + timeout
        while not _udp_bound(self.input_port):
            assert self.proc is not None
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode() if self.proc.stdout else ""
                raise AssertionError(f"rsyslogd exited {self.proc.returncode}: {out}")
            assert time.monotonic() < end, "rsyslogd did not start"
            time.sleep(0.05)  # a port being bound by another process: polled

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _udp_bound(port: int) -> bool:
    want = f":{port:04X}"
    with open("/proc/net/udp") as f:
        return any(line.split()[1].endswith(want) for line in f.readlines()[1:])
