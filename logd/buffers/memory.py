"""The memory buffer: a bounded queue of batches with `block` or `drop_newest` when full.

Producers (the router, called from listeners) never await here: `put` is synchronous and says
whether the caller should stop reading. The single consumer (the output's writer) takes leases
of batches and acks them once written; memory counts until the ack, so the bound holds for
what is queued plus what the writer holds.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from logd.buffers.base import Buffer
from logd.config import MemoryBufferConfig
from logd.delivery import Receipt
from logd.record import Batch
from logd.stats import BufferStats

# Python keeps each payload as a bytes object in a list: about this much besides the bytes.
RECORD_OVERHEAD = 41


def batch_cost(batch: Batch) -> int:
    return batch.held_bytes + RECORD_OVERHEAD * batch.count


@dataclass
class Lease:
    batches: list[Any]
    cost: int
    records: int = field(default=0)
    # One receipt (or None) per batch, when any batch of the lease has one.
    receipts: list[Receipt | None] | None = None

    def take_receipts(self) -> list[Receipt | None] | None:
        """The receipts, for a writer that reports delivery itself later (after a flush, an
        analyzer's ACK) rather than when it acks the lease."""
        receipts, self.receipts = self.receipts, None
        return receipts


class MemoryBuffer(Buffer):
    """Bounded by `max_bytes` of payload plus per-record overhead."""

    def __init__(self, cfg: MemoryBufferConfig, owner: str) -> None:
        super().__init__(cfg, owner)
        self._queue: deque[Batch] = deque()
        self._receipts: deque[Receipt | None] = deque()  # beside _queue, batch by batch
        self._with_receipts = 0  # queued batches that have one
        self._cost = 0          # queued + leased, in bytes
        self._queued_records = 0
        self._leased_records = 0
        self._data = asyncio.Event()
        self._closed = False

    # -- producer side --

    @property
    def cost(self) -> int:
        return self._cost

    def put(self, batch: Any, receipt: Receipt | None = None) -> bool:
        """Queue a batch. Returns True when the caller should pause until `wait_writable`.

        Under drop_newest a batch that does not fit is dropped whole and counted; under block
        it is always taken (it was already read from a socket) and the caller is told to pause.
        """
        batch.compact()
        cost = batch_cost(batch)
        if not self.block and self._cost + cost > self.max_bytes:
            self.dropped_records += batch.count
            self.dropped_bytes += batch.nbytes
            if receipt is not None:
                receipt.drop(batch.count)
            return False
        self._queue.append(batch)
        self._receipts.append(receipt)
        if receipt is not None:
            self._with_receipts += 1
            receipt.accepted(batch.count)
        self._cost += cost
        self._queued_records += batch.count
        self.accepted_records += batch.count
        if self._cost > self.peak_cost:
            self.peak_cost = self._cost
        self._data.set()
        if self._cost >= self.max_bytes and self.block:
            self._writable.clear()
            return True
        return False

    # -- consumer side --

    @property
    def queued_records(self) -> int:
        return self._queued_records + self._leased_records

    @property
    def volatile_records(self) -> int:
        """Records a stop would lose: all that wait here."""
        return self.queued_records

    @property
    def queued_bytes(self) -> int:
        return self._cost

    def empty(self) -> bool:
        return not self._queue

    async def get(self, max_cost: int, timeout: float | None) -> Lease | None:
        """Up to `max_cost` of batches (at least one); None if nothing came within `timeout`."""
        if not self._queue:
            if self._closed:
                return None
            self._data.clear()
            if timeout is None:
                await self._data.wait()
            else:
                try:
                    await asyncio.wait_for(self._data.wait(), timeout)
                except TimeoutError:
                    return None
            if not self._queue:
                return None
        return self.get_nowait(max_cost)

    def get_nowait(self, max_cost: int) -> Lease | None:
        if not self._queue:
            return None
        batches: list[Any] = []
        cost = 0
        records = 0
        q = self._queue
        rq = self._receipts
        receipts: list[Receipt | None] | None = [] if self._with_receipts else None
        while q and (not batches or cost + batch_cost(q[0]) <= max_cost):
            b = q.popleft()
            r = rq.popleft()
            if receipts is not None:
                receipts.append(r)
                self._with_receipts -= r is not None
            batches.append(b)
            cost += batch_cost(b)
            records += b.count
        self._queued_records -= records
        self._leased_records += records
        return Lease(batches, cost, records, receipts)

    def ack(self, lease: Lease) -> None:
        """The writer is done with a lease: its memory no longer counts, and its records are
        delivered (unless the writer took the receipts to report that itself)."""
        if lease.receipts is not None:
            for b, r in zip(lease.batches, lease.take_receipts() or (), strict=True):
                if r is not None:
                    r.written(b.count)
        self._cost -= lease.cost
        self._leased_records -= lease.records
        if self._cost <= self.resume_below:
            self._writable.set()

    def close(self) -> None:
        """Wake paused producers for good (at shutdown nothing more is routed here)."""
        self._closed = True
        self._writable.set()
        self._data.set()

    def stats(self) -> BufferStats:
        return {"buffer": "memory"}
