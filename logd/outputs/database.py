"""What the database outputs share: batching, retries, reconnects, dead letters, counters.

Batches wait in the output's buffer (memory or disk spool) until `batch_rows`, `batch_bytes`
or `batch_timeout` says to write; a write that fails for a transient reason (the server is
down, the connection broke) is retried with exponential backoff and jitter on a new
connection, forever, while the buffer holds what waits and its `when_full` applies upstream.
Rows the server refuses as data are isolated by splitting the block in halves until the bad
ones are found; those go to a dead-letter file with the reason and the rest are written, so
one bad row never blocks the stream.

A subclass says how to connect, how to write a block, how blocks combine and split, and which
errors are about the data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from dataclasses import dataclass
from typing import Any

from logd import dead_letter
from logd.component import BuildContext
from logd.config import (
    BufferConfig,
    DatabaseBufferConfig,
    component_name,
    nested,
    setting,
    to_duration,
    to_int,
    to_nonempty_str,
    to_size,
)
from logd.metrics import BATCH_RECORDS_BUCKETS, FLUSH_SECONDS_BUCKETS, Histogram
from logd.outputs.base import Output
from logd.stats import DatabaseOutputStats

log = logging.getLogger("logd.database")


@dataclass(frozen=True)
class DatabaseOutputConfig:
    """The keys every database output has, besides its own."""

    batch_rows: int = setting(10000, to_int(1), "write when this many records wait")
    batch_bytes: int = setting(8 * 1024**2, to_size(lo=1024), "... or this many bytes")
    batch_timeout: float = setting(1.0, to_duration, "... or when the oldest waited this long")
    retry_max: float = setting(30.0, to_duration, "longest pause between retries")
    dead_letter: str = setting("", lambda v: v if v == "" else to_nonempty_str(v),
                               "file for records the server refuses, with the reason "
                               "(default: STATE_DIR/NAME.dead-letter.ndjson)")
    buffer: BufferConfig = nested(DatabaseBufferConfig, DatabaseBufferConfig)  # noqa: RUF009
    name: str = component_name()


class DatabaseOutput(Output):
    server = "the database"  # for log lines: "cannot connect to ClickHouse"

    def __init__(self, cfg: Any, ctx: BuildContext | None = None) -> None:
        super().__init__(cfg.name, cfg.type, cfg.buffer, ctx)
        self.cfg = cfg
        self._draining = False
        self._connected = False
        self._giving_up = False
        self.written = 0
        self.inserts = 0
        self.errors = 0
        self.retries = 0
        self.dead_lettered = 0
        self.bytes = 0
        self.insert_hist = Histogram(FLUSH_SECONDS_BUCKETS)
        self.batch_hist = Histogram(BATCH_RECORDS_BUCKETS)
        self.insert_s_total = 0.0
        self.insert_s_max = 0.0

    # -- what a subclass provides --

    async def connect(self) -> str:
        """Connect (and create the table if asked); returns where, for the log. Raises."""
        raise NotImplementedError

    async def disconnect(self) -> None:
        raise NotImplementedError

    async def write(self, block: Any) -> int:
        """Write a block of rows; returns the bytes sent. Raises on failure."""
        raise NotImplementedError

    def combine(self, batches: list[Any]) -> Any:
        """The buffered batches of one write as one block."""
        raise NotImplementedError

    def split(self, block: Any) -> tuple[Any, Any]:
        raise NotImplementedError

    def row_dicts(self, block: Any) -> list[dict[str, Any]]:
        """A block's rows as JSON-ready dicts, for the dead-letter file."""
        raise NotImplementedError

    def is_data_error(self, e: Exception) -> bool:
        """Whether the server refused the rows themselves (not worth retrying as they are)."""
        raise NotImplementedError

    # -- shared --

    def ready(self) -> bool:
        return self._connected

    def dead_letter_path(self) -> str:
        return self.cfg.dead_letter or os.path.join(self.ctx.state_dir,
                                                    f"{self.name}.dead-letter.ndjson")

    async def _connect(self) -> None:
        delay = 0.1
        while True:
            try:
                where = await self.connect()
                self._connected = True
                log.info("connected", extra={"output": self.name, "server": where})
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.errors += 1
                self._connected = False
                log.error(f"cannot connect to {self.server}; retrying", extra={
                    "output": self.name, "error": f"{type(e).__name__}: {e}",
                    "retry_in_s": round(delay, 2)})
                await self.disconnect()
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self.cfg.retry_max)

    async def _drop_connection(self) -> None:
        self._connected = False
        with contextlib.suppress(Exception):
            await self.disconnect()

    async def run(self) -> None:
        batches: list[Any] = []
        leases = []
        rows = size = 0
        first_at = 0.0
        while True:
            if not self._connected:
                await self._connect()
            # Idle, the writer sleeps until a batch comes (a stop wakes it too); with batches
            # waiting, until they are due.
            wait = max(0.0, self.cfg.batch_timeout - (time.monotonic() - first_at)) \
                if batches else None
            lease = await self.buffer.get(self.cfg.batch_bytes, timeout=wait)
            if lease is not None:
                if not batches:
                    first_at = time.monotonic()
                for b in lease.batches:
                    batches.append(b)
                    rows += b.count
                    size += b.nbytes
                leases.append(lease)
            due = batches and (rows >= self.cfg.batch_rows or size >= self.cfg.batch_bytes
                               or time.monotonic() - first_at >= self.cfg.batch_timeout
                               or (self._draining and self.buffer.empty()))
            if due:
                await self._write_until_done(self.combine(batches))
                for done in leases:
                    self.buffer.ack(done)
                batches, leases, rows, size = [], [], 0, 0
            if self._draining and self.buffer.empty() and not batches:
                return

    async def _write_until_done(self, block: Any) -> None:
        """Write, retrying transient failures forever (backoff, jitter); data errors split
        the block until the bad rows are found, and those go to the dead-letter file."""
        delay = 0.1
        while True:
            if not self._connected:
                await self._connect()
            try:
                await self._write(block)
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.errors += 1
                if self.is_data_error(e):
                    await self._isolate(block, e)
                    return
                self.retries += 1
                log.error("insert failed; retrying", extra={
                    "output": self.name, "rows": block.count,
                    "error": f"{type(e).__name__}: {e}", "retry_in_s": round(delay, 2)})
                await self._drop_connection()
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self.cfg.retry_max)

    async def _write(self, block: Any) -> None:
        t0 = time.perf_counter()
        sent = await self.write(block)
        took = time.perf_counter() - t0
        self.insert_hist.observe(took)
        self.batch_hist.observe(block.count)
        self.insert_s_total += took
        self.insert_s_max = max(self.insert_s_max, took)
        self.inserts += 1
        self.written += block.count
        self.bytes += sent

    async def _isolate(self, block: Any, error: Exception) -> None:
        if block.count == 1:
            self._dead_letter(block, error)
            return
        for part in self.split(block):
            try:
                await self._write(part)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if not self.is_data_error(e):
                    await self._write_until_done(part)
                else:
                    await self._isolate(part, e)

    def _dead_letter(self, block: Any, error: Exception) -> None:
        self.dead_lettered += block.count
        path = self.dead_letter_path()
        reason = f"{type(error).__name__}: {error}"
        try:
            dead_letter.append(path, ({"reason": reason, "row": row}
                                      for row in self.row_dicts(block)))
        except OSError as e:
            log.error("cannot write the dead-letter file; refused row lost", extra={
                "output": self.name, "path": path, "error": str(e), "reason": reason})
            return
        log.error(f"row refused by {self.server}; written to the dead-letter file",
                  extra={"output": self.name, "path": path, "error": str(error)})

    async def drain(self, deadline: float) -> None:
        self._draining = True
        self.buffer.close()

    def give_up(self) -> None:
        """Past the shutdown deadline: close() lets go of the connection without waiting."""
        self._giving_up = True

    async def close(self) -> None:
        await self._drop_connection()

    def stats(self) -> DatabaseOutputStats:
        out: DatabaseOutputStats = {
            **super().stats(),
            "written": self.written,
            "bytes": self.bytes,
            "flushes": self.inserts,
            "errors": self.errors,
            "retries": self.retries,
            "dead_lettered": self.dead_lettered,
            "connected": self._connected,
            "avg_flush_ms": 1000 * self.insert_s_total / self.inserts if self.inserts else 0.0,
            "max_flush_ms": 1000 * self.insert_s_max,
            "flush_seconds": self.insert_hist.snapshot(),
            "batch_records": self.batch_hist.snapshot(),
        }
        return out
