"""A byte budget shared by concurrent requests: what HTTP reads and parses at once is bounded.

Parsing a JSON body takes several times its size in Python objects; without a bound, a few
large bodies at once take the process's memory. A request takes its share before reading and
gives it back once its records are in the buffers; a request that finds no room waits, in
arrival order, up to its deadline (then it is answered 503 and retried by its client).
"""

from __future__ import annotations

import asyncio
from collections import deque


class ByteBudget:
    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self.waited = 0     # requests that had to wait for room
        self.timed_out = 0  # ... and got none in time
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def take(self, n: int, timeout: float) -> int:
        """Take `n` bytes (at most the whole budget), waiting up to `timeout` seconds.
        Returns what was taken (give it back with `give`), or 0 when there was no room."""
        n = max(1, min(n, self.total))
        if not self._waiters and self.used + n <= self.total:
            self.used += n
            return n
        self.waited += 1
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        item = (n, fut)
        self._waiters.append(item)
        try:
            await asyncio.wait({fut}, timeout=max(0.0, timeout))
        except asyncio.CancelledError:
            self._withdraw(item)
            raise
        if fut.done():
            return n
        self._withdraw(item)
        self.timed_out += 1
        return 0

    def give(self, n: int) -> None:
        self.used -= n
        self._grant()

    def _withdraw(self, item: tuple[int, asyncio.Future[None]]) -> None:
        n, fut = item
        if fut.done():  # granted meanwhile: it was never used
            self.give(n)
            return
        fut.cancel()
        self._waiters.remove(item)
        self._grant()  # a smaller request behind it may fit now

    def _grant(self) -> None:
        while self._waiters and self.used + self._waiters[0][0] <= self.total:
            n, fut = self._waiters.popleft()
            self.used += n
            fut.set_result(None)
