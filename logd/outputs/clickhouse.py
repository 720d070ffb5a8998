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

import contextlib
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

from logd.component import BuildContext
from logd.config import (
    one_of,
    setting,
    to_bool,
    to_nonempty_str,
)
from logd.outputs.clickhouse_columns import COLUMNS, ColumnBatch, join_columns
from logd.outputs.database import DatabaseOutput, DatabaseOutputConfig
from logd.record import Batch
from logd.stats import DatabaseOutputStats
from logd.units import redact_url

log = logging.getLogger("logd.clickhouse")

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Server error codes that mean "this data is wrong", not "try again later".
_DATA_ERRORS = {6, 26, 27, 32, 33, 38, 41, 53, 69, 70, 72, 117, 131, 377, 395}


def _to_url(v: Any) -> str:
    text = to_nonempty_str(v)
    u = urlparse(text)
    if u.scheme != "clickhouse" or not u.hostname:
        raise ValueError("expected clickhouse://user[:password]@host[:port]/database, got "
                         f"{redact_url(text)!r}")
    return text


def _to_ident(v: Any) -> str:
    text = to_nonempty_str(v)
    if not _IDENT.match(text):
        raise ValueError(f"expected a plain table name (letters, digits, _), got {v!r}")
    return text


@dataclass(frozen=True)
class ClickHouseOutputConfig(DatabaseOutputConfig):
    type: str = setting("clickhouse", one_of("clickhouse"))
    url: str = setting("clickhouse://default@127.0.0.1:9000/logs_db", _to_url,
                       "clickhouse://user[:password]@host[:port]/database (native protocol)")
    table: str = setting("logs", _to_ident, "table in that database")
    create: bool = setting(True, to_bool, "create the database and table if absent")


class ClickHouseOutput(DatabaseOutput):
    server = "ClickHouse"

    def __init__(self, cfg: ClickHouseOutputConfig, ctx: BuildContext | None = None) -> None:
        super().__init__(cfg, ctx)
        u = urlparse(cfg.url)
        self._conn_args: dict[str, Any] = {"host": u.hostname, "port": u.port or 9000,
                           "user": u.username or "default", "password": u.password or "",
                           "database": "default"}
        self.database = (u.path or "/").strip("/") or "default"
        self.table_ref = f"{self.database}.{cfg.table}"
        self._conn: Any = None
        self._send: Any = None  # clickhouse_native.insert, once started

    def encode(self, batch: Batch) -> ColumnBatch:
        # The buffer holds compact columns, and inserting is one join per column.
        return ColumnBatch.of_batch(batch)

    async def start(self) -> None:
        # asynch is imported here, not with the config: checking a config needs no driver.
        from logd.outputs.clickhouse_native import insert
        self._send = insert

    async def connect(self) -> str:
        from asynch import Connection
        conn = Connection(**self._conn_args)
        self._conn = conn
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
        return f"{self._conn_args['host']}:{self._conn_args['port']}"

    async def disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def write(self, block: ColumnBatch) -> int:
        return await self._send(self._conn, self.table_ref, block)

    def combine(self, batches: list[Any]) -> ColumnBatch:
        return join_columns(batches)

    def split(self, block: ColumnBatch) -> tuple[ColumnBatch, ColumnBatch]:
        rows = block.rows()
        mid = len(rows) // 2
        return ColumnBatch.of_rows(rows[:mid]), ColumnBatch.of_rows(rows[mid:])

    def row_dicts(self, block: ColumnBatch) -> list[dict[str, Any]]:
        out = []
        for row in block.rows():
            record: dict[str, Any] = dict(zip(COLUMNS, row, strict=True))
            record["created_at"] = datetime.fromtimestamp(row[4], tz=UTC).replace(
                tzinfo=None).isoformat()
            out.append(record)
        return out

    def is_data_error(self, e: Exception) -> bool:
        return _is_data_error(e)

    def stats(self) -> DatabaseOutputStats:
        return {**super().stats(), "type": "clickhouse"}


def _is_data_error(e: Exception) -> bool:
    code = getattr(e, "code", None)
    return isinstance(code, int) and code in _DATA_ERRORS
