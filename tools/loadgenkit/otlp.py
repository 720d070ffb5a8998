"""OTLP/HTTP log bodies: ExportLogsServiceRequests in protobuf or OTLP/JSON, built with the
standard library (the protobuf wire format written by hand; the tests read it back with the
official classes).

A body of records seq0 .. seq0 + count - 1 of one connection groups them as an OpenTelemetry
SDK would: one ResourceLogs per app (service.name) in the batch, with two scopes each (an
HTTP server and a database client library); each log record carries a time, a severity
number and text, a string body, six attributes, a trace id, a span id and flags.
"""

from __future__ import annotations

import json
import struct
import time
import zlib

from loadgenkit.config import Config
from loadgenkit.payloads import GZIP_LEVEL, SEVERITY_NAMES, HttpBuilder

# syslog severity (0 emerg .. 7 debug) -> OTLP severityNumber (its range's first number)
SEVERITY_NUMBERS = (23, 22, 21, 17, 13, 10, 9, 5)
SCOPES = (("io.loadgen.http", "1.4.0"), ("io.loadgen.db", "0.9.2"))
ROUTES = ("/api/orders", "/api/users/{id}", "/api/cart", "/health", "/api/checkout")
METHODS = ("GET", "POST", "GET", "GET", "PUT")
STATUS = (200, 201, 200, 404, 500)
BODY_OVERHEAD = 190  # about what a record's fields besides its body take, in protobuf


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_VARINTS = [_varint(n) for n in range(1 << 14)]  # lengths of records and their bodies


class _AnyVarint:
    """_VARINTS for records too long for its table (--size beyond 16 KiB)."""

    def __getitem__(self, n: int) -> bytes:
        return _varint(n)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2): strings, bytes, messages."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _str_value(s: str) -> bytes:
    return _field(1, s.encode())  # AnyValue.string_value


def _int_value(n: int) -> bytes:
    return b"\x18" + _varint(n & (1 << 64) - 1)  # AnyValue.int_value (field 3, varint)


def _kv(key: str, value: bytes) -> bytes:
    return _field(1, key.encode()) + _field(2, value)  # KeyValue


