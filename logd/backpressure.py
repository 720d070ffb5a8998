"""The full buffers a listener waits for before it reads again.

A listener that meets a full buffer (`when_full = "block"`) stops reading and waits until
each buffer it met has room, then reads again. A reload that changes the routes ends the
wait at once: the buffers waited for may no longer be fed from this listener, and a read
that meets a full buffer stops it anew.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


class FullBuffers:
    def __init__(self, on_room: Callable[[], None]) -> None:
        self.waiting: list[Any] = []  # the full buffers, in the order they were met
        self._on_room = on_room       # called once every buffer waited for has room
        self._rerouted = asyncio.Event()
        self._waiter: asyncio.Task[None] | None = None

    def __bool__(self) -> bool:
        return bool(self.waiting)

    def hold(self, blocked: list[Any]) -> bool:
        """Wait for these buffers too; False when each was waited for already (the caller
        stopped reading then)."""
        new = [b for b in blocked if b not in self.waiting]
        if not new:
            return False
        self.waiting.extend(new)
        if self._waiter is None or self._waiter.done():
            self._waiter = asyncio.get_running_loop().create_task(self._wait())
        return True

    def routes_changed(self) -> None:
        self.waiting.clear()
        self._rerouted.set()

    def cancel(self) -> None:
        if self._waiter is not None:
            self._waiter.cancel()

    async def _wait(self) -> None:
        while self.waiting:
            writable = asyncio.ensure_future(self.waiting[0].wait_writable())
            rerouted = asyncio.ensure_future(self._rerouted.wait())
            await asyncio.wait([writable, rerouted], return_when=asyncio.FIRST_COMPLETED)
            writable.cancel()
            rerouted.cancel()
            if self._rerouted.is_set():
                self._rerouted.clear()
                continue
            self.waiting.pop(0)
        self._on_room()
