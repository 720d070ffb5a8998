"""Taps: a live copy of the records passing through, for `logctl tail`.

The router offers each batch to every tap before routing it; a tap keeps the records its
filter matches in a bounded queue that its reader (a control-socket connection) empties.
A reader that falls behind never slows logd: what does not fit is dropped and counted, and
the reader is told how many.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from logd.fields import severity_name
from logd.filters import Filter
from logd.record import Batch

MAX_RECORDS = 10_000
MAX_BYTES = 8 * 1024**2


class Tap:
    def __init__(self, flt: Filter, max_records: int = MAX_RECORDS,
                 max_bytes: int = MAX_BYTES) -> None:
        self.filter = flt
        self.max_records = max_records
        self.max_bytes = max_bytes
        self._queue: deque[tuple[float, str, int, bytes]] = deque()
        self._bytes = 0
        self.dropped = 0
        self.offered = 0
        self._ready = asyncio.Event()

    def offer(self, batch: Batch) -> None:
        picked = self.filter.select(batch)
        if not picked:
            return
        payloads = batch.payloads_for_a_look()
        sevs = batch.severity_bytes()
        q = self._queue
        for i in picked:
            p = payloads[i]
            if len(q) >= self.max_records or self._bytes + len(p) > self.max_bytes:
                self.dropped += 1
                continue
            q.append((batch.received, batch.source, sevs[i], p))
            self._bytes += len(p)
        self.offered += len(picked)
        self._ready.set()

    async def wait(self) -> None:
        await self._ready.wait()

    def take(self, limit: int = 1000) -> tuple[list[dict[str, Any]], int]:
        """Up to `limit` records as JSON-ready dicts, and how many were dropped since."""
        q = self._queue
        out: list[dict[str, Any]] = []
        while q and len(out) < limit:
            received, source, sev, payload = q.popleft()
            self._bytes -= len(payload)
            out.append({"time": received, "source": source, "level": severity_name(sev),
                        "payload": payload.decode("utf-8", "replace")})
        if not q:
            self._ready.clear()
        dropped, self.dropped = self.dropped, 0
        return out, dropped
