"""logd.record.Batch: fields, severities, subsets, slices and pieces."""

from __future__ import annotations

import pytest

from logd.fields import severity_from_name
from logd.filters import FilterError, compile_filter
from logd.record import Batch


def batch_of(payloads: list[bytes], source: str = "emitters") -> Batch:
    return Batch(list(payloads), None, source, 1700000000.0, sum(map(len, payloads)))


def test_fields_parse_json_objects_only() -> None:
    batch = batch_of([b'{"app": "billing", "n": 1}', b"plain text", b"[1, 2]", b"{broken",
                      b'{"nested": {"a": true}}'])
    assert batch.fields() == [{"app": "billing", "n": 1}, None, None, None,
                              {"nested": {"a": True}}]
    assert batch.fields() is batch.fields()  # parsed once


def test_severity_from_syslog_pri() -> None:
    batch = batch_of([b"<11>sshd: failed", b"<0>kernel panic", b"<191>debug", b"<x>not pri"])
    assert batch.severity_bytes() == bytes([3, 0, 7, 6])


def test_severity_from_json_level_or_severity() -> None:
    batch = batch_of([b'{"level": "WARNING"}', b'{"severity": "crit"}', b'{"level": 5}',
                      b'{"level": "loud"}', b'{"msg": "no level"}'])
    assert batch.severity_bytes() == bytes([4, 2, 5, 6, 6])


def test_only_ascii_digits_are_level_numbers() -> None:
    # Found by tests/unit/test_filters_props.py: "፩" passes isdigit() and int() refuses it,
    # which raised ValueError out of the router; "٣" was read as 3.
    assert severity_from_name("7") == 7 and severity_from_name("07") == 7
    assert severity_from_name("\u1369") is None  # ፩
    assert severity_from_name("\u0663") is None  # ٣
    assert severity_from_name("\u00b2") is None  # ²
    batch = batch_of([b'{"level": "\xe1\x8d\xa9"}', b'{"level": "\xd9\xa3"}'])
    assert batch.severity_bytes() == bytes([6, 6])
    with pytest.raises(FilterError, match="unknown level"):
        compile_filter("level == \u00b2")


def test_severity_defaults_to_info() -> None:
    assert batch_of([b"hello", b"", b"WARN but plain"]).severity_bytes() == bytes([6, 6, 6])


def test_given_severities_are_kept() -> None:
    batch = Batch([b"a", b"b"], bytes([1, 7]), "s", 0.0, 2)
    assert batch.severity_bytes() == bytes([1, 7])


def test_from_lines_splits_payloads_and_counts_bytes() -> None:
    block = b"first\n{\"app\": \"x\"}\nthird line\n"
    batch = Batch.from_lines(block, 3, "lines", 1.0)
    assert len(batch) == 3
    assert batch.raw == block
    assert batch.payloads == [b"first", b'{"app": "x"}', b"third line"]
    assert batch.nbytes == len(block) - 3
    assert batch.fields()[1] == {"app": "x"}


def test_subset_keeps_payloads_severities_and_fields() -> None:
    batch = batch_of([b"<11>a", b"<12>b", b'{"level": "debug", "app": "c"}', b"d"])
    batch.fields()
    batch.severity_bytes()
    sub = batch.subset([0, 2])
    assert sub.payloads == [b"<11>a", b'{"level": "debug", "app": "c"}']
    assert sub.severity_bytes() == bytes([3, 7])
    assert sub.fields() == [None, {"level": "debug", "app": "c"}]
    assert sub.nbytes == len(b"<11>a") + len(b'{"level": "debug", "app": "c"}')
    assert sub.source == batch.source
    assert len(sub) == 2


def test_subset_of_framed_batch_keeps_frame_severities() -> None:
    chunk = b"".join((len(p) + 1).to_bytes(4, "big") + bytes([s]) + p
                     for s, p in [(2, b"x"), (5, b"yy"), (0, b"z")])
    batch = Batch([b"x", b"yy", b"z"], None, "s", 0.0, 4, frames=(chunk, 0, len(chunk)))
    sub = batch.subset([1, 2])
    assert sub.payloads == [b"yy", b"z"]
    assert sub.severity_bytes() == bytes([5, 0])


