"""HTTP ingest: POST /v1/logs and /api/logs (seed 001's clients), GET /health, GET /metrics.

A body is one JSON object, a JSON array of objects, or NDJSON (`application/x-ndjson`),
optionally gzip. A batch is taken whole or refused whole: every record is validated before
any is routed. Every answer is JSON: 202 {"accepted": N}; errors {"error", "message"} with the
index (array) or line (NDJSON) of the first bad record.
"""

from __future__ import annotations

import hmac
import logging
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from itertools import repeat
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from logd.component import Component
from logd.config import (
    component_name,
    one_of,
    setting,
    to_address,
    to_duration,
    to_size,
    to_str_list,
)
from logd.fields import INFO, LEVEL_NAMES, record_time, severity_from_name
from logd.listeners.serve import open_web
from logd.logsetup import RateLimitedLog
from logd.record import Batch

if TYPE_CHECKING:
    from logd.router import Router

log = logging.getLogger("logd.http")

_LEVELS: dict[Any, int] = {}
for _name in LEVEL_NAMES:
    _sev = severity_from_name(_name)
    assert _sev is not None
    for _variant in (_name, _name.upper(), _name.capitalize()):
        _LEVELS[_variant] = _sev
for _n in range(8):
    _LEVELS[_n] = _n
    _LEVELS[str(_n)] = _n
_LEVELS[None] = 6  # no level: info
_LEVEL_TYPES = {str, int, type(None)}  # not bool, not float: 1.0 or true is no level
_STAMP_TYPES = {int, float, str, type(None)}
_DICT = {dict}


@dataclass(frozen=True)
class HttpListenerConfig:
    type: str = setting("http", one_of("http"))
    address: tuple[str, int] = setting(("0.0.0.0", 3000), to_address, "host:port to listen on")
    max_body_bytes: int = setting(10 * 1024**2, to_size(lo=1024),
                                  "largest body, before and after gzip (413 beyond)")
    tokens: tuple[str, ...] = setting((), to_str_list,
                                      "bearer tokens; when set, requests need one (401)")
    retry_after: float = setting(1.0, to_duration, "Retry-After of a 503 when buffers are full")
    name: str = component_name()


class BadRequest(Exception):
    def __init__(self, status: int, error: str, message: str) -> None:
        self.status = status
        self.error = error
        super().__init__(message)


def _error(status: int, error: str, message: str, **headers: str) -> web.Response:
    return web.Response(status=status, body=orjson.dumps({"error": error, "message": message}),
                        content_type="application/json", headers=headers or None)


def _valid_severities(objs: list[Any]) -> bytes | None:
    """Each record's severity if every record is valid, else None; column-wise (C loops), as
    nearly every batch is valid."""
    if set(map(type, objs)) != _DICT or not all(map(dict.__contains__, objs, repeat("message"))):
        return None
    get = dict.get
    levels = list(map(get, objs, repeat("level")))
    if not set(map(type, levels)) <= _LEVEL_TYPES:
        return None
    if None in levels and any(map(dict.__contains__, objs, repeat("severity"))):
        return None  # a `severity` stands in for a missing level: record by record
    try:
        sevs = bytes(map(_LEVELS.__getitem__, levels))
    except KeyError:
        return None
    stamps = list(map(get, objs, repeat("timestamp")))
    types = set(map(type, stamps))
    if not types <= _STAMP_TYPES:
        return None
    if str in types and not all(_check_timestamp(t) for t in stamps if type(t) is str):
        return None
    return sevs


def _checked_severities(objs: list[Any], where: str, positions: list[int]) -> bytes:
    """Each record's severity, or BadRequest naming the first bad record."""
    sevs = bytearray(len(objs))
    levels = _LEVELS
    for i, obj in enumerate(objs):
        if type(obj) is not dict:
            raise BadRequest(400, "bad_record", f"{where} {positions[i]}: expected a JSON "
                             "object")
        if "message" not in obj:
            raise BadRequest(422, "missing_message",
                             f"{where} {positions[i]}: a record needs a \"message\"")
        level = obj.get("level")
        if level is None:
            # No level: a `severity` field names it if it can (as on every listener), else
            # the record is info; only a `level` the client set is held to the names.
            sev = severity_from_name(obj.get("severity"))
            sevs[i] = INFO if sev is None else sev
            sev = sevs[i]
        else:
            sev = levels.get(level) if type(level) in _LEVEL_TYPES else None
        if sev is None and isinstance(level, str):
            sev = severity_from_name(level)
        if sev is None:
            raise BadRequest(422, "bad_level", f"{where} {positions[i]}: unknown level "
                             f"{level!r}")
        sevs[i] = sev
        ts = obj.get("timestamp")
        if ts is not None and not _check_timestamp(ts):
            raise BadRequest(422, "bad_timestamp", f"{where} {positions[i]}: timestamp "
                             f"{ts!r} is neither RFC 3339 nor epoch seconds")
    return bytes(sevs)


def _check_timestamp(v: Any) -> bool:
    return record_time(v) is not None  # what the outputs will read it as


