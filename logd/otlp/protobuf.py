"""OTLP log requests in protobuf (application/x-protobuf) as logd records (see records)."""

from __future__ import annotations

from base64 import b64encode
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from logd.fields import INFO
from logd.otlp.records import (
    MAX_DEPTH,
    NUMBER_LEVELS,
    NUMBER_SEVERITIES,
    STR,
    BadOtlp,
    Invalid,
    Mapped,
    message_of,
    severity,
    unexpected,
)

# Decoding is most of what an OTLP request costs, and protobuf's Python objects cost most
# per nested message reached (a wrapper each): a record's attributes, six KeyValues and six
# AnyValues, would take 70% of the time. So the request is parsed by upb (in C) against a
# view of the schema, wire-compatible with opentelemetry-proto's, in which a log record's
# body and attributes, a resource and a scope stay encoded bytes. Attributes are then read
# through a cache keyed by their encoding (most repeat from record to record),
# with a short path for the usual string, integer and boolean values; anything else is
# parsed with the official classes. Strings read here are checked as UTF-8, as upb checks
# those it parses.


def _view_classes() -> dict[str, Any]:
    F = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="logd/otlp/view.proto",
                                              package="logd.otlpview", syntax="proto3")
    one, many = F.LABEL_OPTIONAL, F.LABEL_REPEATED

    def message(name: str, *fields: tuple[str, int, int, int, str]) -> None:
        m = file.message_type.add(name=name)
        for fname, number, kind, label, type_name in fields:
            f = m.field.add(name=fname, number=number, type=kind, label=label)
            if type_name:
                f.type_name = f".logd.otlpview.{type_name}"

    # Field numbers and wire types as opentelemetry/proto/{collector/,}logs/v1/*.proto.
    message("ExportLogsServiceRequest",
            ("resource_logs", 1, F.TYPE_MESSAGE, many, "ResourceLogs"))
    message("ResourceLogs", ("resource", 1, F.TYPE_BYTES, one, ""),
            ("scope_logs", 2, F.TYPE_MESSAGE, many, "ScopeLogs"))
    message("ScopeLogs", ("scope", 1, F.TYPE_BYTES, one, ""),
            ("log_records", 2, F.TYPE_MESSAGE, many, "LogRecord"))
    message("LogRecord",
            ("time_unix_nano", 1, F.TYPE_FIXED64, one, ""),
            ("severity_number", 2, F.TYPE_INT32, one, ""),  # an open enum: int32 on the wire
            ("severity_text", 3, F.TYPE_BYTES, one, ""),  # strings: see below
            ("body", 5, F.TYPE_BYTES, one, ""),
            ("attributes", 6, F.TYPE_BYTES, many, ""),
            ("flags", 8, F.TYPE_FIXED32, one, ""),
            ("trace_id", 9, F.TYPE_BYTES, one, ""),
            ("span_id", 10, F.TYPE_BYTES, one, ""),
            ("observed_time_unix_nano", 11, F.TYPE_FIXED64, one, ""),
            ("event_name", 12, F.TYPE_BYTES, one, ""))
    # A LogRecord's strings are bytes here and decoded record by record: upb refuses a
    # whole message over one string field that is not UTF-8, and such a record is to be
    # rejected alone.
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {name: message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"logd.otlpview.{name}"))
        for name in ("ExportLogsServiceRequest", "LogRecord")}


_VIEW = _view_classes()
_RequestView = _VIEW["ExportLogsServiceRequest"]


