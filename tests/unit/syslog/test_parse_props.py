"""Properties of the syslog parser: valid RFC 5424 messages built from parts parse back to
those parts; any bytes parse to a record without raising."""

from __future__ import annotations

from datetime import datetime

from hypothesis import given
from hypothesis import strategies as st

from logd.record import Batch
from logd.syslog.parse import FACILITIES, SEVERITIES, parse
from testkit.props import examples

PRINTUSASCII = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1)
NAME = st.text(st.characters(min_codepoint=33, max_codepoint=126,
                             blacklist_characters='="] '), min_size=1, max_size=32)


def nil_or(s: st.SearchStrategy[str], max_size: int) -> st.SearchStrategy[str | None]:
    return st.none() | s.filter(lambda v: v != "-" and len(v.encode()) <= max_size)


def escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


@st.composite
def messages(draw: st.DrawFn) -> tuple[bytes, dict[str, object]]:
    fac = draw(st.integers(0, 23))
    sev = draw(st.integers(0, 7))
    ts = draw(st.none() | st.datetimes(min_value=datetime(1000, 1, 1)).map(
        lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.%fZ")))
    host = draw(nil_or(PRINTUSASCII, 255))
    app = draw(nil_or(PRINTUSASCII, 48))
    procid = draw(nil_or(PRINTUSASCII, 128))
    msgid = draw(nil_or(PRINTUSASCII, 32))
    sd = draw(st.dictionaries(NAME, st.dictionaries(NAME, st.text(), max_size=3),
                              max_size=3))
    msg = draw(st.none() | st.text().filter(lambda m: not m.startswith("\ufeff")))
    sd_text = "".join(
        "[" + sid + "".join(f' {k}="{escape(v)}"' for k, v in params.items()) + "]"
        for sid, params in sd.items()) or "-"
    parts = [f"<{fac * 8 + sev}>1", ts or "-", host or "-", app or "-", procid or "-",
             msgid or "-", sd_text]
    wire = " ".join(parts) + ("" if msg is None else " " + msg)
    want: dict[str, object] = {"facility": FACILITIES[fac], "level": SEVERITIES[sev],
                               "message": msg or ""}
    for key, value in (("timestamp", ts), ("host", host), ("app", app), ("procid", procid),
                       ("msgid", msgid)):
        if value is not None:
            want[key] = value
    if sd:
        want["sd"] = sd
    return wire.encode(), want


@examples(300)
@given(messages())
def test_valid_messages_parse_to_their_parts(case: tuple[bytes, dict[str, object]]) -> None:
    wire, want = case
    assert parse(wire) == want


@examples(300)
@given(st.binary(max_size=300) | st.builds(lambda a, b: b"<" + a + b, st.binary(max_size=4),
                                           st.binary(max_size=200)))
def test_any_bytes_yield_a_record(data: bytes) -> None:
    f = parse(data)
    assert isinstance(f["message"], str)
    if "facility" not in f:
        assert f == {"message": data.decode("utf-8", "replace")}


@examples(100)
@given(st.lists((st.binary(max_size=120) | st.builds(
    lambda n, rest: b"<%d>" % n + rest, st.integers(0, 999), st.binary(max_size=60))).map(
        lambda b: b.replace(b"\n", b"")), min_size=1, max_size=20))
def test_a_syslog_batch_has_fields_for_every_record(lines: list[bytes]) -> None:
    block = b"\n".join(lines) + b"\n"
    batch = Batch.from_lines(block, len(lines), "syslog", 1.8e9, "syslog")
    fields = batch.fields()
    assert len(fields) == len(lines)
    assert [f["message"] if f else None for f in fields] == [parse(p)["message"]
                                                             for p in lines]
    # The severity read from the PRI alone agrees with the parsed level.
    assert list(batch.severity_bytes()) == [
        SEVERITIES.index(f["level"]) if f and "level" in f else 6 for f in fields]