class HttpListener(Component):
    kind = "listener"

    def __init__(self, cfg: HttpListenerConfig, router: Router) -> None:
        super().__init__(cfg.name)
        self.cfg = cfg
        self.router = router
        self.stats_provider: Any = None  # the daemon's stats(), for GET /metrics
        self._runner: web.AppRunner | None = None
        self.bound: tuple[str, int] | None = None
        self._tokens = [t.encode() for t in cfg.tokens]
        self.requests = 0
        self.records = 0
        self.bytes_in = 0
        self.refused_busy = 0
        self.errors: Counter[str] = Counter()
        self.ratelog = RateLimitedLog(log)

    async def start(self) -> None:
        app = web.Application(client_max_size=self.cfg.max_body_bytes)
        app.router.add_post("/v1/logs", self._ingest)
        app.router.add_post("/api/logs", self._ingest)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        self._runner, self.bound = await open_web(app, self.cfg.address,
                                                  f"listeners.{self.name}")
        log.info("listening", extra={"listener": self.name, "type": "http",
                                     "host": self.bound[0], "port": self.bound[1]})

    async def drain(self, deadline: float) -> None:
        # Requests in progress finish (aiohttp waits for them on cleanup); nothing new starts.
        await self.close()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- handlers --

    async def _ingest(self, request: web.Request) -> web.Response:
        self.requests += 1
        try:
            self._authorize(request)
            body = await self._body(request)
            payloads, objs, sevs = self._parse(body, request.content_type)
        except BadRequest as e:
            self.errors[e.error] += 1
            self.ratelog.warning(e.error, f"request refused: {e}", listener=self.name,
                                 peer=request.remote, status=e.status)
            return _error(e.status, e.error, str(e))
        if self.router.full():
            # Nothing half-accepted: refuse the whole batch until the buffers have room.
            self.refused_busy += 1
            return _error(503, "busy", "output buffers are full; retry later",
                          **{"Retry-After": f"{max(1, round(self.cfg.retry_after))}"})
        # Buffers the batch waits in make its payloads and drop the parsed objects (see
        # Batch.compact); an output that encodes the objects on arrival needs no payloads.
        batch = Batch.from_objects(objs, sevs, self.name, time.time(), len(body),
                                   payloads)
        self.records += batch.count
        self.router.dispatch(batch)
        return web.Response(status=202, body=orjson.dumps({"accepted": batch.count}),
                            content_type="application/json")

    def _authorize(self, request: web.Request) -> None:
        if not self._tokens:
            return
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer":
            given = token.strip().encode()
            if any(hmac.compare_digest(given, t) for t in self._tokens):
                return
        raise BadRequest(401, "unauthorized", "a valid bearer token is required")

    async def _body(self, request: web.Request) -> bytes:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise BadRequest(413, "too_large", f"body over max_body_bytes "
                             f"({self.cfg.max_body_bytes})") from None
        except Exception as e:  # a body aiohttp cannot inflate (bad gzip), a cut upload
            raise BadRequest(400, "bad_body", f"cannot read the body: {e}") from None
        self.bytes_in += len(raw)
        encoding = request.headers.get("Content-Encoding", "").lower()
        # aiohttp inflates gzip request bodies itself (counted against client_max_size);
        # a body that still starts with the gzip magic is inflated here, with the same bound.
        if encoding in ("gzip", "x-gzip") and raw[:2] == b"\x1f\x8b":
            d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            try:
                out = d.decompress(raw, self.cfg.max_body_bytes + 1)
            except zlib.error as e:
                raise BadRequest(400, "bad_gzip", f"body is not valid gzip: {e}") from None
            if len(out) > self.cfg.max_body_bytes or d.unconsumed_tail:
                raise BadRequest(413, "too_large", "decompressed body over max_body_bytes "
                                 f"({self.cfg.max_body_bytes})")
            return out
        if encoding not in ("", "identity", "gzip", "x-gzip", "deflate"):
            raise BadRequest(415, "unsupported_encoding",
                             f"Content-Encoding {encoding!r}; expected gzip or none")
        return raw

    def _parse(self, body: bytes, content_type: str
               ) -> tuple[list[bytes] | None, list[Any], bytes]:
        """(payload bytes if at hand, objects, severities), or BadRequest naming the first bad
        record."""
        payloads: list[bytes] | None
        if content_type == "application/x-ndjson":
            payloads = []
            objs = []
            positions = []
            for n, line in enumerate(body.split(b"\n"), 1):
                if not line.strip():
                    continue
                try:
                    objs.append(orjson.loads(line))
                except orjson.JSONDecodeError as e:
                    raise BadRequest(400, "bad_json", f"line {n}: {e}") from None
                payloads.append(line.rstrip(b"\r"))
                positions.append(n)
            where = "line"
        else:
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError as e:
                raise BadRequest(400, "bad_json", str(e)) from None
            if isinstance(doc, dict):
                objs = [doc]
                payloads = [body.strip()]
                where, positions = "record", [0]
            elif isinstance(doc, list):
                objs = doc
                payloads = None  # serialized when needed (Batch.compact)
                where, positions = "index", list(range(len(objs)))
            else:
                raise BadRequest(400, "bad_json", "expected a JSON object or an array of "
                                 "objects")
        if not objs:
            raise BadRequest(400, "empty", "no records in the body")
        sevs = _valid_severities(objs)
        if sevs is None:  # something is wrong: find the first bad record, one at a time
            sevs = _checked_severities(objs, where, positions)
        return payloads, objs, sevs

    async def _health(self, request: web.Request) -> web.Response:
        status, body = self.router.health()
        return web.Response(status=status, body=orjson.dumps(body),
                            content_type="application/json")

    async def _metrics(self, request: web.Request) -> web.Response:
        if self.stats_provider is None:
            return _error(404, "not_found", "metrics are not available here")
        from logd.control.http_metrics import CONTENT_TYPE
        from logd.metrics import render_stats
        return web.Response(body=render_stats(self.stats_provider()).encode(),
                            headers={"Content-Type": CONTENT_TYPE})

    def stats(self) -> dict[str, Any]:
        return {"type": "http", "connections": 0, "accepted": self.requests,
                "records": self.records, "bytes": self.bytes_in, "pauses": self.refused_busy,
                "errors": dict(self.errors)}
