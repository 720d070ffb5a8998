"""rsyslog from the system (Debian's package): its own config, pid file and work folder in
the run's folder; never the system's rsyslog.conf or service."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from benchkit.peers import Running
from benchkit.rsyslog_conf import RsyslogSetup, render
from benchkit.scenarios import Scenario

PACKAGE_HINT = ("rsyslogd not found: install Debian's rsyslog package with `make bench-deps` "
                "(apt-get install rsyslog)")
START_TIMEOUT = 15.0
STOP_TIMEOUT = 120.0


def rsyslogd_path() -> str | None:
    return shutil.which("rsyslogd") or next(
        (p for p in ("/usr/sbin/rsyslogd", "/sbin/rsyslogd") if Path(p).exists()), None)


def free_port() -> int:
    """A loopback port free now (rsyslog cannot listen on port 0 and report it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def check_config(rsyslogd: str, conf: Path) -> str | None:
    """rsyslogd's own validation (-N1) of a config: None when valid, else its complaint."""
    done = subprocess.run([rsyslogd, "-N1", "-f", str(conf)], capture_output=True,
                          text=True, timeout=30, check=False)
    if done.returncode == 0:
        return None
    return (done.stderr or done.stdout).strip()


@dataclass
class RunningRsyslog(Running):
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise RuntimeError(f"rsyslogd did not stop within {STOP_TIMEOUT:g} s") from None
        if code != 0:
            raise RuntimeError(f"rsyslogd exited {code}: {self.log_path.read_text()[-500:]}")


class RsyslogPeer:
    name = "rsyslog"

    def missing(self) -> str | None:
        return None if rsyslogd_path() else PACKAGE_HINT

    def version(self) -> str:
        path = rsyslogd_path()
        if path is None:
            return "rsyslogd: not installed"
        out = subprocess.run([path, "-v"], capture_output=True, text=True, check=False).stdout
        # "rsyslogd  8.2302.0 (aka 2023.02) compiled with:" and the feature list below it
        first = out.splitlines()[0] if out else ""
        return " ".join(first.replace("compiled with:", "").split()) or "rsyslogd: unknown"

    def start(self, workdir: Path, scenario: Scenario) -> Running:
        rsyslogd = rsyslogd_path()
        if rsyslogd is None:
            raise RuntimeError(PACKAGE_HINT)
        out_dir, work = workdir / "out", workdir / "work"
        out_dir.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        port = free_port()
        text = render(RsyslogSetup(port=port, out_file=out_dir / "bench.log", work_dir=work,
                                   condition=scenario.rsyslog_match,
                                   parse_json=scenario.parses_json,
                                   record_bytes=scenario.size + 1))
        conf = workdir / "rsyslog.conf"
        conf.write_text(text)
        problem = check_config(rsyslogd, conf)
        if problem:
            raise RuntimeError(f"rsyslogd refuses {conf}: {problem}")
        log_path = workdir / "rsyslogd.log"
        cmd = [rsyslogd, "-n", "-f", str(conf), "-i", str(workdir / "rsyslogd.pid")]
        with open(log_path, "wb") as log:
            process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                       cwd=workdir)
        running = RunningRsyslog(pid=process.pid, port=port, out_dir=out_dir, command=cmd,
                                 config_name="rsyslog.conf", config_text=text,
                                 process=process, log_path=log_path)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"rsyslogd exited {process.returncode} at start: "
                                   f"{log_path.read_text()[-500:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return running
            except OSError:
                if time.monotonic() > deadline:
                    running.stop()
                    raise RuntimeError(f"rsyslogd did not listen on port {port} within "
                                       f"{START_TIMEOUT:g} s") from None
                time.sleep(0.05)
