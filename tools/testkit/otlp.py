"""OTLP log requests for tests, built with the official protobuf classes, and their OTLP/JSON
form (protobuf's JSON mapping, with trace and span ids as hex as OTLP/JSON asks)."""

from __future__ import annotations

from typing import Any

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

TRACE_ID = bytes(range(1, 17))
SPAN_ID = bytes(range(0xA0, 0xA8))


def any_value(v: Any) -> AnyValue:
    """An AnyValue of a Python value: str, bool, int, float, bytes, list, dict, None."""
    out = AnyValue()
    if v is None:
        pass
    elif isinstance(v, str):
        out.string_value = v
    elif isinstance(v, bool):
        out.bool_value = v
    elif isinstance(v, int):
        out.int_value = v
    elif isinstance(v, float):
        out.double_value = v
    elif isinstance(v, bytes):
        out.bytes_value = v
    elif isinstance(v, list):
        out.array_value.values.extend(any_value(x) for x in v)
    elif isinstance(v, dict):
        out.kvlist_value.values.extend(key_values(v))
    else:
        raise TypeError(type(v))
    return out


def key_values(d: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in d.items()]


def log_record(body: Any = "hello", *, time_ns: int = 0, observed_ns: int = 0,
               number: int = 0, text: str = "", attributes: dict[str, Any] | None = None,
               trace_id: bytes = b"", span_id: bytes = b"", flags: int = 0) -> LogRecord:
    rec = LogRecord(time_unix_nano=time_ns, observed_time_unix_nano=observed_ns,
                    severity_number=number,  # type: ignore[arg-type]
                    severity_text=text, trace_id=trace_id, span_id=span_id, flags=flags)
    if body is not None:
        rec.body.CopyFrom(any_value(body))
    rec.attributes.extend(key_values(attributes or {}))
    return rec


def request(*resources: tuple[dict[str, Any], list[tuple[dict[str, Any] | None,
                                                          list[LogRecord]]]]
            ) -> ExportLogsServiceRequest:
    """resources: (resource attributes, [(scope {name, version, attributes} or None,
    [log records])])."""
    req = ExportLogsServiceRequest()
    for attrs, scopes in resources:
        rl = req.resource_logs.add()
        if attrs:
            rl.resource.attributes.extend(key_values(attrs))
        for scope, records in scopes:
            sl = rl.scope_logs.add()
            if scope is not None:
                sl.scope.name = scope.get("name", "")
                sl.scope.version = scope.get("version", "")
                sl.scope.attributes.extend(key_values(scope.get("attributes", {})))
            sl.log_records.extend(records)
    return req


def to_json(req: ExportLogsServiceRequest) -> dict[str, Any]:
    """The request in OTLP/JSON: lowerCamelCase keys, enums as integers, 64-bit integers as
    strings, trace and span ids as hex (protobuf's JSON mapping writes bytes as base64)."""
    doc = MessageToDict(req, use_integers_for_enums=True)
    for rl_doc, rl in zip(doc.get("resourceLogs", []), req.resource_logs, strict=True):
        for sl_doc, sl in zip(rl_doc.get("scopeLogs", []), rl.scope_logs, strict=True):
            for rec_doc, rec in zip(sl_doc.get("logRecords", []), sl.log_records,
                                    strict=True):
                if rec.trace_id:
                    rec_doc["traceId"] = rec.trace_id.hex()
                if rec.span_id:
                    rec_doc["spanId"] = rec.span_id.hex()
    return doc


def post(port: int, body: bytes, content_type: str = "application/x-protobuf",
         headers: dict[str, str] | None = None, path: str = "/v1/logs"
         ) -> tuple[int, dict[str, str], bytes]:
    """POST a body to logd's HTTP listener: (status, headers, body), errors included."""
    import urllib.error
    import urllib.request
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST",
                                 headers={"Content-Type": content_type, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()
