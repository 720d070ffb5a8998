"""What the loadgen tests share: a Config made by loadgen's own option parsing, a clock the
senders' schedule runs on in tests, and the state the parent shares with them."""

from __future__ import annotations

import multiprocessing

from loadgenkit.cli import build_parser, make_config
from loadgenkit.config import Config
from loadgenkit.shared import Shared


def config(*args: str) -> Config:
    """The Config `tools/loadgen ARGS` would run with (seed and run id fixed)."""
    return make_config(build_parser().parse_args(["--seed", "7", "--run-id", "t", *args]))


class FakeClock:
    """monotonic() and sleep() of a sender under test: time passes only when it sleeps, or
    when a test says so (a slow server)."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        # A real sleep always takes some time; without that, a sleep shorter than the
        # clock's float resolution would leave it where it was, and a sender would spin.
        self.t += max(seconds, 1e-6)


def shared_state(cfg: Config, clock: FakeClock, lead: float = 0.05) -> Shared:
    """The parent's side of a run about to start: every sender starts `lead` from now."""
    shared = Shared(multiprocessing.get_context("fork"), cfg.total_connections)
    shared.start.value = clock.t + lead
    return shared
