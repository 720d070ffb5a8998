"""What every buffer between the router and a writer is: bounded, with one `when_full` policy
and one hysteresis, whatever it keeps its batches in.

Producers (the router, called from listeners) never await: `put` is synchronous and says
whether the caller should stop reading (`block`, and the bound was reached) until
`wait_writable`; producers resume once the buffer is down to 3/4 of its bound, so they do
not flap around it. Under `drop_newest` a batch that does not fit is dropped and counted.
The one consumer (the destination's writer) takes leases of batches with `get` and `ack`s
each once written.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import Any

from logd.config import MemoryBufferConfig
from logd.delivery import Receipt
from logd.stats import BufferStats


class Buffer(ABC):
    persistent = False  # whether what it holds outlives the process (a disk spool)
    entry_bytes = 0     # persistent: the most payload one stored entry should hold

    def __init__(self, cfg: MemoryBufferConfig, owner: str) -> None:
        self.owner = owner
        self._bound(cfg)
        self._writable = asyncio.Event()
        self._writable.set()
        self.accepted_records = 0
        self.dropped_records = 0
        self.dropped_bytes = 0
        self.peak_cost = 0

    def _bound(self, cfg: MemoryBufferConfig) -> None:
        self.max_bytes = cfg.max_bytes
        self.block = cfg.when_full == "block"
        self.resume_below = cfg.max_bytes * 3 // 4

    def reconfigure(self, cfg: Any) -> None:
        """New settings for the same buffer (a reload changed them)."""
        self._bound(cfg)
        self._update_writable()

    # -- the bound --

    @property
    @abstractmethod
    def cost(self) -> int:
        """The bytes counted against `max_bytes`."""

    @property
    def full(self) -> bool:
        return self.cost >= self.max_bytes

    def _update_writable(self) -> None:
        """Pause producers at the bound (block); let them go at 3/4 of it."""
        if self.block and self.full:
            self._writable.clear()
        elif self.cost <= self.resume_below or not self.block:
            self._writable.set()

    async def wait_writable(self) -> None:
        await self._writable.wait()

    # -- what each kind provides --

    @abstractmethod
    def put(self, batch: Any, receipt: Receipt | None = None) -> bool:
        """Take a batch; True when the caller should pause until `wait_writable`."""

    @abstractmethod
    async def get(self, max_cost: int, timeout: float | None) -> Any:
        """Up to `max_cost` of batches (at least one) as a lease; None if none came."""

    @abstractmethod
    def ack(self, lease: Any) -> None:
        """The writer is done with a lease."""

    @abstractmethod
    def empty(self) -> bool: ...

    @property
    @abstractmethod
    def queued_records(self) -> int: ...

    @property
    @abstractmethod
    def queued_bytes(self) -> int: ...

    @property
    @abstractmethod
    def volatile_records(self) -> int:
        """Records a stop would lose: those only in memory."""

    @property
    def problem(self) -> str | None:
        """What keeps the buffer from keeping its promises now (None: nothing)."""
        return None

    def open(self, directory: str, kind: str = "") -> None:  # noqa: B027 (a hook: nothing by default)
        """Take the storage at `directory` (a disk spool); nothing for a memory buffer."""

    def close(self) -> None:  # noqa: B027 (a hook: nothing by default)
        """Nothing more is put (shutdown): wake paused producers and a waiting writer."""

    def rewind(self) -> None:  # noqa: B027 (a hook: nothing by default)
        """Read again what the writer held unacknowledged (a new writer takes over)."""

    def keep_held(self) -> None:  # noqa: B027 (a hook: nothing by default)
        """At a stop: what is only in memory goes to storage if it can."""

    def release(self) -> None:  # noqa: B027 (a hook: nothing by default)
        """Let go of any storage (the process stops, or the output is gone)."""

    def stats(self) -> BufferStats:
        return {}
