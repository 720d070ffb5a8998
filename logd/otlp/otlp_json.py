"""OTLP log requests in OTLP/JSON (application/json) as logd records (see records).

OTLP/JSON is protobuf's JSON mapping with lowerCamelCase keys, trace and span ids as hex,
enums as integers (their names are read too), and 64-bit integers as strings or numbers.
"""

from __future__ import annotations

import binascii
import re
from base64 import b64encode
from typing import Any

from logd.otlp.records import (
    DICT,
    MAX_DEPTH,
    NUMBER_LEVELS,
    SEVERITY_ENUM_NAMES,
    STR,
    BadOtlp,
    Invalid,
    Mapped,
    message_of,
    severity,
    unexpected,
)


def is_otlp_json(doc: Any) -> bool:
    """Whether a parsed JSON body is an ExportLogsServiceRequest rather than logd's own JSON:
    an object with `resourceLogs` (logd's records need a `message`)."""
    return type(doc) is DICT and "resourceLogs" in doc


def from_json(doc: dict[str, Any]) -> Mapped:
    """The records of an OTLP/JSON ExportLogsServiceRequest (already parsed); BadOtlp when
    its structure above the log records is wrong. Unknown keys are ignored, as OTLP/JSON
    asks of receivers."""
    out = Mapped()
    objs = out.objs
    sevs = out.severities
    for ri, rl in enumerate(_list(doc, "resourceLogs", "")):
        where = f"resourceLogs[{ri}]"
        if type(rl) is not DICT:
            raise BadOtlp(f"{where}: expected an object")
        res = rl.get("resource")
        resource: dict[str, Any] = {}
        if res is not None:
            if type(res) is not DICT:
                raise BadOtlp(f"{where}.resource: expected an object")
            try:
                resource = _json_attributes(res.get("attributes"), 0)
            except Invalid as e:
                raise BadOtlp(f"{where}.resource.attributes: {e}") from None
        app = resource.get("service.name")
        if type(app) is not STR:
            app = None
        for si, sl in enumerate(_list(rl, "scopeLogs", where)):
            swhere = f"{where}.scopeLogs[{si}]"
            if type(sl) is not DICT:
                raise BadOtlp(f"{swhere}: expected an object")
            scope = _json_scope(sl.get("scope"), swhere)
            for li, rec in enumerate(_list(sl, "logRecords", swhere)):
                try:
                    obj, sev = _json_record(rec, app, resource, scope)
                except Invalid as e:
                    out.reject(f"{swhere}.logRecords[{li}]", str(e))
                    continue
                except Exception as e:  # a value no check foresaw: still this record's own
                    out.reject(f"{swhere}.logRecords[{li}]", unexpected(e))
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
    if type(s) is not DICT:
        raise BadOtlp(f"{where}.scope: expected an object")
    scope: dict[str, Any] = {}
    try:
        for key in ("name", "version"):
            v = s.get(key)
            if v is not None and v != "":
                if type(v) is not STR:
                    raise Invalid(f"{key}: expected a string")
                scope[key] = v
        attrs = _json_attributes(s.get("attributes"), 1)
    except Invalid as e:
        raise BadOtlp(f"{where}.scope.{e}") from None
    if attrs:
        scope["attributes"] = attrs
    return scope or None


def _json_record(rec: Any, app: str | None, resource: dict[str, Any],
                 scope: dict[str, Any] | None) -> tuple[dict[str, Any], int]:
    if type(rec) is not DICT:
        raise Invalid("expected an object")
    obj: dict[str, Any] = {}
    if app is not None:
        obj["app_id"] = app
    text = rec.get("severityText") or ""
    if type(text) is not STR:
        raise Invalid("severityText: expected a string")
    number = _enum(rec.get("severityNumber"))
    if text:
        obj["level"] = text
    else:
        level = NUMBER_LEVELS.get(number)
        if level is not None:
            obj["level"] = level
    sev = severity(text, number)
    body = rec.get("body")
    if body is not None:
        obj["message"] = message_of(_json_value(body, 1, "body"))
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
        if type(event) is not STR:
            raise Invalid("eventName: expected a string")
        obj["event_name"] = event
    return obj, sev


def _enum(v: Any) -> int:
    if v is None:
        return 0
    if type(v) is int:
        if not -2**31 <= v < 2**31:
            raise Invalid(f"severityNumber {v} is not an int32")
        return v
    if type(v) is STR:
        found = SEVERITY_ENUM_NAMES.get(v)
        if found is not None:
            return found
    raise Invalid(f"severityNumber: expected an integer, got {v!r}")