def decode_protobuf(body: bytes) -> Mapped:
    """The records of a protobuf ExportLogsServiceRequest; BadOtlp when it does not decode."""
    try:
        request = _RequestView.FromString(body)
    except Exception as e:  # upb's DecodeError, or a message nested too deep
        raise BadOtlp(f"not a protobuf ExportLogsServiceRequest: {e}") from None
    out = Mapped()
    objs = out.objs
    sevs = out.severities
    numbers = NUMBER_LEVELS
    number_sevs = NUMBER_SEVERITIES
    if len(_ATTRIBUTES) > CACHE_ENTRIES:
        _ATTRIBUTES.clear()
    attribute = _ATTRIBUTES.__getitem__
    for ri, rl in enumerate(request.resource_logs):
        try:
            resource = _pb_attributes(Resource.FromString(rl.resource).attributes, 0)
        except (Invalid, DecodeError) as e:
            raise BadOtlp(f"resource_logs[{ri}].resource: {e}") from None
        app = resource.get("service.name")
        if type(app) is not STR:
            app = None
        for si, sl in enumerate(rl.scope_logs):
            try:
                scope = _pb_scope(InstrumentationScope.FromString(sl.scope)) if sl.scope \
                    else None
            except (Invalid, DecodeError) as e:
                raise BadOtlp(f"resource_logs[{ri}].scope_logs[{si}].scope: {e}") from None
            for li, rec in enumerate(sl.log_records):
                obj: dict[str, Any] = {}
                if app is not None:
                    obj["app_id"] = app
                number = rec.severity_number
                try:
                    raw_text = rec.severity_text
                    if raw_text:
                        text = _utf8(raw_text, "severity_text")
                        obj["level"] = text
                        sev = number_sevs.get(number)
                        if sev is None:
                            sev = severity(text, number)
                    else:
                        level = numbers.get(number)
                        if level is not None:
                            obj["level"] = level
                            sev = number_sevs[number]
                        else:
                            sev = INFO
                    body = rec.body
                    obj["message"] = _body_message(body) if body else ""
                    stamp = rec.time_unix_nano or rec.observed_time_unix_nano
                    if stamp:
                        obj["timestamp"] = stamp / 1e9
                    if resource:
                        obj["resource"] = resource
                    if scope is not None:
                        obj["scope"] = scope
                    attrs = rec.attributes
                    if attrs:
                        obj["attributes"] = dict(map(attribute, attrs))
                    trace = rec.trace_id
                    if trace:
                        if len(trace) != 16:
                            raise Invalid(f"trace_id of {len(trace)} bytes, expected 16")
                        obj["trace_id"] = trace.hex()
                    span = rec.span_id
                    if span:
                        if len(span) != 8:
                            raise Invalid(f"span_id of {len(span)} bytes, expected 8")
                        obj["span_id"] = span.hex()
                    event = _utf8(rec.event_name, "event_name") if rec.event_name else ""
                except Invalid as e:
                    out.reject(f"resource_logs[{ri}].scope_logs[{si}].log_records[{li}]",
                               str(e))
                    continue
                except Exception as e:  # what no check foresaw: still this record's own
                    out.reject(f"resource_logs[{ri}].scope_logs[{si}].log_records[{li}]",
                               unexpected(e))
                    continue
                if rec.flags:
                    obj["flags"] = rec.flags
                if number:
                    obj["severity_number"] = number
                if event:
                    obj["event_name"] = event
                objs.append(obj)
                sevs.append(sev)
    return out


def _utf8(data: bytes, key: str) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise Invalid(f"{key}: a string that is not UTF-8") from None


