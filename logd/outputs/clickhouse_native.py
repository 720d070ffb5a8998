"""An INSERT whose data block logd encodes itself, sent over asynch's connection.

asynch encodes a block value by value; logd's columns arrive already in the native format
(see clickhouse_columns), so the data packet is written from them directly: the query, the
server's sample block (the table's column types), one Data packet of the encoded columns, the
empty block that ends the data, then the server's answer. When the table's types are not the
ones logd encodes (a table made by hand with other types), the rows go through asynch's own
encoder instead, which converts to whatever the table has.

This uses asynch's connection internals (the same calls its own insert path makes); the
asynch version is pinned to the minor release this was written against.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from asynch.proto import constants
from asynch.proto.block import BlockInfo, RowOrientedBlock
from asynch.proto.context import ExecuteContext
from asynch.proto.protocol import ClientPacket, ServerPacket

from logd.outputs.clickhouse_columns import COLUMNS, TYPES, ColumnBatch

INSERT_COLUMNS = ", ".join(COLUMNS)


async def insert(conn: Any, table_ref: str, batch: ColumnBatch) -> int:
    """Insert `batch` into `table_ref` over an asynch Connection; returns the bytes sent."""
    proto = conn._connection
    query = f"INSERT INTO {table_ref} ({INSERT_COLUMNS}) VALUES"
    async with ExecuteContext(proto, query, None):
        await proto.send_query(query)
        await proto.send_external_tables(None)
        sample = await proto.receive_sample_block()
        types = tuple(t for _, t in sample.columns_with_types)
        if types == TYPES and not proto.compression:
            sent = await _send_encoded(proto, batch)
        else:
            sent = batch.nbytes
            await proto.send_data(sample, [_converted(r) for r in batch.rows()])
        while True:
            packet = await proto._receive_packet()
            if packet.type == ServerPacket.EXCEPTION:
                raise packet.exception
            if packet.type == ServerPacket.END_OF_STREAM:
                return sent


async def _send_encoded(proto: Any, batch: ColumnBatch) -> int:
    w = proto.writer
    revision = proto.server_info.revision
    await w.write_varint(ClientPacket.DATA)
    if revision >= constants.DBMS_MIN_REVISION_WITH_TEMPORARY_TABLES:
        await w.write_str("")  # no table name: the query's table
    if revision >= constants.DBMS_MIN_REVISION_WITH_BLOCK_INFO:
        await BlockInfo().write(w)
    await w.write_varint(len(COLUMNS))
    await w.write_varint(batch.count)
    for name, type_, data in zip(COLUMNS, TYPES, batch.columns, strict=True):
        await w.write_str(name)
        await w.write_str(type_)
        await w.write_bytes(data)
    await w.flush()
    await proto.send_block(RowOrientedBlock())  # the empty block: end of data
    return batch.nbytes


def _converted(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A row with created_at as the datetime asynch's encoders expect: with its zone, as a
    naive one would be read in the server's zone."""
    return (*row[:4], datetime.fromtimestamp(row[4], tz=UTC), *row[5:])