class OtlpBuilder(HttpBuilder):
    """Builds one connection's POST bodies as OTLP requests (--otlp protobuf|json). Record j
    of the run has the level and app of HttpBuilder's record j."""

    def __init__(self, cfg: Config, worker: int, conn: int, filler: str) -> None:
        super().__init__(cfg, worker, conn, filler)
        self.worker = worker
        self.conn = conn
        self.apps = [json.loads(a) for a in cfg.apps]
        self.body_size = max(8, cfg.size - BODY_OVERHEAD)
        self.resources = {app: self._resource(app) for app in self.apps}
        self.scopes = [_field(1, _field(1, n.encode()) + _field(2, v.encode()))
                       for n, v in SCOPES]
        # Per-record attributes that repeat: encoded once.
        self.fixed = [_field(6, _kv("http.method", _str_value(m)))
                      + _field(6, _kv("http.route", _str_value(r)))
                      + _field(6, _kv("http.status_code", _int_value(s)))
                      for m, r, s in zip(METHODS, ROUTES, STATUS, strict=True)]
        self.run_attr = _field(6, _kv("loadgen.run", _str_value(cfg.run_id)))
        self.users = [_field(6, _kv("user.id", _str_value(f"u-{u}"))) for u in range(977)]
        self.seq_key = _field(1, b"loadgen.seq")
        # time is written per body; severity_number and severity_text per level
        self.severity_heads = [b"\x10" + _varint(SEVERITY_NUMBERS[sev])
                               + _field(3, SEVERITY_NAMES[sev].upper().encode())
                               for sev in range(8)]
        self.trace_head = b"\x4a\x10" + struct.pack(">Q", 0x6C6F6164 + self.index)

    def _resource(self, app: str) -> bytes:
        attrs = b"".join(_field(1, _kv(k, _str_value(v))) for k, v in (
            ("service.name", app), ("service.instance.id", f"{self.worker}-{self.conn}"),
            ("host.name", f"loadgen-{self.worker}"), ("deployment.environment", "bench")))
        return _field(1, attrs)  # ResourceLogs.resource

    def placed(self, seq0: int, count: int) -> dict[str, list[list[int]]]:
        """The batch's records (seq numbers) by app, then by scope."""
        nl = len(self.cfg.levels)
        apps = self.apps
        groups: dict[str, list[list[int]]] = {}
        for seq in range(seq0, seq0 + count):
            j = seq * self.n + self.index
            app = apps[(j // nl) % len(apps)]
            groups.setdefault(app, [[], []])[seq & 1].append(seq)
        return groups

    def level_of(self, seq: int) -> int:
        return self.cfg.levels[(seq * self.n + self.index) % len(self.cfg.levels)]

    def text_of(self, seq: int) -> str:
        j = seq * self.n + self.index
        off = self.offsets[j % len(self.offsets)]
        return f"{seq} {self.filler[off:off + self.body_size]}"

    def ids_of(self, seq: int) -> tuple[bytes, bytes]:
        j = seq * self.n + self.index
        return (struct.pack(">QQ", 0x6C6F6164 + self.index, j + 1),
                struct.pack(">Q", (j + 1) * 2654435761 & (1 << 64) - 1))

    def body(self, seq0: int, count: int) -> bytes:
        if self.cfg.otlp == "json":
            data = self.json_body(seq0, count)
        else:
            data = self.protobuf_body(seq0, count)
        return zlib.compress(data, GZIP_LEVEL, wbits=31) if self.cfg.gzip else data

    def protobuf_body(self, seq0: int, count: int) -> bytes:
        # Per record only what varies is encoded (the body, the ids, loadgen.seq); the rest
        # are pieces encoded once: about 1.5 us per record, so that building bodies does not
        # limit a benchmark of the receiver.
        now = time.time_ns()
        stamp = b"\x09" + struct.pack("<Q", now)          # time_unix_nano (fixed64)
        tail = b"\x45\x01\x00\x00\x00" + b"\x59" + struct.pack("<Q", now)  # flags, observed
        heads = self.severity_heads
        fixed = self.fixed
        users = self.users
        nu = len(users)
        seq_key = self.seq_key
        run_attr = self.run_attr
        varints = _VARINTS if self.body_size < 16000 else _AnyVarint()
        pack = struct.pack
        n = self.n
        index = self.index
        trace_head = self.trace_head
        levels = self.cfg.levels
        nl = len(levels)
        offsets = self.offsets
        no = len(offsets)
        filler = self.filler
        size = self.body_size
        out = []
        for app, scopes in self.placed(seq0, count).items():
            scope_logs = []
            for k, seqs in enumerate(scopes):
                if not seqs:
                    continue
                recs = []
                for seq in seqs:
                    j = seq * n + index
                    off = offsets[j % no]
                    text = f"{seq} {filler[off:off + size]}".encode()
                    value = varints[len(text)]
                    seq_value = _varint(seq)
                    rec = b"".join((
                        stamp, heads[levels[j % nl]],
                        b"\x2a", varints[len(text) + 1 + len(value)], b"\x0a", value, text,
                        fixed[seq % len(fixed)], users[seq % nu],
                        b"\x32", varints[len(seq_key) + 3 + len(seq_value)], seq_key,
                        b"\x12", varints[1 + len(seq_value)], b"\x18", seq_value,
                        run_attr, trace_head, pack(">Q", j + 1),
                        b"\x52\x08", pack(">Q", (j + 1) * 2654435761 & 0xFFFFFFFFFFFFFFFF),
                        tail))
                    recs.append(b"\x12" + varints[len(rec)] + rec)  # ScopeLogs.log_records
                scope_logs.append(_field(2, self.scopes[k] + b"".join(recs)))
            out.append(_field(1, self.resources[app] + b"".join(scope_logs)))
        return b"".join(out)

    def json_body(self, seq0: int, count: int) -> bytes:
        now = str(time.time_ns())
        resource_logs = []
        for app, scopes in self.placed(seq0, count).items():
            scope_logs = []
            for k, seqs in enumerate(scopes):
                if not seqs:
                    continue
                records = []
                for seq in seqs:
                    sev = self.level_of(seq)
                    trace, span = self.ids_of(seq)
                    f = seq % len(METHODS)
                    records.append({
                        "timeUnixNano": now, "observedTimeUnixNano": now,
                        "severityNumber": SEVERITY_NUMBERS[sev],
                        "severityText": SEVERITY_NAMES[sev].upper(),
                        "body": {"stringValue": self.text_of(seq)},
                        "attributes": [
                            _json_kv("http.method", {"stringValue": METHODS[f]}),
                            _json_kv("http.route", {"stringValue": ROUTES[f]}),
                            _json_kv("http.status_code", {"intValue": str(STATUS[f])}),
                            _json_kv("user.id", {"stringValue": f"u-{seq % 977}"}),
                            _json_kv("loadgen.seq", {"intValue": str(seq)}),
                            _json_kv("loadgen.run", {"stringValue": self.cfg.run_id})],
                        "flags": 1, "traceId": trace.hex(), "spanId": span.hex()})
                name, version = SCOPES[k]
                scope_logs.append({"scope": {"name": name, "version": version},
                                   "logRecords": records})
            resource_logs.append({"resource": {"attributes": [
                _json_kv(key, {"stringValue": v}) for key, v in (
                    ("service.name", app),
                    ("service.instance.id", f"{self.worker}-{self.conn}"),
                    ("host.name", f"loadgen-{self.worker}"),
                    ("deployment.environment", "bench"))]},
                "scopeLogs": scope_logs})
        return json.dumps({"resourceLogs": resource_logs}, separators=(",", ":")).encode()


def _json_kv(key: str, value: dict[str, str]) -> dict[str, object]:
    return {"key": key, "value": value}


def rejected_of(data: bytes, otlp: str) -> int | None:
    """Log records an OTLP 200 answer says were rejected (0 for an empty answer); None when
    the answer cannot be read."""
    if otlp == "json":
        try:
            doc = json.loads(data) if data else {}
        except ValueError:
            return None
        partial = doc.get("partialSuccess") if isinstance(doc, dict) else None
        if not partial:
            return 0
        try:
            return int(partial.get("rejectedLogRecords", 0))
        except (TypeError, ValueError):
            return None
    # ExportLogsServiceResponse { 1: partial_success { 1: rejected (varint), 2: message } }
    try:
        pos = 0
        while pos < len(data):
            tag, pos = _read_varint(data, pos)
            if tag != 0x0A:
                return None
            size, pos = _read_varint(data, pos)
            inner, pos = data[pos:pos + size], pos + size
            at = 0
            while at < len(inner):
                tag, at = _read_varint(inner, at)
                if tag == 0x08:
                    return _read_varint(inner, at)[0]
                if tag != 0x12:
                    return None
                size, at = _read_varint(inner, at)
                at += size
        return 0
    except IndexError:
        return None


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return n, pos
