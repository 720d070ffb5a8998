"""Properties of the OTLP mapping on any ExportLogsServiceRequest built with the official
protobuf classes: it never raises, every log record is either taken or rejected (and only
those with ids of the wrong size are), every taken record serializes, and the OTLP/JSON
encoding of the same request gives the same records and severities."""

from __future__ import annotations

import math
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from logd.fields import metadata_json
from logd.otlp.otlp_json import from_json
from logd.otlp.protobuf import decode_protobuf
from logd.otlp.records import NUMBER_SEVERITIES, BadOtlp
from testkit.otlp import log_record, request, to_json
from testkit.props import examples

SCALARS = (st.text(max_size=8) | st.booleans() | st.integers(-2**63, 2**63 - 1)
           | st.floats(allow_nan=True, allow_infinity=True) | st.binary(max_size=8)
           | st.none())
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                      max_leaves=10)
ATTRS = st.dictionaries(st.text(max_size=6), VALUES, max_size=4)
IDS = st.sampled_from([b"", b"\x01" * 16, b"\x02" * 8, b"\x03" * 5])


@st.composite
def records(draw: st.DrawFn) -> Any:
    trace = draw(IDS)
    span = draw(IDS)
    rec = log_record(draw(VALUES), time_ns=draw(st.integers(0, 2**64 - 1)),
                     observed_ns=draw(st.integers(0, 2**64 - 1)),
                     number=draw(st.integers(0, 30)),
                     text=draw(st.sampled_from(["", "INFO", "warn", "Error", "odd", "7"])),
                     attributes=draw(ATTRS), trace_id=trace, span_id=span,
                     flags=draw(st.integers(0, 2**32 - 1)))
    return rec


SCOPES = st.none() | st.fixed_dictionaries(
    {}, optional={"name": st.text(max_size=5), "version": st.text(max_size=3),
                  "attributes": ATTRS})
REQUESTS = st.lists(st.tuples(ATTRS | st.just({"service.name": "svc"}),
                              st.lists(st.tuples(SCOPES, st.lists(records(), max_size=4)),
                                       max_size=3)),
                    max_size=3).map(lambda rs: request(*rs))


def valid_ids(rec: Any) -> bool:
    return len(rec.trace_id) in (0, 16) and len(rec.span_id) in (0, 8)


def same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to itself (a double attribute may be NaN)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@examples(100)
@given(REQUESTS)
def test_every_record_is_taken_or_rejected_and_both_encodings_agree(
        req: ExportLogsServiceRequest) -> None:
    recs = [r for rl in req.resource_logs for sl in rl.scope_logs for r in sl.log_records]
    pb = decode_protobuf(req.SerializeToString())
    assert len(pb.objs) == len(pb.severities) == sum(map(valid_ids, recs))
    assert pb.rejected == len(recs) - len(pb.objs)
    for obj, sev, rec in zip(pb.objs, pb.severities, filter(valid_ids, recs), strict=True):
        assert type(obj["message"]) is str
        orjson.loads(metadata_json(obj))  # every record's metadata is JSON
        if rec.severity_number in NUMBER_SEVERITIES:
            assert sev == NUMBER_SEVERITIES[rec.severity_number]
        assert obj.get("timestamp") == ((rec.time_unix_nano or rec.observed_time_unix_nano)
                                        / 1e9 or None)
    js = from_json(orjson.loads(orjson.dumps(to_json(req))))
    assert same(js.objs, pb.objs)
    assert js.severities == pb.severities
    assert js.rejected == pb.rejected


@examples(100)
@given(st.binary(max_size=64))
def test_any_bytes_decode_or_are_refused_as_bad_otlp(data: bytes) -> None:
    try:
        m = decode_protobuf(data)
    except BadOtlp:
        return
    assert len(m.objs) == len(m.severities)
