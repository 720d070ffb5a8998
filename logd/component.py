"""The lifecycle every listener and output follows.

`__init__` validates and does no I/O; `start()` acquires resources and fails fast (bad path,
port in use); `run()` is the one long-lived task; `drain(deadline)` stops intake and flushes
what was accepted; `close()` is idempotent and never raises.
"""

from __future__ import annotations

from typing import Any


class Component:
    kind = "component"

    def __init__(self, name: str) -> None:
        self.name = name

    async def start(self) -> None:
        """Acquire resources; raise StartError with a reason an operator can act on."""

    async def run(self) -> None:
        """The long-lived work; returns when drained or cancelled."""

    async def drain(self, deadline: float) -> None:
        """Stop intake and finish what was accepted, by `deadline` (loop time)."""

    async def close(self) -> None:
        """Release everything; safe to call twice and after a failed start."""

    def stats(self) -> dict[str, Any]:
        return {}


class StartError(Exception):
    """A component could not start; the message names the component and the reason."""
