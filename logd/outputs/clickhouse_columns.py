"""Records as ClickHouse native-format columns, encoded once when a batch reaches the output.

The table's columns are app_id, level, message, source (String), created_at (DateTime) and
metadata (String: the record's other fields as JSON). A String column in the native format is
each value's UTF-8 length as a varint followed by its bytes; a DateTime column is UInt32
epoch seconds, little-endian. A batch is turned into one bytes object per column while its
parsed JSON objects are at hand, so the buffer holds about the payload's size, not Python
objects, and an insert of many batches is one join per column.

The common case (every record a JSON object with string fields) runs column-wise through C
loops (map, join); anything else takes a per-record path with the same result.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Iterable, Sequence
from itertools import chain, repeat
from typing import Any

import orjson

from logd.buffers import codec
from logd.fields import (
    KNOWN_AND_METADATA,
    apps_of,
    level_texts,
    metadata_json,
    record_rows,
    record_time,
    texts,
)
from logd.record import Batch

COLUMNS = ("app_id", "level", "message", "source", "created_at", "metadata")
TYPES = ("String", "String", "String", "String", "DateTime", "String")

# Varint prefixes of every length below 2**14 (one or two bytes); longer values are prefixed
# one at a time.
_VARINT = [bytes([n]) if n < 0x80 else bytes([n & 0x7F | 0x80, n >> 7]) for n in range(1 << 14)]
_MAX_DATETIME = 2**32 - 1
_NUMBERS = {int, float}
_NONE = {type(None)}
_STRS = {str}
_DICT = {dict}

Row = tuple[str, str, str, str, int, str]


def varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode_strings(values: Sequence[str]) -> bytes:
    """A String column of `values` (all str)."""
    return encode_bytes(list(map(str.encode, values)))


def encode_bytes(data: Sequence[bytes]) -> bytes:
    """A String column of values already UTF-8."""
    try:
        prefixes = list(map(_VARINT.__getitem__, map(len, data)))
    except IndexError:  # a value of 16 KiB or more
        prefixes = [varint(len(d)) for d in data]
    return b"".join(chain.from_iterable(zip(prefixes, data, strict=True)))


def encode_datetimes(seconds: Iterable[int]) -> bytes:
    col = array("I", seconds)
    if sys.byteorder == "big":
        col.byteswap()
    return col.tobytes()


def epoch_seconds(ts: Any, received: float) -> int:
    """created_at of a record: its `timestamp`, else when it arrived; a value the DateTime
    column cannot hold also falls back to the arrival time."""
    t = record_time(ts)
    sec = int(t) if t is not None else -1
    return sec if 0 <= sec <= _MAX_DATETIME else int(received)


def _created(stamps: list[Any], received: int) -> bytes:
    types = set(map(type, stamps))
    if types <= _NUMBERS:
        try:
            return encode_datetimes(map(int, stamps))
        except (OverflowError, ValueError):
            pass  # out of range for DateTime (or NaN): per record below
    elif types == _NONE:
        return encode_datetimes(repeat(received, len(stamps)))
    elif types == _STRS:
        return encode_datetimes(_utc_seconds(stamps, received))
    return encode_datetimes([epoch_seconds(t, received) for t in stamps])


def _utc_seconds(stamps: list[str], received: int) -> list[int]:
    """epoch_seconds of RFC 3339 strings; those in UTC ("...Z", as logd's Kafka json writes
    them) by their second, parsed once per distinct second of the batch."""
    seconds: dict[str, int] = {}
    out = []
    for t in stamps:
        if t[-1:] == "Z" and len(t) >= 20 and t[10] == "T" and (
                len(t) == 20 or (t[19] == "." and t[20:-1].isdigit() and t.isascii())):
            key = t[:19]
            sec = seconds.get(key)
            if sec is None:
                sec = seconds[key] = epoch_seconds(key + "Z", received)
            out.append(sec)
        else:
            out.append(epoch_seconds(t, received))
    return out


def _metadata(objs: list[dict[str, Any]]) -> list[bytes]:
    get = dict.get
    if all(map(KNOWN_AND_METADATA.issuperset, objs)):
        mds = list(map(get, objs, repeat("metadata")))
        types = set(map(type, mds))
        if types == _DICT:  # every record has a metadata object and nothing else unknown
            return list(map(orjson.dumps, mds))
        if types == _NONE and not any(map(dict.__contains__, objs, repeat("metadata"))):
            return [b"{}"] * len(objs)
    return list(map(metadata_json, objs))


class ColumnBatch:
    """A batch as encoded columns: what the ClickHouse output's buffer holds."""

    __slots__ = ("columns", "count", "nbytes")

    def __init__(self, columns: tuple[bytes, ...], count: int) -> None:
        self.columns = columns
        self.count = count
        self.nbytes = sum(map(len, columns))

    @property
    def held_bytes(self) -> int:
        return self.nbytes

    def __len__(self) -> int:
        return self.count

    def compact(self) -> None:
        """Already as small as it gets (see Batch.compact)."""

    @classmethod
    def of_batch(cls, batch: Batch) -> ColumnBatch:
        fields = batch.fields()
        if None in fields:
            return cls.of_rows(rows_of(batch))
        objs: list[dict[str, Any]] = fields  # type: ignore[assignment]
        source = batch.source
        received = int(batch.received)
        get = dict.get
        apps = apps_of(objs, source)
        messages = list(map(get, objs, repeat("message"), repeat("")))
        sources = list(map(get, objs, repeat("source")))
        if None in sources:
            sources = [source if s is None else s for s in sources]
        columns = (
            encode_strings(apps),
            encode_strings(level_texts(fields, batch.severity_bytes())),
            encode_strings(texts(messages)),
            encode_strings(texts(sources)),
            _created(list(map(get, objs, repeat("timestamp"))), received),
            encode_bytes(_metadata(objs)),
        )
        return cls(columns, batch.count)

    @classmethod
    def of_rows(cls, rows: Sequence[Row]) -> ColumnBatch:
        if not rows:
            return cls((b"",) * len(COLUMNS), 0)
        app, level, message, source, created, metadata = zip(*rows, strict=True)
        columns = (encode_strings(app), encode_strings(level), encode_strings(message),
                   encode_strings(source), encode_datetimes(created), encode_strings(metadata))
        return cls(columns, len(rows))

    def rows(self) -> list[Row]:
        """Decoded back into rows (to isolate the rows ClickHouse refuses)."""
        n = self.count
        app, level, message, source = (decode_strings(c, n) for c in self.columns[:4])
        created = array("I")
        created.frombytes(self.columns[4])
        if sys.byteorder == "big":
            created.byteswap()
        metadata = decode_strings(self.columns[5], n)
        return list(zip(app, level, message, source, created, metadata, strict=True))


