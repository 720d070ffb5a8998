"""OTLP log requests -> logd records: the mapping, field by field, in both encodings."""

from __future__ import annotations

import copy
import math
from typing import Any

import orjson
import pytest

from logd.fields import apps_of, level_texts, metadata_json, severity_name
from logd.otlp.otlp_json import from_json, is_otlp_json
from logd.otlp.protobuf import decode_protobuf
from logd.otlp.records import SEVERITY_ENUM_NAMES, BadOtlp, Mapped
from testkit.otlp import SPAN_ID, TRACE_ID, log_record, request, to_json

T0 = 1_764_000_000_123_456_789


def both(req: Any) -> tuple[Mapped, Mapped]:
    """The request decoded from its protobuf bytes and from its OTLP/JSON text."""
    return (decode_protobuf(req.SerializeToString()),
            from_json(orjson.loads(orjson.dumps(to_json(req)))))


def test_a_full_record_maps_to_every_field_the_same_in_both_encodings() -> None:
    req = request(({"service.name": "checkout", "host.name": "web-1", "pid": 42},
                   [({"name": "io.app.db", "version": "1.2.0", "attributes": {"lib": "x"}},
                     [log_record("payment declined", time_ns=T0, observed_ns=T0 + 5,
                                 number=17, text="Error",
                                 attributes={"user": "u1", "amount": 12.5, "retry": True,
                                             "tags": ["a", "b"], "blob": b"\x00\xff"},
                                 trace_id=TRACE_ID, span_id=SPAN_ID, flags=1)])]))
    pb, js = both(req)
    expected = {
        "app_id": "checkout", "level": "Error", "message": "payment declined",
        "timestamp": T0 / 1e9,
        "resource": {"service.name": "checkout", "host.name": "web-1", "pid": 42},
        "scope": {"name": "io.app.db", "version": "1.2.0", "attributes": {"lib": "x"}},
        "attributes": {"user": "u1", "amount": 12.5, "retry": True, "tags": ["a", "b"],
                       "blob": "AP8="},
        "trace_id": TRACE_ID.hex(), "span_id": SPAN_ID.hex(), "flags": 1,
        "severity_number": 17,
    }
    assert pb.objs == [expected]
    assert js.objs == pb.objs
    assert list(pb.severities) == list(js.severities) == [3]
    assert (pb.rejected, js.rejected) == (0, 0)
    # Outputs read it like any JSON record: the app, the level as sent, the rest as metadata.
    assert apps_of(pb.objs, "otlp") == ["checkout"]
    assert level_texts(list(pb.objs), bytes(pb.severities)) == ["Error"]
    md = orjson.loads(metadata_json(pb.objs[0]))
    assert set(md) == {"resource", "scope", "attributes", "trace_id", "span_id", "flags",
                       "severity_number"}


@pytest.mark.parametrize(("number", "level", "sev"), [
    (1, "trace", 7), (4, "trace", 7), (5, "debug", 7), (9, "info", 6), (12, "info", 6),
    (13, "warn", 4), (16, "warn", 4), (17, "error", 3), (21, "fatal", 2), (24, "fatal", 2),
])
def test_severity_number_without_text_names_the_level(number: int, level: str,
                                                       sev: int) -> None:
    for m in both(request(({}, [(None, [log_record(number=number)])]))):
        assert m.objs[0]["level"] == level
        assert m.objs[0]["severity_number"] == number
        assert list(m.severities) == [sev]
        assert level_texts(list(m.objs), bytes(m.severities)) == [level]


def test_severity_text_is_kept_and_read_when_there_is_no_number() -> None:
    recs = [log_record(text="WARNING"), log_record(text="Whatever"), log_record(),
            log_record(number=99)]
    for m in both(request(({}, [(None, recs)]))):
        assert [o.get("level") for o in m.objs] == ["WARNING", "Whatever", None, None]
        assert list(m.severities) == [4, 6, 6, 6]  # unknown text and numbers: info
        assert [severity_name(s) for s in m.severities][2] == "info"
        assert m.objs[3]["severity_number"] == 99


def test_enum_names_are_read_as_protobuf_json_writes_them() -> None:
    doc = to_json(request(({}, [(None, [log_record(number=13)])])))
    doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]["severityNumber"] = \
        "SEVERITY_NUMBER_WARN"
    assert from_json(doc).objs[0]["level"] == "warn"
    assert SEVERITY_ENUM_NAMES["SEVERITY_NUMBER_FATAL4"] == 24


