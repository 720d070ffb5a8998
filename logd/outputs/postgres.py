"""The PostgreSQL output (asyncpg): rows written with binary COPY, in batches.

The table (created if absent) holds the fields every database output maps (logd.fields):

    CREATE TABLE logs (
        id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        created_at timestamptz NOT NULL,
        app_id     text NOT NULL,
        level      text NOT NULL,
        message    text NOT NULL,
        source     text NOT NULL,
        metadata   jsonb NOT NULL DEFAULT '{}')
    with indexes on (app_id, created_at) and (created_at).

Batching, retries and dead letters are DatabaseOutput's. Errors of SQLSTATE classes 22 (data)
and 23 (constraints) are about the rows: those are isolated into the dead-letter file.
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlparse

from logd.component import BuildContext
from logd.config import (
    one_of,
    setting,
    to_bool,
    to_nonempty_str,
)
from logd.fields import record_rows, record_time, utc_datetime
from logd.outputs.database import DatabaseOutput, DatabaseOutputConfig
from logd.stats import DatabaseOutputStats
from logd.units import redact_url

log = logging.getLogger("logd.postgres")

COLUMNS = ("created_at", "app_id", "level", "message", "source", "metadata")
_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")

Row = tuple[datetime, str, str, str, str, str]
# Indexing an existing large table can take long: not cut off by the 60 s command timeout.
_DDL_TIMEOUT = 3600.0


def _to_dsn(v: Any) -> str:
    text = to_nonempty_str(v)
    u = urlparse(text)
    if u.scheme not in ("postgres", "postgresql") or not (u.hostname or u.query):
        raise ValueError("expected postgresql://user[:password]@host[:port]/database, got "
                         f"{redact_url(text)!r}")
    return text


def _to_ident(v: Any) -> str:
    text = to_nonempty_str(v)
    if not _IDENT.match(text):
        raise ValueError(f"expected a plain lower-case name (letters, digits, _), got {v!r}")
    return text


@dataclass(frozen=True)
class PostgresOutputConfig(DatabaseOutputConfig):
    type: str = setting("postgres", one_of("postgres"))
    dsn: str = setting("postgresql://logd@127.0.0.1:5432/logd", _to_dsn,
                       "postgresql://user[:password]@host[:port]/database[?sslmode=...]")
    schema: str = setting("public", _to_ident, "schema of the table")
    table: str = setting("logs", _to_ident, "table name")
    create: bool = setting(True, to_bool, "create the table and its indexes if absent")


def _when(ts: Any, received: float) -> datetime:
    t = record_time(ts)
    return utc_datetime(received if t is None else t, received)


def _no_nul(s: str) -> str:
    # PostgreSQL text cannot hold NUL: shown as U+FFFD rather than refusing the row.
    return s.replace("\x00", "\ufffd") if "\x00" in s else s


# jsonb cannot hold \u0000 either; an escape preceded by an even number of backslashes is
# one (an odd number means a literal backslash before "u0000").
_JSON_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def _no_json_nul(s: str) -> str:
    return _JSON_NUL.sub(r"\1\\ufffd", s) if "\\u0000" in s else s


class RowBlock:
    """Rows for one COPY."""

    __slots__ = ("count", "nbytes", "rows")

    def __init__(self, rows: list[Row], nbytes: int) -> None:
        self.rows = rows
        self.count = len(rows)
        self.nbytes = nbytes


def rows_of(batch: Any) -> list[Row]:
    rows = []
    for app, level, message, source, when, metadata in record_rows(batch, _when):
        rows.append((when, _no_nul(app), level, _no_nul(message), _no_nul(source),
                     _no_json_nul(metadata)))
    return rows


class PostgresOutput(DatabaseOutput):
    server = "PostgreSQL"

    def __init__(self, cfg: PostgresOutputConfig, ctx: BuildContext | None = None) -> None:
        super().__init__(cfg, ctx)
        self.table_ref = f'"{cfg.schema}"."{cfg.table}"'
        self._conn: Any = None

    async def start(self) -> None:
        import asyncpg  # noqa: F401  (fail at start, with the reason, if it is missing)

    async def connect(self) -> str:
        import asyncpg
        # command_timeout: a server that stops answering fails the write (then retried on a
        # new connection) instead of holding it forever.
        conn = await asyncpg.connect(self.cfg.dsn, timeout=10, command_timeout=60)
        self._conn = conn
        if self.cfg.create:
            t = self.cfg.table
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table_ref} ("
                "id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
                "created_at timestamptz NOT NULL, app_id text NOT NULL, level text NOT NULL, "
                "message text NOT NULL, source text NOT NULL, "
                "metadata jsonb NOT NULL DEFAULT '{}'::jsonb)", timeout=_DDL_TIMEOUT)
            await conn.execute(f'CREATE INDEX IF NOT EXISTS "{t}_app_created_idx" '
                               f"ON {self.table_ref} (app_id, created_at)", timeout=_DDL_TIMEOUT)
            await conn.execute(f'CREATE INDEX IF NOT EXISTS "{t}_created_idx" '
                               f"ON {self.table_ref} (created_at)", timeout=_DDL_TIMEOUT)
        u = urlparse(self.cfg.dsn)
        return f"{u.hostname}:{u.port or 5432} (PostgreSQL {conn.get_server_version().major})"

    async def disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._giving_up:
            conn.terminate()
            return
        with contextlib.suppress(Exception):
            await conn.close(timeout=2)

    async def write(self, block: RowBlock) -> int:
        await self._conn.copy_records_to_table(self.cfg.table, schema_name=self.cfg.schema,
                                               columns=COLUMNS, records=block.rows,
                                               timeout=60)
        return block.nbytes

    def combine(self, batches: list[Any]) -> RowBlock:
        rows: list[Row] = []
        for b in batches:
            rows.extend(rows_of(b))
        return RowBlock(rows, sum(b.nbytes for b in batches))

    def split(self, block: RowBlock) -> tuple[RowBlock, RowBlock]:
        mid = block.count // 2
        part = block.nbytes // max(1, block.count)
        return (RowBlock(block.rows[:mid], part * mid),
                RowBlock(block.rows[mid:], part * (block.count - mid)))

    def row_dicts(self, block: RowBlock) -> list[dict[str, Any]]:
        return [{**dict(zip(COLUMNS, row, strict=True)), "created_at": row[0].isoformat()}
                for row in block.rows]

    def is_data_error(self, e: Exception) -> bool:
        # 22 data, 23 constraints, 54 limits (an index row too large: a huge app_id)
        state = getattr(e, "sqlstate", None)
        return isinstance(state, str) and state[:2] in ("22", "23", "54")

    def stats(self) -> DatabaseOutputStats:
        return {**super().stats(), "type": "postgres"}