def _length(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at pos (a length) and where what it measures starts; IndexError past the
    end."""
    n = data[pos]
    if n < 0x80:
        return n, pos + 1
    n &= 0x7F
    shift = 7
    while True:
        pos += 1
        b = data[pos]
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return n, pos + 1
        shift += 7


def _string_to_end(data: bytes, pos: int) -> str | None:
    """The string of a string_value (field 1) at pos that ends the data exactly; None when
    the bytes there are something else. Lengths up to 16 KiB are read inline."""
    if data[pos] != 0x0A:
        return None
    n = data[pos + 1]
    if n < 0x80:
        start = pos + 2
    elif data[pos + 2] < 0x80:
        n = (n & 0x7F) | data[pos + 2] << 7
        start = pos + 3
    else:
        n, start = _length(data, pos + 1)
    if start + n != len(data):
        return None
    try:
        return data[start:].decode()
    except UnicodeDecodeError:
        raise Invalid("a string that is not UTF-8") from None


def _body_message(data: bytes) -> str:
    try:
        s = _string_to_end(data, 0)
    except IndexError:
        s = None
    if s is not None:
        return s
    try:
        value = AnyValue.FromString(data)
    except DecodeError as e:
        raise Invalid(f"body: {e}") from None
    return message_of(_pb_value(value, 1))


class _KeyValues(dict[bytes, tuple[str, Any]]):
    """Encoded KeyValue -> (key, value), decoded the first time each is seen. Kept across
    requests (the same services send the same attributes again), bounded: only short
    encodings are kept, and the whole is emptied when it holds CACHE_ENTRIES."""

    def __missing__(self, data: bytes) -> tuple[str, Any]:
        found = _key_value(data)
        if len(data) <= CACHE_KEY_BYTES:
            self[data] = found
        return found


CACHE_ENTRIES = 50_000
CACHE_KEY_BYTES = 128  # at most ~15 MB of cache
_ATTRIBUTES = _KeyValues()


def _key_value(data: bytes) -> tuple[str, Any]:
    # The usual form, read inline: key (field 1) shorter than 128 bytes, then the value
    # (field 2), shorter than 128 bytes or ending the data, holding one string, integer or
    # boolean. Anything else goes to the official class.
    try:
        if data[0] == 0x0A and data[1] < 0x80:
            end = 2 + data[1]
            if data[end] == 0x12:
                vn = data[end + 1]
                at = end + 2
                if vn >= 0x80:
                    vn, at = _length(data, end + 1)
                if at + vn == len(data):
                    tag = data[at]
                    if tag == 0x0A:
                        if data[at + 1] == vn - 2:  # a string shorter than 126 bytes
                            return data[2:end].decode(), data[at + 2:].decode()
                        s = _string_to_end(data, at)
                        if s is not None:
                            return data[2:end].decode(), s
                    elif tag == 0x18 and data[-1] < 0x80:
                        n, stop = _length(data, at + 1)
                        if stop == len(data) and n < 1 << 64:
                            return data[2:end].decode(), n - (1 << 64) if n >= 1 << 63 else n
                    elif tag == 0x10 and vn == 2 and data[at + 1] < 2:
                        return data[2:end].decode(), data[at + 1] == 1
    except (IndexError, UnicodeDecodeError):
        pass
    try:
        kv = KeyValue.FromString(data)
    except DecodeError as e:
        raise Invalid(f"attributes: {e}") from None
    return kv.key, _pb_value(kv.value, 1)


def _pb_scope(s: Any) -> dict[str, Any] | None:
    scope: dict[str, Any] = {}
    if s.name:
        scope["name"] = s.name
    if s.version:
        scope["version"] = s.version
    if s.attributes:
        scope["attributes"] = _pb_attributes(s.attributes, 1)
    return scope or None


def _pb_attributes(kvs: Any, depth: int) -> dict[str, Any]:
    if depth > MAX_DEPTH:
        raise Invalid(f"values nested deeper than {MAX_DEPTH} levels")
    out: dict[str, Any] = {}
    for kv in kvs:
        v = kv.value
        kind = v.WhichOneof("value")
        out[kv.key] = v.string_value if kind == "string_value" else _pb_other(v, kind, depth)
    return out


def _pb_value(v: Any, depth: int) -> Any:
    kind = v.WhichOneof("value")
    return v.string_value if kind == "string_value" else _pb_other(v, kind, depth)


def _pb_other(v: Any, kind: str | None, depth: int) -> Any:
    if kind is None:
        return None
    if kind == "kvlist_value":
        return _pb_attributes(v.kvlist_value.values, depth + 1)
    if kind == "array_value":
        if depth >= MAX_DEPTH:
            raise Invalid(f"values nested deeper than {MAX_DEPTH} levels")
        return [_pb_value(x, depth + 1) for x in v.array_value.values]
    if kind == "bytes_value":
        return b64encode(v.bytes_value).decode()
    return getattr(v, kind)
