"""The syslog stream decoders: any chunking decodes the same; long lines are cut."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logd.framing import FramingError
from logd.syslog.framing import (
    OctetCountDecoder,
    SyslogLineDecoder,
    lines_without_pri,
    octet_counted,
)
from testkit.props import examples

LIMIT = 64
MESSAGES = st.lists(st.binary(max_size=80).map(lambda b: b.replace(b"\n", b"")), max_size=20)


def pieces(data: bytes, points: list[int]) -> list[bytes]:
    cuts = sorted(p % (len(data) + 1) for p in points)
    out, last = [], 0
    for p in [*cuts, len(data)]:
        out.append(data[last:p])
        last = p
    return out


@examples(200)
@given(MESSAGES, st.lists(st.integers(0, 10**6), max_size=10))
def test_lines_cut_at_the_limit_whatever_the_chunks(msgs: list[bytes],
                                                    points: list[int]) -> None:
    d = SyslogLineDecoder(LIMIT)
    got = b""
    for piece in pieces(b"".join(m + b"\n" for m in msgs), points):
        block, count = d.feed(piece)
        assert block.count(b"\n") == count
        got += block
    assert got.split(b"\n")[:-1] == [m[:LIMIT] for m in msgs]
    assert d.cut == sum(len(m) > LIMIT for m in msgs)
    assert d.finish() == b""


@examples(200)
@given(MESSAGES, st.lists(st.integers(0, 10**6), max_size=10))
def test_octet_counting_whatever_the_chunks(msgs: list[bytes], points: list[int]) -> None:
    msgs = [m[:LIMIT] for m in msgs]
    d = OctetCountDecoder(LIMIT)
    got: list[bytes] = []
    for piece in pieces(b"".join(b"%d %s" % (len(m), m) for m in msgs), points):
        got += d.feed(piece)
    assert got == msgs
    assert d.finish() is None


def test_octet_count_errors_keep_what_came_before() -> None:
    for bad, reason in [(b"1x2 m", "bad_octet_count"),
                        (b"65 " + b"x" * 65, "octet_count_over_limit"),
                        (b"12345678901", "bad_octet_count")]:
        d = OctetCountDecoder(LIMIT)
        with pytest.raises(FramingError) as e:
            d.feed(b"3 abc\n2 de" + bad)
        assert e.value.reason == reason
        assert e.value.frames is not None and e.value.frames[0] == [b"abc", b"de"]


def test_a_line_longer_than_the_limit_in_pieces_is_cut_once() -> None:
    d = SyslogLineDecoder(8)
    assert d.feed(b"0123") == (b"", 0)
    assert d.feed(b"456789abc") == (b"01234567\n", 1)
    assert d.feed(b"def\nok\n") == (b"ok\n", 1)
    assert d.cut == 1


def test_framing_detection_and_pri_count() -> None:
    assert octet_counted(b"12 <13>x") and not octet_counted(b"<13>x\n")
    assert lines_without_pri(b"<13>a\n<999>b\nc\n<191>d\n<0>e\n", 5) == 2