def test_time_falls_back_to_observed_then_to_none() -> None:
    recs = [log_record(time_ns=T0, observed_ns=T0 + 10**9), log_record(observed_ns=T0),
            log_record()]
    for m in both(request(({}, [(None, recs)]))):
        assert [o.get("timestamp") for o in m.objs] == [T0 / 1e9, T0 / 1e9, None]


def test_structured_bodies_become_json_text_messages() -> None:
    bodies = [{"user": "u", "n": 3}, ["a", 1], 7, 2.5, False, b"\x01", None]
    recs = [log_record(b) for b in bodies]
    for m in both(request(({}, [(None, recs)]))):
        assert [o["message"] for o in m.objs] == [
            '{"user":"u","n":3}', '["a",1]', "7", "2.5", "false", "AQ==", ""]


def test_64_bit_integers_may_be_numbers_or_strings_in_json() -> None:
    doc = to_json(request(({}, [(None, [log_record(time_ns=T0, attributes={"big": 2**62})])])))
    rec = doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    assert rec["timeUnixNano"] == str(T0)  # protobuf's JSON mapping writes strings
    as_numbers = copy.deepcopy(doc)
    r2 = as_numbers["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    r2["timeUnixNano"] = T0
    r2["attributes"][0]["value"]["intValue"] = 2**62
    assert from_json(doc).objs == from_json(as_numbers).objs
    assert from_json(doc).objs[0]["attributes"] == {"big": 2**62}


def test_resources_and_scopes_are_shared_by_their_records_only() -> None:
    req = request(
        ({"service.name": "a"}, [({"name": "s1"}, [log_record("1"), log_record("2")]),
                                 (None, [log_record("3")])]),
        ({"team": "x"}, [({"name": "s2", "version": "9"}, [log_record("4")])]))
    pb, js = both(req)
    assert pb.objs == js.objs
    assert [(o.get("app_id"), o.get("scope"), o.get("resource")) for o in pb.objs] == [
        ("a", {"name": "s1"}, {"service.name": "a"}),
        ("a", {"name": "s1"}, {"service.name": "a"}),
        ("a", None, {"service.name": "a"}),
        (None, {"name": "s2", "version": "9"}, {"team": "x"})]
    assert apps_of(pb.objs, "otlp")[3] == "otlp"  # no service.name: the listener's name


def test_a_service_name_that_is_not_a_string_is_no_app() -> None:
    for m in both(request(({"service.name": 5}, [(None, [log_record()])]))):
        assert "app_id" not in m.objs[0] and m.objs[0]["resource"] == {"service.name": 5}


def test_bad_ids_reject_their_record_only() -> None:
    req = request(({}, [(None, [log_record("ok"), log_record("t", trace_id=b"\x01" * 15),
                                log_record("s", span_id=b"\x01" * 9), log_record("ok2")])]))
    pb, js = both(req)
    for m in (pb, js):
        assert [o["message"] for o in m.objs] == ["ok", "ok2"]
        assert m.rejected == 2
        assert len(m.severities) == 2
    assert "log_records[1]" in pb.first_error and "trace_id of 15 bytes" in pb.first_error
    assert "logRecords[1]" in js.first_error and "traceId of 15 bytes" in js.first_error


@pytest.mark.parametrize(("change", "why"), [
    ({"traceId": "zz" * 16}, "not hex"),
    ({"spanId": 5}, "expected a hex string"),
    ({"timeUnixNano": "soon"}, "timeUnixNano"),
    ({"timeUnixNano": -1}, "timeUnixNano"),
    ({"severityNumber": "LOUD"}, "severityNumber"),
    ({"severityText": 3}, "severityText"),
    ({"body": "plain"}, "AnyValue must be an object"),
    ({"body": {"intValue": "1.5"}}, "intValue"),
    ({"body": {"bytesValue": "!!"}}, "base64"),
    ({"attributes": {"k": "v"}}, "attributes"),
    ({"attributes": [{"key": "k", "value": {"boolValue": "yes"}}]}, "boolValue"),
    ({"flags": 2**32}, "flags"),
    # What int() would refuse with a ValueError, or take though OTLP/JSON does not write it.
    ({"body": {"intValue": "--5"}}, "intValue"),
    ({"attributes": [{"key": "k", "value": {"intValue": "--5"}}]}, "intValue"),
    ({"body": {"intValue": "1" * 4301}}, "intValue"),
    ({"body": {"intValue": "-" + "1" * 5000}}, "intValue"),
    ({"body": {"intValue": "\u0663"}}, "intValue"),  # an Arabic-Indic 3
    ({"body": {"intValue": "+5"}}, "intValue"),
    ({"body": {"intValue": "1_0"}}, "intValue"),
    ({"body": {"intValue": "5\n"}}, "intValue"),
    ({"timeUnixNano": "1" * 4301}, "timeUnixNano"),
    ({"observedTimeUnixNano": "9" * 10_000}, "observedTimeUnixNano"),
    ({"timeUnixNano": "\u0663"}, "timeUnixNano"),
    ({"timeUnixNano": "18446744073709551616"}, "timeUnixNano"),
    ({"flags": "7" * 4301}, "flags"),
])
def test_json_records_of_the_wrong_shape_are_rejected_alone(change: dict[str, Any],
                                                            why: str) -> None:
    doc = to_json(request(({}, [(None, [log_record("bad"), log_record("good")])])))
    doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0].update(change)
    m = from_json(doc)
    assert [o["message"] for o in m.objs] == ["good"]
    assert m.rejected == 1 and why in m.first_error, m.first_error


