"""tools/loadgen as the sender for every tool: LF-terminated lines over TCP, as fast as the
tool reads them (TCP backpressure), with the same seed and run id for each tool so that
each receives the same records in the same order."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from benchkit.scenarios import LEVELS, SERVICES, Scenario
from testkit.harness import LOADGEN, REPO

SEED = 2002
RUN_ID = "cmp"


def loadgen_args(scenario: Scenario, port: int, *, count: int | None = None,
                 duration: float | None = None) -> list[str]:
    """loadgen's options for a scenario: `count` records, or for `duration` seconds."""
    args = ["--target", f"tcp://127.0.0.1:{port}", "--framing", "lines",
            "--payload", scenario.payload, "--services", SERVICES, "--levels", LEVELS,
            "--size", str(scenario.size), "--workers", str(scenario.workers),
            "--connections", str(scenario.connections), "--rate", "0",
            "--seed", str(SEED), "--run-id", RUN_ID, "--json"]
    if count is not None:
        args += ["--count", str(count)]
    if duration is not None:
        args += ["--duration", f"{duration:g}"]
    return args


def command(args: list[str]) -> list[str]:
    return [sys.executable, str(LOADGEN), *args]


@dataclass(frozen=True)
class Sent:
    records: int
    seconds: float


class Sender:
    """One loadgen run in the background; `wait()` returns what it sent."""

    def __init__(self, args: list[str]) -> None:
        self.args = args
        self.proc = subprocess.Popen(command(args), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, cwd=REPO)

    def wait(self, timeout: float) -> Sent:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise RuntimeError(f"loadgen did not finish within {timeout:g} s") from None
        if self.proc.returncode != 0:
            raise RuntimeError(f"loadgen failed ({self.proc.returncode}): "
                               f"{err.decode(errors='replace').strip()}")
        summary: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        return Sent(int(summary["sent"]), float(summary["seconds"]))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
