"""The lifecycle every listener and output follows, and what they are built with.

`__init__` validates and does no I/O; `start()` acquires resources and fails fast (bad path,
port in use); `run()` is the one long-lived task; `drain(deadline)` stops intake and flushes
what was accepted; `close()` is idempotent and never raises.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from logd.router import Router


def _no_stats() -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class BuildContext:
    """What a component is given besides its config: where state lives, the router that
    listeners hand batches to, and the daemon's stats (for a /metrics a listener serves)."""

    state_dir: str = "."
    router: Router | None = None
    stats: Callable[[], dict[str, Any]] = field(default=_no_stats)

    def the_router(self) -> Router:
        """The router, for a listener (built without one only in tests of other parts)."""
        if self.router is None:
            from logd.router import Router
            return Router({}, {})
        return self.router


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

    def stats(self) -> Mapping[str, Any]:
        return {}


class Listener(Component):
    """Takes records in and hands them to the router."""

    kind = "listener"

    def routes_changed(self) -> None:
        """A reload changed where records go (a listener waiting for a full buffer that it
        may no longer feed reads again)."""

    def reload_tls(self) -> bool:
        """Read the certificate files again (a reload); False when there is no TLS. Raises
        logd.tls.TlsError when the new files are unusable (the old ones stay)."""
        return False


class StartError(Exception):
    """A component could not start; the message names the component and the reason."""