def test_64_bit_integer_strings_at_their_limits_are_read() -> None:
    doc = to_json(request(({}, [(None, [log_record("x")])])))
    rec = doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    rec.update({"timeUnixNano": str(2**64 - 1), "flags": "4294967295",
                "attributes": [{"key": "lo", "value": {"intValue": str(-2**63)}},
                               {"key": "hi", "value": {"intValue": str(2**63 - 1)}},
                               {"key": "z", "value": {"intValue": "-0"}}]})
    m = from_json(doc)
    assert m.rejected == 0, m.first_error
    assert m.objs[0]["attributes"] == {"lo": -2**63, "hi": 2**63 - 1, "z": 0}
    assert m.objs[0]["flags"] == 2**32 - 1 and m.objs[0]["timestamp"] == (2**64 - 1) / 1e9


def test_an_unforeseen_error_in_a_json_record_rejects_that_record_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from logd.otlp import otlp_json
    real = otlp_json._json_record

    def failing(rec: Any, *args: Any) -> Any:
        if rec.get("eventName") == "boom":
            raise ValueError("unforeseen")
        return real(rec, *args)

    monkeypatch.setattr(otlp_json, "_json_record", failing)
    doc = to_json(request(({}, [(None, [log_record("a"), log_record("b"),
                                        log_record("c")])])))
    doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"][1]["eventName"] = "boom"
    m = from_json(doc)
    assert [o["message"] for o in m.objs] == ["a", "c"]
    assert m.rejected == 1 and "logRecords[1]" in m.first_error
    assert "ValueError: unforeseen" in m.first_error


@pytest.mark.parametrize("doc", [
    {"resourceLogs": {"not": "a list"}},
    {"resourceLogs": [5]},
    {"resourceLogs": [{"scopeLogs": "x"}]},
    {"resourceLogs": [{"resource": {"attributes": [{"key": 1}]}}]},
    {"resourceLogs": [{"scopeLogs": [{"scope": {"name": 3}}]}]},
    {"resourceLogs": [{"scopeLogs": [{"logRecords": {}}]}]},
])
def test_json_of_the_wrong_shape_above_the_records_is_bad_otlp(doc: dict[str, Any]) -> None:
    with pytest.raises(BadOtlp):
        from_json(doc)


def test_bytes_that_are_no_request_are_bad_otlp() -> None:
    with pytest.raises(BadOtlp, match="not a protobuf ExportLogsServiceRequest"):
        decode_protobuf(b"\x0a\xff\xff\xff\xff\x0f")  # a field longer than the body


def test_unknown_json_keys_are_ignored() -> None:
    doc = to_json(request(({}, [(None, [log_record("m")])])))
    doc["extra"] = 1
    doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]["futureField"] = {"x": 1}
    assert from_json(doc).objs == [{"message": "m"}]


def test_deep_values_reject_their_record() -> None:
    deep: Any = "leaf"
    for _ in range(25):
        deep = {"k": deep}
    pb, js = both(request(({}, [(None, [log_record(deep), log_record("ok")])])))
    for m in (pb, js):
        assert [o["message"] for o in m.objs] == ["ok"] and m.rejected == 1
        assert "nested deeper" in m.first_error


