"""Properties of HTTP ingest validation: the column-wise fast path, the record-by-record
check and the body parser agree with the contract (README, "HTTP ingest") on any input.

A batch is taken whole or refused whole: every record needs a "message"; a `level` names a
level (any case) or is a number 0-7, else the batch is refused; without a level a `severity`
field names it if it can, else the record is info; a `timestamp` is RFC 3339 or epoch
seconds as logd reads it (logd.fields.record_time: what the outputs will store).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from logd.fields import record_time
from logd.listeners.http import (
    BadRequest,
    HttpListener,
    HttpListenerConfig,
    _checked_severities,
    _valid_severities,
)
from testkit.props import INFO, examples, level_severity

NAMES = ["emerg", "alert", "crit", "critical", "fatal", "error", "err", "warn", "warning",
         "notice", "info", "debug", "trace", "panic", "informational"]
LEVELS = (st.sampled_from(NAMES) | st.sampled_from(NAMES).map(str.upper)
          | st.sampled_from(NAMES).map(str.capitalize)
          | st.sampled_from(NAMES).map(lambda n: n[:1] + n[1:].swapcase())
          | st.integers(-2, 9) | st.integers(0, 9).map(str) | st.sampled_from(["07", "8", ""])
          | st.none() | st.booleans() | st.sampled_from([1.0, 3.5, -0.0])
          | st.text(max_size=3) | st.text(st.characters(categories=["Nd", "No"]), max_size=2)
          | st.lists(st.sampled_from(["info", 3]), max_size=1)
          | st.dictionaries(st.just("name"), st.just("warn"), max_size=1))
STAMPS = (st.integers(-2**40, 2**40) | st.floats(-1e12, 1e12, allow_nan=False)
          | st.sampled_from(["2026-11-23T10:00:00Z", "2026-11-23 10:00:00+01:00",
                             "2026-11-23T10:00:00.123456", "2026-11-23", "noon", "",
                             "2026-13-01T00:00:00Z", "1700000000"])
          | st.text(max_size=4) | st.none() | st.booleans() | st.lists(st.integers(), max_size=1))
# orjson reads integers beyond 64 bits as floats: not what these properties are about.
INTS = st.integers(-2**63, 2**63 - 1)
OTHER = st.none() | st.booleans() | INTS | st.text(max_size=4)

RECORDS = st.fixed_dictionaries({}, optional={
    "message": st.text(max_size=6) | OTHER, "level": LEVELS, "severity": LEVELS,
    "timestamp": STAMPS, "app_id": OTHER, "source": OTHER, "extra": OTHER})
# Mostly good batches, as on the wire; records with one field changed to anything; now and
# then a non-object.
USUAL_LEVELS = st.sampled_from(NAMES) | st.integers(0, 7) | st.none()
GOOD = st.fixed_dictionaries({"message": st.text(max_size=6)}, optional={
    "level": USUAL_LEVELS, "severity": USUAL_LEVELS,
    "timestamp": st.integers(0, 2**32) | st.just("2026-11-23T10:00:00Z") | st.none()})
NEAR = st.builds(lambda obj, key, value: {**obj, key: value} if key != "-" else
                 {k: v for k, v in obj.items() if k != "message"},
                 GOOD, st.sampled_from(["level", "severity", "timestamp", "-"]),
                 LEVELS | STAMPS)
ITEMS = GOOD | NEAR | RECORDS | st.text(max_size=3) | INTS | st.none() | st.lists(INTS,
                                                                                 max_size=2)
BATCHES = st.lists(GOOD, min_size=1, max_size=6) | st.lists(GOOD | NEAR, min_size=1,
                                                            max_size=6) | st.lists(
    ITEMS, min_size=1, max_size=6)


def problem(obj: Any) -> tuple[int, str] | None:
    """(status, error) of a bad record per the contract, None for a good one."""
    if not isinstance(obj, dict):
        return 400, "bad_record"
    if "message" not in obj:
        return 422, "missing_message"
    level = obj.get("level")
    if level is not None and level_severity(level) is None:
        return 422, "bad_level"
    ts = obj.get("timestamp")
    if ts is not None and record_time(ts) is None:
        return 422, "bad_timestamp"
    return None


def severity(obj: dict[str, Any]) -> int:
    level = obj.get("level")
    found = level_severity(obj.get("severity") if level is None else level)
    return INFO if found is None else found


def first_problem(objs: list[Any]) -> tuple[int, int, str] | None:
    for i, obj in enumerate(objs):
        found = problem(obj)
        if found is not None:
            return i, *found
    return None


@examples(400)
@given(BATCHES)
def test_fast_and_record_by_record_checks_agree_with_the_contract(objs: list[Any]) -> None:
    fast = _valid_severities(objs)
    bad = first_problem(objs)
    positions = [10 + 3 * i for i in range(len(objs))]  # line numbers, say
    if bad is None:
        want = bytes(severity(o) for o in objs)
        assert _checked_severities(objs, "line", positions) == want
        # None is allowed: rare spellings ("wARN") are left to the per-record check.
        assert fast in (None, want)
        return
    assert fast is None
    index, status, error = bad
    try:
        _checked_severities(objs, "line", positions)
    except BadRequest as e:
        assert (e.status, e.error) == (status, error)
        assert str(e).startswith(f"line {positions[index]}: ")
    else:
        raise AssertionError(f"accepted a batch with a bad record at {index}")


# A `severity` field without a level is rare and goes record by record; the rest does not.
USUAL = st.fixed_dictionaries({"message": st.text(max_size=6)}, optional={
    "level": USUAL_LEVELS | st.sampled_from(NAMES).map(str.upper),
    "timestamp": st.integers(0, 2**32) | st.floats(0, 2**32) | st.none()
    | st.sampled_from(["2026-11-23T10:00:00Z", "2026-11-23T10:00:00.5+02:00"])})


@examples(100)
@given(st.lists(USUAL, min_size=1, max_size=20))
def test_batches_of_usual_records_take_the_fast_path(objs: list[Any]) -> None:
    assert _valid_severities(objs) == bytes(severity(o) for o in objs)


# -- the body parser --

LISTENER = HttpListener(HttpListenerConfig())


def ndjson(draw: st.DrawFn, objs: list[Any]) -> tuple[bytes, list[int]]:
    """`objs` as NDJSON with blank lines, CRLFs and spaces here and there; with each
    record's line number."""
    lines: list[bytes] = []
    numbers = []
    for obj in objs:
        for _ in range(draw(st.integers(0, 2))):
            lines.append(draw(st.sampled_from([b"", b"  ", b"\r", b"\t "])))
        lines.append(json.dumps(obj).encode() + draw(st.sampled_from([b"", b"\r", b" "])))
        numbers.append(len(lines))
    return b"\n".join(lines) + draw(st.sampled_from([b"", b"\n", b"\n\n"])), numbers