# Decimal strings of 64-bit integers. Checked before int(): int() also takes "٣" (any
# Unicode digit), "+5", " 5", "1_0", and refuses more than 4300 digits with a ValueError.
_UINT_TEXT = re.compile(r"[0-9]{1,20}")
_INT_TEXT = re.compile(r"-?[0-9]{1,20}")


def _uint(v: Any, key: str, bits: int) -> int:
    """A uint32/fixed64 field: a JSON number or a decimal string (64-bit integers may be
    either in OTLP/JSON)."""
    if v is None:
        return 0
    if type(v) is int:
        n = v
    elif (type(v) is STR and _UINT_TEXT.fullmatch(v)) or (
            type(v) is float and v.is_integer()):
        n = int(v)
    else:
        raise Invalid(f"{key}: expected an unsigned integer, got {v!r}")
    if not 0 <= n < 1 << bits:
        raise Invalid(f"{key}: {n} out of range")
    return n


def _hex_id(v: Any, key: str, size: int) -> str:
    if v is None or v == "":
        return ""
    if type(v) is not STR:
        raise Invalid(f"{key}: expected a hex string")
    try:
        raw = bytes.fromhex(v)
    except ValueError:
        raise Invalid(f"{key}: {v!r} is not hex") from None
    if len(raw) != size:
        raise Invalid(f"{key} of {len(raw)} bytes, expected {size}")
    return raw.hex()


def _json_attributes(kvs: Any, depth: int) -> dict[str, Any]:
    if depth > MAX_DEPTH:
        raise Invalid(f"values nested deeper than {MAX_DEPTH} levels")
    if kvs is None:
        return {}
    if type(kvs) is not list:
        raise Invalid("attributes: expected an array of {key, value}")
    out: dict[str, Any] = {}
    for kv in kvs:
        if type(kv) is not DICT:
            raise Invalid("attributes: expected {key, value} objects")
        key = kv.get("key", "")
        if type(key) is not STR:
            raise Invalid("attributes: a key that is not a string")
        v = kv.get("value")
        if v is None:
            out[key] = None
            continue
        # Nearly every attribute is a string: no call for it.
        s = v.get("stringValue") if type(v) is DICT and len(v) == 1 else None
        out[key] = s if type(s) is STR else _json_value(v, depth, key)
    return out


_DOUBLE_WORDS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def _json_value(v: Any, depth: int, key: str) -> Any:
    if type(v) is not DICT:
        raise Invalid(f"{key}: an AnyValue must be an object")
    for kind, x in v.items():
        if kind == "stringValue":
            if type(x) is not STR:
                raise Invalid(f"{key}: stringValue must be a string")
            return x
        if kind == "boolValue":
            if type(x) is not bool:
                raise Invalid(f"{key}: boolValue must be true or false")
            return x
        if kind == "intValue":
            if type(x) is int or (type(x) is STR and _INT_TEXT.fullmatch(x)):
                n = int(x)
                if -2**63 <= n < 2**63:
                    return n
            raise Invalid(f"{key}: intValue must be a 64-bit integer, got {x!r}")
        if kind == "doubleValue":
            if type(x) in (int, float):
                return float(x)
            if type(x) is STR and x in _DOUBLE_WORDS:
                return _DOUBLE_WORDS[x]
            raise Invalid(f"{key}: doubleValue must be a number, got {x!r}")
        if kind == "bytesValue":
            if type(x) is not STR:
                raise Invalid(f"{key}: bytesValue must be base64 text")
            try:
                raw = binascii.a2b_base64(x.encode("ascii"), strict_mode=True) if x else b""
            except (ValueError, UnicodeEncodeError):
                raise Invalid(f"{key}: bytesValue is not base64") from None
            return b64encode(raw).decode()
        if kind == "arrayValue":
            if depth >= MAX_DEPTH:
                raise Invalid(f"values nested deeper than {MAX_DEPTH} levels")
            values = x.get("values") if type(x) is DICT else _BAD
            if values is None:
                return []
            if type(values) is not list:
                raise Invalid(f"{key}: arrayValue must be {{\"values\": [...]}}")
            return [_json_value(e, depth + 1, key) for e in values]
        if kind == "kvlistValue":
            values = x.get("values") if type(x) is DICT else _BAD
            if values is _BAD:
                raise Invalid(f"{key}: kvlistValue must be {{\"values\": [...]}}")
            return _json_attributes(values, depth + 1)
    return None  # no known variant: an empty AnyValue (unknown keys are ignored)


_BAD = object()
