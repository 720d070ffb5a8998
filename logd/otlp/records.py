"""An ExportLogsServiceRequest as logd records: one JSON object per OTLP log record.

Each record reads as "How a record is read" (logd/fields.py) says:
- `app_id`: the resource's `service.name` (when it is a string);
- `level`: `severityText`, else the name of `severityNumber`'s range (1-4 trace, 5-8 debug,
  9-12 info, 13-16 warn, 17-20 error, 21-24 fatal), else none (read as info);
- `message`: the body when it is a string, else the body's JSON text ("" without one);
- `timestamp`: `timeUnixNano`, else `observedTimeUnixNano`, in epoch seconds; else none (the
  arrival time);
- the rest as nested fields, kept in metadata: `resource` (its attributes), `scope` (`name`,
  `version`, `attributes`), `attributes`, `trace_id` and `span_id` (lower-case hex), `flags`,
  `severity_number`, `event_name`; each only when the request has it.
AnyValues become JSON values: strings, booleans, numbers, arrays, objects for kvlists, and
bytes as base64 text (as OTLP/JSON writes them).

The severity logd filters on is severityNumber's range when it has one, else the level's name
(logd's names, any case), else info.

A log record that cannot be valid (a trace id that is not 16 bytes, a span id not 8, in JSON
a value of the wrong type) is rejected alone and counted; the others are taken. The protobuf
and the JSON encodings of one request give the same records.
"""

from __future__ import annotations

import binascii
from base64 import b64encode
from dataclasses import dataclass, field
from typing import Any

import orjson
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from logd.fields import INFO, severity_from_name

MAX_DEPTH = 20  # AnyValue nesting kept; deeper values reject their record (protobuf
# itself refuses messages nested 100 deep, about 30 levels of kvlists)