def test_doubles_that_are_not_numbers_become_null() -> None:
    pb, js = both(request(({}, [(None, [log_record(attributes={"x": math.inf})])])))
    assert pb.objs == js.objs == [{"message": "hello", "attributes": {"x": math.inf}}]
    assert orjson.loads(metadata_json(pb.objs[0])) == {"attributes": {"x": None}}


def test_otlp_json_is_told_from_logd_json_by_shape() -> None:
    assert is_otlp_json({"resourceLogs": []})
    assert is_otlp_json({"message": "m", "resourceLogs": []})  # resourceLogs decides
    assert not is_otlp_json([{"resourceLogs": []}])
    assert not is_otlp_json({"message": "hi"})


@pytest.mark.parametrize("attributes", [
    {"k" * 200: "v" * 300},                      # lengths of two varint bytes
    {"big": "x" * 20_000},                       # and of three
    {"": "", "e": 0, "neg": -(2**63), "max": 2**63 - 1, "f": False, "t": True},
    {"n": -1, "d": 0.0, "none": None, "l": [], "m": {}},
    {"same": "a", "same ": "b"},
])
def test_attributes_of_every_size_and_kind_read_as_the_official_classes_read_them(
        attributes: dict[str, Any]) -> None:
    pb, js = both(request(({}, [(None, [log_record(attributes=attributes)] * 3)])))
    assert pb.objs == js.objs == [{"message": "hello", "attributes": attributes}] * 3


def test_invalid_utf8_in_an_attribute_rejects_its_record() -> None:
    good = request(({}, [(None, [log_record(attributes={"k": "ab"}), log_record("ok")])]))
    data = good.SerializeToString().replace(b"ab", b"\xff\xfe", 1)
    m = decode_protobuf(data)
    assert [o["message"] for o in m.objs] == ["ok"] and m.rejected == 1
    assert "UTF-8" in m.first_error or "utf" in m.first_error.lower()


@pytest.mark.parametrize("field", ["severity_text", "event_name"])
def test_a_log_record_string_that_is_not_utf8_rejects_its_record_only(field: str) -> None:
    bad = log_record("bad")
    setattr(bad, field, "MARK")
    good = request(({}, [(None, [log_record("ok"), bad, log_record("ok2", text="Warn")])]))
    good.resource_logs[0].scope_logs[0].log_records[2].event_name = "ev"
    data = good.SerializeToString()
    assert data.count(b"MARK") == 1
    m = decode_protobuf(data.replace(b"MARK", b"M\xff\xfeK"))
    assert [o["message"] for o in m.objs] == ["ok", "ok2"] and m.rejected == 1
    assert "log_records[1]" in m.first_error and f"{field}: " in m.first_error
    assert "UTF-8" in m.first_error
    assert m.objs[1]["level"] == "Warn" and m.objs[1]["event_name"] == "ev"
    assert list(m.severities) == [6, 4]


def test_an_unforeseen_error_in_a_protobuf_record_rejects_that_record_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from logd.otlp import protobuf
    real = protobuf._body_message

    def failing(data: bytes) -> str:
        if b"boom" in data:
            raise ValueError("unforeseen")
        return real(data)

    monkeypatch.setattr(protobuf, "_body_message", failing)
    req = request(({}, [(None, [log_record("a"), log_record("boom"), log_record("c")])]))
    m = decode_protobuf(req.SerializeToString())
    assert [o["message"] for o in m.objs] == ["a", "c"]
    assert m.rejected == 1 and "log_records[1]" in m.first_error
    assert "ValueError: unforeseen" in m.first_error


def test_database_and_kafka_rows_carry_the_nested_fields_in_metadata() -> None:
    from logd.fields import record_rows
    from logd.record import Batch

    pb, _ = both(request(({"service.name": "svc"}, [({"name": "lib"}, [
        log_record("m", time_ns=T0, number=13, attributes={"k": 1}, trace_id=TRACE_ID)])])))
    batch = Batch.from_objects(pb.objs, bytes(pb.severities), "otlp", 1.0, 100)
    rows = record_rows(batch, lambda ts, received: ts)
    assert [r[:5] for r in rows] == [("svc", "warn", "m", "otlp", T0 / 1e9)]
    assert orjson.loads(rows[0][5]) == {
        "resource": {"service.name": "svc"}, "scope": {"name": "lib"}, "attributes": {"k": 1},
        "trace_id": TRACE_ID.hex(), "severity_number": 13}