def join_columns(batches: Sequence[ColumnBatch]) -> ColumnBatch:
    if len(batches) == 1:
        return batches[0]
    cols = tuple(b"".join(b.columns[i] for b in batches) for i in range(len(COLUMNS)))
    return ColumnBatch(cols, sum(b.count for b in batches))


def decode_strings(data: bytes, n: int) -> list[str]:
    out = []
    off = 0
    for _ in range(n):
        length = shift = 0
        while True:
            byte = data[off]
            off += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        out.append(data[off:off + length].decode("utf-8", "replace"))
        off += length
    return out


def rows_of(batch: Batch) -> list[Row]:
    """The batch as table rows, one record at a time (see logd.fields)."""
    return record_rows(batch, epoch_seconds)


# In a disk spool: the record count, each column's length, the columns.
_SPOOL_HEAD = struct.Struct(f"<I{len(COLUMNS)}I")


def _spool_encode(batch: ColumnBatch) -> bytes:
    return b"".join((_SPOOL_HEAD.pack(batch.count, *map(len, batch.columns)), *batch.columns))


def _spool_decode(body: bytes) -> ColumnBatch:
    count, *lengths = _SPOOL_HEAD.unpack_from(body)
    off = _SPOOL_HEAD.size
    if off + sum(lengths) != len(body):
        raise ValueError("column lengths do not add up to the entry")
    columns = []
    for n in lengths:
        columns.append(body[off:off + n])
        off += n
    return ColumnBatch(tuple(columns), count)


codec.register(ColumnBatch, 2, _spool_encode, _spool_decode)
