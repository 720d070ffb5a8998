"""OTLP/HTTP answers, in the encoding of the request (OTLP/HTTP: the response's Content-Type is
the request's).

Success is 200 with an ExportLogsServiceResponse, whose `partial_success` says how many log
records were rejected and why when some were. Every 4xx/5xx carries a google.rpc.Status
(`code`, `message`). Status is two fields (int32 code = 1, string message = 2), written here
by hand rather than pulling in the googleapis protos for it.
"""

from __future__ import annotations

import orjson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

# google.rpc.Code of each HTTP status logd answers an OTLP request with.
RPC_CODES = {400: 3, 401: 16, 408: 4, 413: 8, 415: 3, 429: 8, 500: 13, 503: 14}
UNKNOWN = 2


def export_response(encoding: str, rejected: int, message: str) -> bytes:
    """The body of a 200: empty when everything was taken."""
    if encoding == JSON:
        if not rejected and not message:
            return b"{}"
        # 64-bit integers are strings in OTLP/JSON, as protobuf's JSON mapping writes them.
        return orjson.dumps({"partialSuccess": {"rejectedLogRecords": str(rejected),
                                                "errorMessage": message}})
    response = ExportLogsServiceResponse()
    if rejected or message:
        response.partial_success.rejected_log_records = rejected
        response.partial_success.error_message = message
    return response.SerializeToString()


def status_body(encoding: str, http_status: int, message: str) -> bytes:
    """A google.rpc.Status for an HTTP error answer."""
    code = RPC_CODES.get(http_status, UNKNOWN)
    if encoding == JSON:
        return orjson.dumps({"code": code, "message": message})
    text = message.encode()
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)