# severityNumber -> (level name, syslog severity); 0 (unspecified) and numbers outside 1-24
# name nothing.
_RANGES = (("trace", 7), ("debug", 7), ("info", 6), ("warn", 4), ("error", 3), ("fatal", 2))
NUMBER_LEVELS: dict[int, str] = {n: _RANGES[(n - 1) // 4][0] for n in range(1, 25)}
NUMBER_SEVERITIES: dict[int, int] = {n: _RANGES[(n - 1) // 4][1] for n in range(1, 25)}
# OTLP/JSON writes enums as integers; protobuf's JSON mapping also allows their names.
SEVERITY_ENUM_NAMES: dict[str, int] = {"SEVERITY_NUMBER_UNSPECIFIED": 0}
for _n in range(1, 25):
    _name, _sev = _RANGES[(_n - 1) // 4]
    _suffix = "" if (_n - 1) % 4 == 0 else str((_n - 1) % 4 + 1)
    SEVERITY_ENUM_NAMES[f"SEVERITY_NUMBER_{_name.upper()}{_suffix}"] = _n

_STR = str
_DICT = dict


@dataclass
class Mapped:
    """What a request became: the records taken, their severities, and what was rejected."""

    objs: list[dict[str, Any]] = field(default_factory=list)
    severities: bytearray = field(default_factory=bytearray)
    rejected: int = 0
    first_error: str = ""  # where and why the first rejected record was rejected

    def reject(self, where: str, why: str) -> None:
        if not self.rejected:
            self.first_error = f"{where}: {why}"
        self.rejected += 1


class BadOtlp(Exception):
    """The request cannot be read (not an ExportLogsServiceRequest)."""


class _Invalid(Exception):
    """One log record cannot be valid."""


def _severity(text: str, number: int) -> int:
    sev = NUMBER_SEVERITIES.get(number)
    if sev is None:
        sev = severity_from_name(text) if text else None
        if sev is None:
            return INFO
    return sev


# -- protobuf --
#
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
            ("severity_text", 3, F.TYPE_STRING, one, ""),
            ("body", 5, F.TYPE_BYTES, one, ""),
            ("attributes", 6, F.TYPE_BYTES, many, ""),
            ("flags", 8, F.TYPE_FIXED32, one, ""),
            ("trace_id", 9, F.TYPE_BYTES, one, ""),
            ("span_id", 10, F.TYPE_BYTES, one, ""),
            ("observed_time_unix_nano", 11, F.TYPE_FIXED64, one, ""),
            ("event_name", 12, F.TYPE_STRING, one, ""))
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
        except (_Invalid, DecodeError) as e:
            raise BadOtlp(f"resource_logs[{ri}].resource: {e}") from None
        app = resource.get("service.name")
        if type(app) is not _STR:
            app = None
        for si, sl in enumerate(rl.scope_logs):
            try:
                scope = _pb_scope(InstrumentationScope.FromString(sl.scope)) if sl.scope \
                    else None
            except (_Invalid, DecodeError) as e:
                raise BadOtlp(f"resource_logs[{ri}].scope_logs[{si}].scope: {e}") from None
            for li, rec in enumerate(sl.log_records):
                obj: dict[str, Any] = {}
                if app is not None:
                    obj["app_id"] = app
                text = rec.severity_text
                number = rec.severity_number
                if text:
                    obj["level"] = text
                    sev = number_sevs.get(number)
                    if sev is None:
                        sev = _severity(text, number)
                else:
                    level = numbers.get(number)
                    if level is not None:
                        obj["level"] = level
                        sev = number_sevs[number]
                    else:
                        sev = INFO
                try:
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
                            raise _Invalid(f"trace_id of {len(trace)} bytes, expected 16")
                        obj["trace_id"] = trace.hex()
                    span = rec.span_id
                    if span:
                        if len(span) != 8:
                            raise _Invalid(f"span_id of {len(span)} bytes, expected 8")
                        obj["span_id"] = span.hex()
                except _Invalid as e:
                    out.reject(f"resource_logs[{ri}].scope_logs[{si}].log_records[{li}]",
                               str(e))
                    continue
                if rec.flags:
                    obj["flags"] = rec.flags
                if number:
                    obj["severity_number"] = number
                if rec.event_name:
                    obj["event_name"] = rec.event_name
                objs.append(obj)
                sevs.append(sev)
    return out


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
        raise _Invalid("a string that is not UTF-8") from None


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
        raise _Invalid(f"body: {e}") from None
    return _message(_pb_value(value, 1))


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
        raise _Invalid(f"attributes: {e}") from None
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
        raise _Invalid(f"values nested deeper than {MAX_DEPTH} levels")
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
            raise _Invalid(f"values nested deeper than {MAX_DEPTH} levels")
        return [_pb_value(x, depth + 1) for x in v.array_value.values]
    if kind == "bytes_value":
        return b64encode(v.bytes_value).decode()
    return getattr(v, kind)


def _message(body: Any) -> str:
    """The message of a body: itself when a string, else its JSON text; "" when empty."""
    if type(body) is _STR:
        return body
    return "" if body is None else orjson.dumps(body).decode()


# -- OTLP/JSON --


def is_otlp_json(doc: Any) -> bool:
    """Whether a parsed JSON body is an ExportLogsServiceRequest rather than logd's own JSON:
    an object with `resourceLogs` (logd's records need a `message`)."""
    return type(doc) is _DICT and "resourceLogs" in doc


def from_json(doc: dict[str, Any]) -> Mapped:
    """The records of an OTLP/JSON ExportLogsServiceRequest (already parsed); BadOtlp when
    its structure above the log records is wrong. Unknown keys are ignored, as OTLP/JSON
    asks of receivers."""
    out = Mapped()
    objs = out.objs
    sevs = out.severities
    for ri, rl in enumerate(_list(doc, "resourceLogs", "")):
        where = f"resourceLogs[{ri}]"
        if type(rl) is not _DICT:
            raise BadOtlp(f"{where}: expected an object")
        res = rl.get("resource")
        resource: dict[str, Any] = {}
        if res is not None:
            if type(res) is not _DICT:
                raise BadOtlp(f"{where}.resource: expected an object")
            try:
                resource = _json_attributes(res.get("attributes"), 0)
            except _Invalid as e:
                raise BadOtlp(f"{where}.resource.attributes: {e}") from None
        app = resource.get("service.name")
        if type(app) is not _STR:
            app = None
        for si, sl in enumerate(_list(rl, "scopeLogs", where)):
            swhere = f"{where}.scopeLogs[{si}]"
            if type(sl) is not _DICT:
                raise BadOtlp(f"{swhere}: expected an object")
            scope = _json_scope(sl.get("scope"), swhere)
            for li, rec in enumerate(_list(sl, "logRecords", swhere)):
                try:
                    obj, sev = _json_record(rec, app, resource, scope)
                except _Invalid as e:
                    out.reject(f"{swhere}.logRecords[{li}]", str(e))
                    continue
                objs.append(obj)
                sevs.append(sev)
    return out


def _list(obj: dict[str, Any], key: str, where: str) -> list[Any]:
    value = obj.get(key)
    if value is None:
        return []
    if type(value) is not list:
        raise BadOtlp(f"{where + '.' if where else ''}{key}: expected an array")
    return value


def _json_scope(s: Any, where: str) -> dict[str, Any] | None:
    if s is None:
        return None
    if type(s) is not _DICT:
        raise BadOtlp(f"{where}.scope: expected an object")
    scope: dict[str, Any] = {}
    try:
        for key in ("name", "version"):
            v = s.get(key)
            if v is not None and v != "":
                if type(v) is not _STR:
                    raise _Invalid(f"{key}: expected a string")
                scope[key] = v
        attrs = _json_attributes(s.get("attributes"), 1)
    except _Invalid as e:
        raise BadOtlp(f"{where}.scope.{e}") from None
    if attrs:
        scope["attributes"] = attrs
    return scope or None


def _json_record(rec: Any, app: str | None, resource: dict[str, Any],
                 scope: dict[str, Any] | None) -> tuple[dict[str, Any], int]:
    if type(rec) is not _DICT:
        raise _Invalid("expected an object")
    obj: dict[str, Any] = {}
    if app is not None:
        obj["app_id"] = app
    text = rec.get("severityText") or ""
    if type(text) is not _STR:
        raise _Invalid("severityText: expected a string")
    number = _enum(rec.get("severityNumber"))
    if text:
        obj["level"] = text
    else:
        level = NUMBER_LEVELS.get(number)
        if level is not None:
            obj["level"] = level
    sev = _severity(text, number)
    body = rec.get("body")
    if body is not None:
        obj["message"] = _message(_json_value(body, 1, "body"))
    else:
        obj["message"] = ""
    stamp = _uint(rec.get("timeUnixNano"), "timeUnixNano", 64) or \
        _uint(rec.get("observedTimeUnixNano"), "observedTimeUnixNano", 64)
    if stamp:
        obj["timestamp"] = stamp / 1e9
    if resource:
        obj["resource"] = resource
    if scope is not None:
        obj["scope"] = scope
    attrs = _json_attributes(rec.get("attributes"), 1)
    if attrs:
        obj["attributes"] = attrs
    trace = _hex_id(rec.get("traceId"), "traceId", 16)
    if trace:
        obj["trace_id"] = trace
    span = _hex_id(rec.get("spanId"), "spanId", 8)
    if span:
        obj["span_id"] = span
    flags = _uint(rec.get("flags"), "flags", 32)
    if flags:
        obj["flags"] = flags
    if number:
        obj["severity_number"] = number
    event = rec.get("eventName")
    if event:
        if type(event) is not _STR:
            raise _Invalid("eventName: expected a string")
        obj["event_name"] = event
    return obj, sev


def _enum(v: Any) -> int:
    if v is None:
        return 0
    if type(v) is int:
        if not -2**31 <= v < 2**31:
            raise _Invalid(f"severityNumber {v} is not an int32")
        return v
    if type(v) is _STR:
        found = SEVERITY_ENUM_NAMES.get(v)
        if found is not None:
            return found
    raise _Invalid(f"severityNumber: expected an integer, got {v!r}")


def _uint(v: Any, key: str, bits: int) -> int:
    """A uint32/fixed64 field: a JSON number or a decimal string (64-bit integers may be
    either in OTLP/JSON)."""
    if v is None:
        return 0
    if type(v) is int:
        n = v
    elif (type(v) is _STR and v.isascii() and v.isdigit()) or (
            type(v) is float and v.is_integer()):
        n = int(v)
    else:
        raise _Invalid(f"{key}: expected an unsigned integer, got {v!r}")
    if not 0 <= n < 1 << bits:
        raise _Invalid(f"{key}: {n} out of range")
    return n


def _hex_id(v: Any, key: str, size: int) -> str:
    if v is None or v == "":
        return ""
    if type(v) is not _STR:
        raise _Invalid(f"{key}: expected a hex string")
    try:
        raw = bytes.fromhex(v)
    except ValueError:
        raise _Invalid(f"{key}: {v!r} is not hex") from None
    if len(raw) != size:
        raise _Invalid(f"{key} of {len(raw)} bytes, expected {size}")
    return raw.hex()


def _json_attributes(kvs: Any, depth: int) -> dict[str, Any]:
    if depth > MAX_DEPTH:
        raise _Invalid(f"values nested deeper than {MAX_DEPTH} levels")
    if kvs is None:
        return {}
    if type(kvs) is not list:
        raise _Invalid("attributes: expected an array of {key, value}")
    out: dict[str, Any] = {}
    for kv in kvs:
        if type(kv) is not _DICT:
            raise _Invalid("attributes: expected {key, value} objects")
        key = kv.get("key", "")
        if type(key) is not _STR:
            raise _Invalid("attributes: a key that is not a string")
        v = kv.get("value")
        if v is None:
            out[key] = None
            continue
        # Nearly every attribute is a string: no call for it.
        s = v.get("stringValue") if type(v) is _DICT and len(v) == 1 else None
        out[key] = s if type(s) is _STR else _json_value(v, depth, key)
    return out


_DOUBLE_WORDS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def _json_value(v: Any, depth: int, key: str) -> Any:
    if type(v) is not _DICT:
        raise _Invalid(f"{key}: an AnyValue must be an object")
    for kind, x in v.items():
        if kind == "stringValue":
            if type(x) is not _STR:
                raise _Invalid(f"{key}: stringValue must be a string")
            return x
        if kind == "boolValue":
            if type(x) is not bool:
                raise _Invalid(f"{key}: boolValue must be true or false")
            return x
        if kind == "intValue":
            if type(x) is int or (type(x) is _STR and x.lstrip("-").isdigit() and x.isascii()):
                n = int(x)
                if -2**63 <= n < 2**63:
                    return n
            raise _Invalid(f"{key}: intValue must be a 64-bit integer, got {x!r}")
        if kind == "doubleValue":
            if type(x) in (int, float):
                return float(x)
            if type(x) is _STR and x in _DOUBLE_WORDS:
                return _DOUBLE_WORDS[x]
            raise _Invalid(f"{key}: doubleValue must be a number, got {x!r}")
        if kind == "bytesValue":
            if type(x) is not _STR:
                raise _Invalid(f"{key}: bytesValue must be base64 text")
            try:
                raw = binascii.a2b_base64(x.encode("ascii"), strict_mode=True) if x else b""
            except (ValueError, UnicodeEncodeError):
                raise _Invalid(f"{key}: bytesValue is not base64") from None
            return b64encode(raw).decode()
        if kind == "arrayValue":
            if depth >= MAX_DEPTH:
                raise _Invalid(f"values nested deeper than {MAX_DEPTH} levels")
            values = x.get("values") if type(x) is _DICT else _BAD
            if values is None:
                return []
            if type(values) is not list:
                raise _Invalid(f"{key}: arrayValue must be {{\"values\": [...]}}")
            return [_json_value(e, depth + 1, key) for e in values]
        if kind == "kvlistValue":
            values = x.get("values") if type(x) is _DICT else _BAD
            if values is _BAD:
                raise _Invalid(f"{key}: kvlistValue must be {{\"values\": [...]}}")
            return _json_attributes(values, depth + 1)
    return None  # no known variant: an empty AnyValue (unknown keys are ignored)


_BAD = object()
