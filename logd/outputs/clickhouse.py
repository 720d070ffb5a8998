"""The ClickHouse output (native protocol, asynch): seed 001's table, batched inserts.

Rows are batched by count, bytes or time; an insert that fails for a network or server-side
transient reason is retried with exponential backoff and jitter, reconnecting as needed, while
the buffer holds what waits (its `when_full` applies upstream). Rows ClickHouse refuses as
data are isolated by splitting the batch and go to a dead-letter file with the reason, so one
bad row never blocks the stream.

The table works on ClickHouse 18.16 (Debian's) and current releases: plain String columns,
DateTime (no DateTime64, no LowCardinality), a day partition and ORDER BY (app_id, created_at).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

import orjson

from logd.config import (
    BufferConfig,
    component_name,
    nested,
    one_of,
    setting,
    to_bool,
    to_duration,
    to_int,
    to_nonempty_str,
    to_size,
)
from logd.outputs.base import Output
from logd.outputs.clickhouse_columns import COLUMNS, ColumnBatch, Row, join_columns
from logd.record import Batch

log = logging.getLogger("logd.clickhouse")

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Server error codes that mean "this data is wrong", not "try again later".
_DATA_ERRORS = {6, 26, 27, 32, 33, 38, 41, 53, 69, 70, 72, 117, 131, 377, 395}


def _to_url(v: Any) -> str:
    text = to_nonempty_str(v)
    u = urlparse(text)
    if u.scheme != "clickhouse" or not u.hostname:
        raise ValueError(f"expected clickhouse://user[:password]@host[:port]/database, got {v!r}")
    return text


def _to_ident(v: Any) -> str:
    text = to_nonempty_str(v)
    if not _IDENT.match(text):
        raise ValueError(f"expected a plain table name (letters, digits, _), got {v!r}")
    return text


@dataclass(frozen=True)
class ClickHouseOutputConfig:
    type: str = setting("clickhouse", one_of("clickhouse"))
    url: str = setting("clickhouse://default@127.0.0.1:9000/logs_db", _to_url,
                       "clickhouse://user[:password]@host[:port]/database (native protocol)")
    table: str = setting("logs", _to_ident, "table in that database")
    create: bool = setting(True, to_bool, "create the database and table if absent")
    batch_rows: int = setting(10000, to_int(1), "insert when this many rows wait")
    batch_bytes: int = setting(8 * 1024**2, to_size(lo=1024), "... or this many bytes")
    batch_timeout: float = setting(1.0, to_duration, "... or when the oldest waited this long")
    retry_max: float = setting(30.0, to_duration, "longest pause between insert retries")
    dead_letter: str = setting("", lambda v: v if v == "" else to_nonempty_str(v),
                               "file for rows ClickHouse refuses (default: "
                               "STATE_DIR/NAME.dead-letter.ndjson)")
    buffer: BufferConfig = nested(BufferConfig, BufferConfig)  # noqa: RUF009
    name: str = component_name()


class ClickHouseOutput(Output):
    def __init__(self, cfg: ClickHouseOutputConfig) -> None:
        super().__init__(cfg.name, cfg.buffer)
        self.cfg = cfg
        u = urlparse(cfg.url)
        self._conn_args = {"host": u.hostname, "port": u.port or 9000,
                           "user": u.username or "default", "password": u.password or "",
                           "database": "default"}
        self.database = (u.path or "/").strip("/") or "default"
        self.table_ref = f"{self.database}.{cfg.table}"
        self.state_dir = "."
        self._conn: Any = None
        self._send: Any = None  # clickhouse_native.insert, once started
        self._draining = False
        self._connected = False
        self.written = 0
        self.inserts = 0
        self.errors = 0
        self.retries = 0
        self.dead_lettered = 0
        self.bytes = 0
        from logd.metrics import BATCH_RECORDS_BUCKETS, FLUSH_SECONDS_BUCKETS, Histogram
        self.insert_hist = Histogram(FLUSH_SECONDS_BUCKETS)
        self.batch_hist = Histogram(BATCH_RECORDS_BUCKETS)
        self.insert_s_total = 0.0
        self.insert_s_max = 0.0

    def submit(self, batch: Batch) -> bool:
        # Encoded now, while an HTTP batch's parsed objects are at hand: the buffer then holds
        # compact columns, and inserting is one join per column.
        return self.buffer.put(ColumnBatch.of_batch(batch))  # type: ignore[arg-type]

    def ready(self) -> bool:
        return self._connected

    def dead_letter_path(self) -> str:
        return self.cfg.dead_letter or os.path.join(self.state_dir,
                                                    f"{self.name}.dead-letter.ndjson")

    async def start(self) -> None:
        # asynch is imported here, not with the config: checking a config needs no driver.
        from logd.outputs.clickhouse_native import insert
        self._send = insert

    # -- connection --

    async def _connect(self) -> None:
        from asynch import Connection
        delay = 0.1
        while True:
            try:
                conn = Connection(**self._conn_args)
                await conn.connect()
                if self.cfg.create:
                    async with conn.cursor() as cur:
                        await cur.execute(f"CREATE DATABASE IF NOT EXISTS {self.database}")
                        await cur.execute(
                            f"CREATE TABLE IF NOT EXISTS {self.table_ref} ("
                            "app_id String, level String, message String, source String, "
                            "created_at DateTime, metadata String"
                            ") ENGINE = MergeTree() PARTITION BY toYYYYMMDD(created_at) "
                            "ORDER BY (app_id, created_at)")
                self._conn = conn
                self._connected = True
                log.info("connected", extra={"output": self.name, "host": self._conn_args["host"],
                                             "port": self._conn_args["port"]})
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.errors += 1
                self._connected = False
                log.error("cannot connect to ClickHouse; retrying", extra={
                    "output": self.name, "error": f"{type(e).__name__}: {e}",
                    "retry_in_s": round(delay, 2)})
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self.cfg.retry_max)

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        self._connected = False
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    # -- the loop --

    async def run(self) -> None:
        batches: list[ColumnBatch] = []
        leases = []
        rows = size = 0
        first_at = 0.0
        while True:
            if self._conn is None:
                await self._connect()
            wait = self.cfg.batch_timeout - (time.monotonic() - first_at) if batches \
                else self.cfg.batch_timeout
            lease = await self.buffer.get(self.cfg.batch_bytes, timeout=max(0.0, wait))
            if lease is not None:
                if not batches:
                    first_at = time.monotonic()
                for b in lease.batches:
                    batches.append(b)  # type: ignore[arg-type]
                    rows += b.count
                    size += b.nbytes
                leases.append(lease)
            due = batches and (rows >= self.cfg.batch_rows or size >= self.cfg.batch_bytes
                               or time.monotonic() - first_at >= self.cfg.batch_timeout
                               or (self._draining and self.buffer.empty()))
            if due:
                await self._insert_until_done(join_columns(batches))
                for done in leases:
                    self.buffer.ack(done)
                batches, leases, rows, size = [], [], 0, 0
            if self._draining and self.buffer.empty() and not batches:
                return

    async def _insert_until_done(self, rows: ColumnBatch) -> None:
        """Insert, retrying transient failures forever (backoff, jitter); data errors split
        the batch until the bad rows are found, and those go to the dead-letter file."""
        delay = 0.1
        while True:
            if self._conn is None:
                await self._connect()
            try:
                await self._insert(rows)
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.errors += 1
                if _is_data_error(e):
                    await self._isolate(rows, e)
                    return
                self.retries += 1
                log.error("insert failed; retrying", extra={
                    "output": self.name, "rows": rows.count,
                    "error": f"{type(e).__name__}: {e}",
                    "retry_in_s": round(delay, 2)})
                await self._disconnect()
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self.cfg.retry_max)

    async def _insert(self, rows: ColumnBatch) -> None:
        t0 = time.perf_counter()
        sent = await self._send(self._conn, self.table_ref, rows)
        took = time.perf_counter() - t0
        self.insert_hist.observe(took)
        self.batch_hist.observe(rows.count)
        self.insert_s_total += took
        self.insert_s_max = max(self.insert_s_max, took)
        self.inserts += 1
        self.written += rows.count
        self.bytes += sent

    async def _isolate(self, rows: ColumnBatch, error: Exception) -> None:
        if rows.count == 1:
            self._dead_letter(rows.rows()[0], error)
            return
        each = rows.rows()
        mid = len(each) // 2
        for part in (ColumnBatch.of_rows(each[:mid]), ColumnBatch.of_rows(each[mid:])):
            try:
                await self._insert(part)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if not _is_data_error(e):
                    await self._insert_until_done(part)
                else:
                    await self._isolate(part, e)

    def _dead_letter(self, row: Row, error: Exception) -> None:
        self.dead_lettered += 1
        record: dict[str, Any] = dict(zip(COLUMNS, row, strict=True))
        record["created_at"] = datetime.fromtimestamp(row[4], tz=UTC).replace(
            tzinfo=None).isoformat()
        line = orjson.dumps({"reason": f"{type(error).__name__}: {error}", "row": record})
        path = self.dead_letter_path()
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "ab") as f:
            f.write(line + b"\n")
        log.error("row refused by ClickHouse; written to the dead-letter file",
                  extra={"output": self.name, "path": path, "error": str(error)})

    async def drain(self, deadline: float) -> None:
        self._draining = True
        self.buffer.close()

    async def close(self) -> None:
        await self._disconnect()

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        out.update({
            "type": "clickhouse",
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
        })
        return out


def _is_data_error(e: Exception) -> bool:
    code = getattr(e, "code", None)
    return isinstance(code, int) and code in _DATA_ERRORS