@dataclass
class Body:
    data: bytes
    content_type: str
    objs: list[Any] | None = None  # the records it holds; None for garbage
    where: str = ""  # how a bad record is named: "record", "index" or "line"
    positions: list[int] = field(default_factory=list)


@st.composite
def bodies(draw: st.DrawFn) -> Body:
    kind = draw(st.sampled_from(["array", "object", "ndjson", "garbage", "mangled"]))
    ctype = draw(st.sampled_from(["application/json", "text/plain", ""]))
    if kind == "garbage":
        return Body(draw(st.binary(max_size=40)),
                    draw(st.sampled_from(["application/json", "application/x-ndjson"])))
    objs = draw(BATCHES)
    if kind == "object" and isinstance(objs[0], dict):
        return Body(json.dumps(objs[0]).encode(), ctype, objs[:1], "record", [0])
    if kind in ("object", "array"):
        return Body(json.dumps(objs).encode(), ctype, objs, "index", list(range(len(objs))))
    data, numbers = ndjson(draw, objs)
    if kind == "mangled":  # a byte changed somewhere: maybe still JSON, maybe not
        at = draw(st.integers(0, max(0, len(data) - 1)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=2)) + data[at + 1:]
        return Body(data, "application/x-ndjson")
    return Body(data, "application/x-ndjson", objs, "line", numbers)


@examples(400)
@given(bodies())
def test_any_body_is_taken_or_refused_with_a_bad_request(body: Body) -> None:
    try:
        payloads, parsed, sevs = LISTENER._parse(body.data, body.content_type)
    except BadRequest as e:
        assert e.status in (400, 422) and e.error and str(e)
        bad = None if body.objs is None else first_problem(body.objs)
        # Records that JSON holds are all good, or the first bad one is the one named.
        assert body.objs is None or bad is not None
        if bad is not None:
            index, status, error = bad
            assert (e.status, e.error) == (status, error)
            assert str(e).startswith(f"{body.where} {body.positions[index]}: ")
        return
    assert len(sevs) == len(parsed) >= 1 and max(sevs) <= 7
    assert all(problem(o) is None for o in parsed)
    assert sevs == bytes(severity(o) for o in parsed)
    if body.objs is not None:
        assert parsed == body.objs
    if body.content_type == "application/x-ndjson":
        assert payloads is not None and len(payloads) == len(parsed)
        for payload, obj in zip(payloads, parsed, strict=True):
            assert not payload.endswith(b"\r") and json.loads(payload) == obj
