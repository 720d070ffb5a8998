"""ClickHouse columns: the native encoding, and how record fields map to the table."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from logd.outputs.clickhouse_columns import (
    ColumnBatch,
    decode_strings,
    encode_bytes,
    encode_strings,
    epoch_seconds,
    join_columns,
    metadata_json,
    rows_of,
    varint,
)
from logd.record import Batch

RECEIVED = 1_795_426_800.75  # 2026-11-23 09:40:00.75 UTC


def http_batch(objs: list[dict[str, Any]], sevs: bytes | None = None) -> Batch:
    return Batch.from_objects(objs, sevs or bytes([6] * len(objs)), "http", RECEIVED, 0)


def rows(objs: list[dict[str, Any]], sevs: bytes | None = None) -> list[tuple[Any, ...]]:
    """Rows through the column-wise encoder, decoded, checked against the per-record path."""
    got = ColumnBatch.of_batch(http_batch(objs, sevs)).rows()
    assert got == rows_of(http_batch(objs, sevs))
    return got


def test_varint_and_string_column_format() -> None:
    assert varint(0) == b"\x00"
    assert varint(127) == b"\x7f"
    assert varint(128) == b"\x80\x01"
    assert varint(16384) == b"\x80\x80\x01"
    assert encode_strings(["a", "", "héllo"]) == b"\x01a\x00\x06h\xc3\xa9llo"
    long = "x" * 20000  # beyond the two-byte varint table
    data = encode_strings(["ab", long])
    assert data[:3] == b"\x02ab" and data[3:6] == varint(20000)
    assert decode_strings(data, 2) == ["ab", long]
    assert encode_bytes([b"{}", b"x"]) == b"\x02{}\x01x"


def test_fields_map_to_columns() -> None:
    got = rows([
        {"app_id": "payment-service", "level": "error", "message": "card declined",
         "source": "api", "timestamp": "2026-11-23T10:00:00Z", "metadata": {"order": 17}},
        {"app": "auth-service", "message": "slow", "timestamp": 1795426800},
        {"message": "plain"},
    ], bytes([3, 4, 6]))
    assert got == [
        ("payment-service", "error", "card declined", "api", 1795428000, '{"order":17}'),
        ("auth-service", "warn", "slow", "http", 1795426800, "{}"),
        ("http", "info", "plain", "http", int(RECEIVED), "{}"),
    ]


@pytest.mark.parametrize(("ts", "expected"), [
    (1795426800.9, 1795426800),
    (1795426800, 1795426800),
    ("2026-11-23T10:00:00+01:00", 1795424400),
    ("2026-11-23T10:00:00", 1795428000),          # no zone: UTC
    ("2026-11-23 10:00:00.123Z", 1795428000),
    ("yesterday", int(RECEIVED)),                  # not a time: when it arrived
    (-5, int(RECEIVED)),                           # before 1970: DateTime cannot hold it
    (2**40, int(RECEIVED)),                        # beyond 2106
    (float("nan"), int(RECEIVED)),
    (True, int(RECEIVED)),
    (None, int(RECEIVED)),
])
def test_created_at(ts: Any, expected: int) -> None:
    assert rows([{"message": "m", "timestamp": ts}])[0][4] == expected
    # also when the whole batch shares the kind of value
    assert [r[4] for r in rows([{"message": "m", "timestamp": ts}] * 3)] == [expected] * 3


def test_metadata_column() -> None:
    assert metadata_json({"message": "m"}) == b"{}"
    assert metadata_json({"message": "m", "metadata": {"a": 1}}) == b'{"a":1}'
    assert json.loads(metadata_json({"message": "m", "metadata": {"a": 1}, "b": 2})) == \
        {"a": 1, "b": 2}
    assert json.loads(metadata_json({"message": "m", "metadata": "text", "b": 2})) == \
        {"metadata": "text", "b": 2}
    assert json.loads(metadata_json({"message": "m", "metadata": None})) == {"metadata": None}
    assert json.loads(metadata_json({"message": "m", "user": "u1"})) == {"user": "u1"}


def test_values_that_are_not_strings_become_json_text() -> None:
    got = rows([{"app_id": 42, "message": {"k": [1, 2]}, "source": None}])
    assert got[0][:4] == ("42", "info", '{"k":[1,2]}', "http")  # a null source: the listener


def test_records_that_are_not_json_objects() -> None:
    batch = Batch([b"<11>plain text", b'{"message": "json", "app_id": "a"}', b"[1]"], None,
                  "emitters", RECEIVED, 40)
    got = ColumnBatch.of_batch(batch).rows()
    assert got == [
        ("emitters", "error", "<11>plain text", "emitters", int(RECEIVED), "{}"),
        ("a", "info", "json", "emitters", int(RECEIVED), "{}"),
        ("emitters", "info", "[1]", "emitters", int(RECEIVED), "{}"),
    ]


def test_column_wise_and_per_record_paths_agree_on_random_records() -> None:
    rnd = random.Random(7)
    values: list[Any] = ["", "ü", "x" * 200, 0, 1.5, None, True, [1], {"a": "b"}, "a\nb"]
    keys = ["app_id", "app", "message", "source", "timestamp", "metadata", "extra"]
    for _ in range(200):
        objs = []
        for _ in range(rnd.randint(1, 8)):
            o = {k: rnd.choice(values) for k in keys if rnd.random() < 0.5}
            o["message"] = rnd.choice(values)
            objs.append(o)
        rows(objs, bytes(rnd.randrange(8) for _ in objs))


def test_joined_batches_and_rows_round_trip() -> None:
    a = ColumnBatch.of_batch(http_batch([{"message": "one", "metadata": {"n": 1}}]))
    b = ColumnBatch.of_batch(http_batch([{"message": "two", "metadata": {"n": 2}},
                                         {"message": "three", "metadata": {"n": 3}}]))
    joined = join_columns([a, b])
    assert joined.count == 3 and joined.nbytes == a.nbytes + b.nbytes
    assert [r[2] for r in joined.rows()] == ["one", "two", "three"]
    again = ColumnBatch.of_rows(joined.rows())
    assert again.columns == joined.columns
    assert ColumnBatch.of_rows([]).count == 0


def test_kafka_json_values_survive_a_time_no_datetime_can_hold() -> None:
    from logd.outputs.kafka import KafkaBatch
    for ts in (1700000000000, 1e20, -1e13, "0001-01-01T00:00:00+14:00"):
        b = KafkaBatch.of_batch(http_batch([{"message": "m", "timestamp": ts}]), key=True,
                                fmt="json")
        assert json.loads(b.messages[0][1])["time"] == "2026-11-23T09:40:00.750000Z"


def test_kafka_retries_send_only_what_was_not_acknowledged() -> None:
    from logd.outputs.kafka import MessageBlock
    block = MessageBlock([(b"a", b"1", 0.0), (b"b", b"2", 0.0), (b"a", b"3", 0.0)])
    block.groups = {0: [(b"a", b"1", 0.0), (b"a", b"3", 0.0)], 1: [(b"b", b"2", 0.0)]}
    block.acked = {0: 1, 1: 1}
    assert block.unacknowledged() == [(b"a", b"3", 0.0)]


def test_level_is_stored_as_sent_and_app_id_comes_first() -> None:
    got = rows([
        {"app": "web", "app_id": "billing", "level": "fatal", "message": "a"},
        {"app_id": "billing", "level": "WARNING", "message": "b"},
        {"app_id": "billing", "severity": "notice", "message": "c"},
        {"app_id": "billing", "level": 3, "message": "d"},
    ], bytes([2, 4, 5, 3]))
    assert [(r[0], r[1]) for r in got] == [("billing", "fatal"), ("billing", "WARNING"),
                                           ("billing", "notice"), ("billing", "3")]


@pytest.mark.parametrize("stamps", [
    ["2026-11-23T10:00:00.500000Z", "2026-11-23T10:00:00.999999Z", "2026-11-23T10:00:01Z"],
    ["2026-11-23T10:00:00.xyzZ", "2026-11-23T10:00:00.Z", "2026-11-23T10:00:00.\u0661Z"],
    ["2026-11-23T10:00:00+01:00", "yesterday", "1969-12-31T23:59:59Z", "2026-11-23 10:00:00Z"],
])
def test_utc_strings_take_the_per_second_path_and_agree_with_records(stamps: list[str]) -> None:
    got = rows([{"message": "m", "timestamp": t} for t in stamps])
    assert [r[4] for r in got] == [epoch_seconds(t, int(RECEIVED)) for t in stamps]
