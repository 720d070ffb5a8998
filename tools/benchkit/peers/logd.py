"""logd as it is in this repository: lines over TCP, one route with the scenario's filter,
the O_DIRECT file output writing raw lines."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from benchkit.peers import Running
from benchkit.rsyslog_conf import BUFFER_BYTES
from benchkit.scenarios import Scenario
from testkit.harness import REPO, LogdProcess

START_TIMEOUT = 60.0
STOP_TIMEOUT = 120.0

# One fixed file, as rsyslog's omfile: a path template ({app}) would make logd read every
# record's app. No fsync and a flush each second, as rsyslog's side.
CONFIG = """\
[daemon]
state_dir = "{dir}/state"
control_socket = "{dir}/control.sock"
stats_interval = "0s"
shutdown_timeout = "120s"

[listeners.emitters]
type = "tcp"
address = "127.0.0.1:0"
framing = "lines"

[outputs.files]
type = "file"
path = "{dir}/out/bench.log"
format = "raw"
direct_io = true
flush_interval = "1s"
rotate_bytes = 0
fdatasync = "never"
buffer = {{ type = "memory", max_bytes = {buffer}, when_full = "block" }}

[routes.kept]
match = {match}
to = ["files"]
"""


def render(workdir: Path, scenario: Scenario) -> str:
    """logd's config for a scenario (TOML; the match as a JSON-escaped string, which TOML
    reads alike)."""
    return CONFIG.format(dir=workdir, buffer=BUFFER_BYTES, match=json.dumps(scenario.logd_match))


@dataclass
class RunningLogd(Running):
    process: LogdProcess

    def stop(self) -> None:
        code = self.process.stop(timeout=STOP_TIMEOUT)
        if code != 0:
            raise RuntimeError(f"logd exited {code}: "
                               + "\n".join(self.process.raw_stderr[-5:]))


class LogdPeer:
    name = "logd"

    def missing(self) -> str | None:
        return None

    def version(self) -> str:
        def git(*args: str) -> str:
            return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True,
                                  text=True, check=False).stdout.strip()
        commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
        dirty = " (uncommitted changes)" if git("status", "--porcelain", "--", "logd") else ""
        return f"logd {commit}{dirty}"

    def start(self, workdir: Path, scenario: Scenario) -> Running:
        (workdir / "out").mkdir(parents=True, exist_ok=True)
        text = render(workdir, scenario)
        process = LogdProcess(text, workdir).start(timeout=START_TIMEOUT)
        assert process.proc is not None
        return RunningLogd(
            pid=process.proc.pid, port=process.port("emitters"), out_dir=workdir / "out",
            command=[sys.executable, "-m", "logd", "--config", str(process.config_path)],
            config_name="logd.toml", config_text=text, process=process)
