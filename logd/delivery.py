"""Completion tracking: what became of the records of one batch, destination by destination.

A listener that must answer for its records (HTTP's 202, a Kafka input's offset commit)
hands the router a batch with a `Receipt`. The router says how many records go where
(`expect`); each destination then reports, record counts at a time:

- `accepted`: its buffer holds them as its type promises (a memory buffer: queued; a disk
  spool: written to the spool);
- `secured`: a crash of logd can no longer lose them (a disk spool: written to it; a memory
  buffer: once delivered) -- what a Kafka input waits for before it commits an offset;
- `delivered`: its writer is done with them for good (a file output wrote and flushed them, a
  database acknowledged the insert/COPY/produce or its dead-letter file took them, an
  analyzer ACKed them);
- `dropped`: a `drop_newest` buffer had no room (counted there too);
- `refused`: the destination could not take them now and did not keep them (a disk spool
  that cannot be written), for a caller that said it can answer "retry later" (HTTP);
- `lost`: something failed that will not be retried (an output's intake raised).

Each of the last two also counts as accepted and delivered: nothing more will happen to those
records. Batches without a receipt (TCP, where backpressure is the socket) cost nothing here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


class Receipt:
    __slots__ = ("_accepted", "_delivered", "_secured", "dropped", "expected", "lost",
                 "refusable", "refused", "unaccepted", "undelivered", "unsecured")

    def __init__(self, refusable: bool = False) -> None:
        # Whether the caller can take a refusal (answer "retry later") rather than have a
        # destination hold on to what it cannot store.
        self.refusable = refusable
        self.refused = 0
        self.expected = 0
        self.unaccepted = 0
        self.unsecured = 0
        self.undelivered = 0
        self.dropped = 0
        self.lost = 0
        self._accepted: asyncio.Event | None = None
        self._secured: asyncio.Event | None = None
        self._delivered: asyncio.Event | None = None

    def expect(self, n: int) -> None:
        """`n` more records were routed to a destination."""
        self.expected += n
        self.unaccepted += n
        self.unsecured += n
        self.undelivered += n

    def accepted(self, n: int) -> None:
        self.unaccepted -= n
        if self.unaccepted <= 0 and self._accepted is not None:
            self._accepted.set()

    def secured(self, n: int) -> None:
        self.unsecured -= n
        if self.unsecured <= 0 and self._secured is not None:
            self._secured.set()

    def delivered(self, n: int) -> None:
        """Done with for good; callers report `accepted` (and `secured`) for the same
        records first."""
        self.undelivered -= n
        if self.undelivered <= 0 and self._delivered is not None:
            self._delivered.set()

    def written(self, n: int) -> None:
        """A writer of a volatile buffer is done with them: secured and delivered at once."""
        self.secured(n)
        self.delivered(n)

    def drop(self, n: int) -> None:
        self.dropped += n
        self.accepted(n)
        self.written(n)

    def refuse(self, n: int) -> None:
        self.refused += n
        self.accepted(n)
        self.written(n)

    def lose(self, n: int) -> None:
        self.lost += n
        self.accepted(n)
        self.written(n)

    @property
    def is_accepted(self) -> bool:
        return self.unaccepted <= 0

    @property
    def is_secured(self) -> bool:
        return self.unsecured <= 0

    @property
    def is_delivered(self) -> bool:
        return self.undelivered <= 0

    async def wait_accepted(self, timeout: float) -> bool:
        """Whether every destination accepted the records within `timeout` seconds."""
        if self.unaccepted <= 0:
            return True
        if self._accepted is None:
            self._accepted = asyncio.Event()
        return await _wait(self._accepted, timeout)

    async def wait_secured(self, timeout: float) -> bool:
        """Whether every destination secured the records within `timeout` seconds."""
        if self.unsecured <= 0:
            return True
        if self._secured is None:
            self._secured = asyncio.Event()
        return await _wait(self._secured, timeout)

    async def wait_delivered(self, timeout: float) -> bool:
        """Whether every destination delivered the records within `timeout` seconds."""
        if self.undelivered <= 0:
            return True
        if self._delivered is None:
            self._delivered = asyncio.Event()
        return await _wait(self._delivered, timeout)


async def _wait(event: asyncio.Event, timeout: float) -> bool:
    try:
        await asyncio.wait_for(event.wait(), max(0.0, timeout))
    except TimeoutError:
        return event.is_set()
    return True


Receipts = list[tuple[Receipt, int]]  # (receipt, records) pairs of a lease


def deliver(receipts: Iterable[tuple[Receipt, int]]) -> None:
    """Report records written by the writer of a volatile buffer: secured and delivered."""
    for receipt, n in receipts:
        receipt.written(n)


def lose(receipts: Iterable[tuple[Receipt, int]]) -> None:
    for receipt, n in receipts:
        receipt.lose(n)