def test_parsed_objects_are_serialized_only_when_payloads_are_asked_for() -> None:
    objs = [{"message": "a", "n": 1}, {"message": "bé"}]
    b = Batch.from_objects(objs, bytes([6, 3]), "http", 0.0, nbytes=99)
    assert b.fields() is objs and b.nbytes == 99  # an estimate until payloads exist
    assert b.payloads == [b'{"message":"a","n":1}', '{"message":"bé"}'.encode()]


def test_compact_makes_payloads_and_drops_parsed_objects() -> None:
    b = Batch.from_objects([{"message": "a"}], bytes([6]), "http", 0.0, nbytes=99)
    b.compact()
    assert b._fields is None
    assert b.payloads == [b'{"message":"a"}'] and b.nbytes == 15
    assert b.fields() == [{"message": "a"}]  # parsed again when asked for
    given = Batch.from_objects([{"message": "a"}], bytes([6]), "http", 0.0, nbytes=0,
                               payloads=[b'{ "message": "a" }'])
    given.compact()
    assert given.payloads == [b'{ "message": "a" }'] and given.nbytes == 18


# -- slices --

def _framed(payloads: list[bytes], sevs: list[int]) -> Batch:
    chunk = b"head" + b"".join((len(p) + 1).to_bytes(4, "big") + bytes([s]) + p
                               for s, p in zip(sevs, payloads, strict=True)) + b"rest"
    return Batch(list(payloads), None, "s", 1.0, sum(map(len, payloads)),
                 frames=(chunk, 4, len(chunk) - 4))


def test_slice_keeps_each_form_of_the_batch() -> None:
    payloads = [f"record {i}".encode() * (i % 7) for i in range(50)]
    sevs = [i % 8 for i in range(50)]
    block = b"".join(p + b"\n" for p in payloads)
    lines = Batch.from_lines(block, 50, "l", 2.0)
    part = lines.slice(10, 20)
    assert part._payloads is None and part.raw == b"".join(p + b"\n" for p in payloads[10:20])
    assert (part.count, part.nbytes, part.source, part.received) == \
        (10, sum(map(len, payloads[10:20])), "l", 2.0)
    framed = _framed(payloads, sevs)
    part = framed.slice(3, 9)
    assert part.severities is None and part._frames is not None  # still read lazily
    assert part.payloads == payloads[3:9] and part.severity_bytes() == bytes(sevs[3:9])
    objs = [{"message": f"m{i}"} for i in range(50)]
    parsed = Batch.from_objects(objs, bytes(sevs), "http", 3.0, 1000)
    part = parsed.slice(40, 50)
    assert part._payloads is None, "parsed objects are not serialized to slice them"
    assert part.fields() == objs[40:50] and part.severity_bytes() == bytes(sevs[40:50])
    assert part.nbytes == 200  # its share of the estimate
    assert lines.slice(0, 50) is lines and lines.slice(-2, None).payloads == payloads[48:]
    assert lines.slice(5, 5).count == 0


def test_pieces_cut_by_payload_bytes_and_keep_every_record_in_order() -> None:
    payloads = [bytes([97 + i % 26]) * (i * 37 % 300) for i in range(1000)]
    sevs = [i % 8 for i in range(1000)]
    block = b"".join(p + b"\n" for p in payloads)
    for batch in (Batch(list(payloads), bytes(sevs), "s", 1.0, sum(map(len, payloads))),
                  _framed(payloads, sevs), Batch.from_lines(block, 1000, "l", 1.0)):
        parts = batch.pieces(4096)
        assert len(parts) > 30
        assert [p for part in parts for p in part.payloads] == payloads
        assert sum(part.nbytes for part in parts) == batch.nbytes
        assert all(part.nbytes <= 4096 for part in parts)
        if batch.raw is None:
            assert b"".join(part.severity_bytes() for part in parts) == bytes(sevs)
    big = Batch([b"x" * 10_000, b"y", b"z" * 9000], None, "s", 1.0, 19_001)
    assert [p.payloads for p in big.pieces(4096)] == [[b"x" * 10_000], [b"y"], [b"z" * 9000]]
    small = Batch([b"a"], None, "s", 1.0, 1)
    assert small.pieces(4096) == [small]
