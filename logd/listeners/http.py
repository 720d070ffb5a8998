"""HTTP ingest: POST /v1/logs and /api/logs (seed 001's clients), GET /health, GET /metrics.

A body is one JSON object, a JSON array of objects, or NDJSON (`application/x-ndjson`),
optionally gzip. A batch is taken whole or refused whole: every record is validated before
any is routed. Every answer is JSON: 202 {"accepted": N}; errors {"error", "message"} with the
index (array) or line (NDJSON) of the first bad record.

/v1/logs also takes OpenTelemetry's ExportLogsServiceRequest (OTLP/HTTP, logd/otlp): as
`application/x-protobuf`, or as `application/json` when the body is an object with
`resourceLogs`. Such a request is answered as OTLP/HTTP asks (200 with an
ExportLogsServiceResponse, errors with a google.rpc.Status, in the request's encoding); its
invalid log records are rejected alone, and the rest taken as one batch.
"""

from __future__ import annotations

import asyncio
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

from logd.budget import ByteBudget
from logd.component import BuildContext, Listener
from logd.config import (
    component_name,
    nested,
    one_of,
    setting,
    to_address,
    to_bool,
    to_duration,
    to_int,
    to_size,
    to_str_list,
)
from logd.delivery import Receipt
from logd.fields import COMMON_LEVELS, INFO, LEVEL_TYPES, record_time, severity_from_name
from logd.listeners.web import GuardedServer
from logd.logsetup import RateLimitedLog
from logd.otlp import answers as otlp_answers
from logd.otlp.otlp_json import from_json, is_otlp_json
from logd.otlp.protobuf import decode_protobuf
from logd.otlp.records import BadOtlp, Mapped
from logd.record import Batch
from logd.stats import HttpListenerStats
from logd.tls import ServerTls, TlsConfig, count_handshake_errors

if TYPE_CHECKING:
    pass

log = logging.getLogger("logd.http")

_LEVELS = COMMON_LEVELS
_LEVEL_TYPES = LEVEL_TYPES
_STAMP_TYPES = {int, float, str, type(None)}
_DICT = {dict}

OTLP_PATH = "/v1/logs"
# Content types /v1/logs reads as logd's own JSON: its own, and what curl -d, urllib and
# clients that send none send; OTLP's protobuf is told by its type, OTLP/JSON by its shape.
_JSON_TYPES = frozenset({"application/json", "application/x-ndjson", "text/plain",
                         "application/x-www-form-urlencoded"})
# Keys of what an OTLP request became, on the aiohttp request while it is handled.
_OTLP = web.RequestKey("logd.otlp.encoding", str)
_MAPPED = web.RequestKey("logd.otlp.mapped", Mapped)


@dataclass(frozen=True)
class HttpListenerConfig:
    type: str = setting("http", one_of("http"))
    address: tuple[str, int] = setting(("127.0.0.1", 3000), to_address,
                                       "host:port to listen on (loopback unless opened)")
    max_body_bytes: int = setting(10 * 1024**2, to_size(lo=1024),
                                  "largest body, before and after gzip (413 beyond)")
    tokens: tuple[str, ...] = setting((), to_str_list,
                                      "bearer tokens; when set, requests need one (401)")
    acknowledge: str = setting("accepted", one_of("accepted", "delivered"),
                               "when to answer 202: accepted (every destination's buffer "
                               "holds the batch) or delivered (every destination wrote it)")
    full_wait: float = setting(30.0, to_duration,
                               "how long a request waits for room in a full buffer it is "
                               "routed to (when_full = block) before 503")
    delivery_timeout: float = setting(60.0, to_duration,
                                      "acknowledge = delivered: how long a request waits for "
                                      "delivery before 503")
    retry_after: float = setting(1.0, to_duration, "Retry-After of a 503")
    max_inflight_bytes: int = setting(32 * 1024**2, to_size(lo=1024),
                                      "request bodies read and parsed at once; more wait "
                                      "(up to full_wait, then 503)")
    header_timeout: float = setting(10.0, to_duration,
                                    "a request's headers (and a TLS handshake) must arrive "
                                    "within this; slower connections are closed")
    body_timeout: float = setting(60.0, to_duration,
                                  "a request's body must arrive within this (408 beyond)")
    keepalive_timeout: float = setting(75.0, to_duration,
                                       "idle keep-alive connections close after this")
    max_connections: int = setting(10000, to_int(1), "connections beyond it are refused")
    reuse_port: bool = setting(False, to_bool,
                               "SO_REUSEPORT: other logd processes with it on may listen "
                               "on the same address; the kernel spreads connections")
    tls: TlsConfig | None = nested(TlsConfig, lambda: None,  # noqa: RUF009
                                   "cert, key and optional client_ca: HTTPS; none: HTTP")
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



class HttpListener(Listener):
    def __init__(self, cfg: HttpListenerConfig, ctx: BuildContext | None = None) -> None:
        super().__init__(cfg.name)
        self.cfg = cfg
        ctx = ctx or BuildContext()
        self.router = ctx.the_router()
        self.daemon_stats = ctx.stats  # for GET /metrics
        self.server = GuardedServer(cfg.name, f"listeners.{cfg.name}",
                                    header_timeout=cfg.header_timeout,
                                    keepalive_timeout=cfg.keepalive_timeout,
                                    max_connections=cfg.max_connections,
                                    reuse_port=cfg.reuse_port)
        self.bound: tuple[str, int] | None = None
        self._tokens = [t.encode() for t in cfg.tokens]
        self.budget = ByteBudget(cfg.max_inflight_bytes)
        self.requests = 0
        self.records = 0
        self.bytes_in = 0
        self.refused_busy = 0
        self.waited_full = 0
        self.otlp_requests = 0
        self.otlp_records = 0
        self.otlp_rejected = 0
        self.otlp_decode_errors = 0
        self.errors: Counter[str] = Counter()
        self.ratelog = RateLimitedLog(log)
        self.tls: ServerTls | None = None

    async def start(self) -> None:
        if self.cfg.tls is not None:
            self.tls = ServerTls(self.cfg.tls, f"listeners.{self.name}",
                                 count_handshake_errors(self.errors, self.ratelog, self.name))
            self.server.ssl_context = self.tls.context
        app = web.Application(client_max_size=self.cfg.max_body_bytes,
                              middlewares=[self.server.middleware])
        app.router.add_post("/v1/logs", self._ingest)
        app.router.add_post("/api/logs", self._ingest)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        self.bound = await self.server.start(app, self.cfg.address)
        log.info("listening", extra={"listener": self.name, "type": "http",
                                     "host": self.bound[0], "port": self.bound[1],
                                     "tls": self.tls is not None})

    def reload_tls(self) -> bool:
        """Read the certificate files again (SIGHUP): connections made from now on use them.
        False when this listener has no TLS; TlsError (the old ones stay) when unusable."""
        if self.tls is None:
            return False
        self.tls.reload()
        return True

    async def drain(self, deadline: float) -> None:
        # Requests in progress finish, within the deadline; nothing new starts.
        await self.server.drain(deadline)

    async def close(self) -> None:
        await self.server.close()

    # -- handlers --

    async def _ingest(self, request: web.Request) -> web.Response:
        try:
            return await self._ingest_request(request)
        except web.HTTPException:
            raise
        except Exception as e:
            # A failure of logd's own would reach aiohttp, whose plain-text 500 no OTLP
            # client can read (it wants a google.rpc.Status) and that logd's JSON clients
            # do not expect either; nor would it be counted.
            self.errors["internal"] += 1
            self.ratelog.error("internal", "request failed", listener=self.name,
                               peer=request.remote, error=f"{type(e).__name__}: {e}")
            log.debug("request failed", exc_info=True)
            return self._error(request, 500, "internal", "the request failed inside logd "
                               "(see logd's log); retry later")

    async def _ingest_request(self, request: web.Request) -> web.Response:
        self.requests += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.full_wait
        try:
            self._check_content_type(request)
            # The parsed batch lives in _take only: waiting below holds no parsed objects.
            taken = await self._take(request, deadline)
        except BadRequest as e:
            self.errors[e.error] += 1
            self.ratelog.warning(e.error, f"request refused: {e}", listener=self.name,
                                 peer=request.remote, status=e.status)
            response = self._error(request, e.status, e.error, str(e))
            if e.status == 408:
                response.force_close()
            return response
        if isinstance(taken, web.Response):
            return taken
        receipt = taken
        if self.cfg.acknowledge == "delivered":
            done = await receipt.wait_delivered(self.cfg.delivery_timeout)
            what = "delivered"
        else:
            done = await receipt.wait_accepted(deadline - loop.time())
            what = "accepted"
        if not done:
            # Not refused either: the records may still arrive; a client that retries may
            # send them twice (at least once).
            return self._busy(request, "timeout", f"the batch was not {what} in time; "
                              "retry later")
        if receipt.refused:
            # A destination could not store the batch (its spool cannot be written) and
            # kept nothing of it; those that took it may get it twice when it is retried.
            return self._busy(request, "busy", "a destination cannot store records now (see "
                              "/health); retry later")
        if receipt.lost:
            return self._error(request, 500, "internal", f"{receipt.lost} records could not "
                               "be handed to an output (see logd's log); retry later")
        if request.get(_OTLP):
            return self._otlp_success(request, receipt)
        answer: dict[str, Any] = {"accepted": receipt.records}
        if receipt.dropped:
            answer["dropped"] = receipt.dropped
        return web.Response(status=202, body=orjson.dumps(answer),
                            content_type="application/json")

    async def _take(self, request: web.Request, deadline: float
                    ) -> BatchReceipt | web.Response:
        """Read, parse and hand over the body: the batch's receipt, or the answer when it
        could not be taken (busy). Raises BadRequest for a request that is wrong."""
        loop = asyncio.get_running_loop()
        self._authorize(request)
        # Room to read and parse the body first: what is parsed at once is bounded.
        taken = await self.budget.take(self._expected_size(request), deadline - loop.time())
        if not taken:
            return self._busy(request, "busy", "too many request bodies being read at once; "
                              "retry later", otlp_status=429)
        try:
            body = await self._body(request)
            if len(body) > taken:  # it inflated beyond the estimate: room for the rest too
                more = await self.budget.take(len(body) - taken, deadline - loop.time())
                if not more:
                    return self._busy(request, "busy", "too many request bodies being read "
                                      "at once; retry later", otlp_status=429)
                taken += more
            payloads, objs, sevs = self._decode(body, request)
            if not objs:  # an OTLP request with no record to take (logd's JSON raised)
                return self._otlp_success(request, None)
            receipt = await self._hand_over(objs, sevs, payloads, len(body), deadline)
        finally:
            self.budget.give(taken)
        if receipt is None:
            return self._busy(request, "busy", "output buffers are full; retry later")
        if request.get(_OTLP):
            self.otlp_records += receipt.records
        return receipt

    async def _hand_over(self, objs: list[Any], sevs: bytes, payloads: list[bytes] | None,
                         nbytes: int, deadline: float) -> BatchReceipt | None:
        """Route the batch and hand it to its destinations once each that blocks when full
        has room (waiting up to `deadline`); None when one stayed full."""
        loop = asyncio.get_running_loop()
        # Buffers the batch waits in make its payloads and drop the parsed objects (see
        # Batch.compact); an output that encodes the objects on arrival needs no payloads.
        batch = Batch.from_objects(objs, sevs, self.name, time.time(), nbytes, payloads)
        plan = self.router.plan(batch)
        waited = False
        while full := plan.blocking_full():
            # Nothing half-accepted: the whole batch waits until every destination that must
            # take it has room, like a TCP connection that stops reading.
            waited = True
            for buffer in full:
                try:
                    await asyncio.wait_for(buffer.wait_writable(),
                                           max(0.0, deadline - loop.time()))
                except TimeoutError:
                    return None
            if plan.generation != self.router.generation:  # a reload came meanwhile
                plan = self.router.plan(batch, tap=False)
        if waited:
            self.waited_full += 1
        receipt = BatchReceipt(batch.count)
        self.records += batch.count
        self.router.submit(plan, receipt)
        return receipt

    def _busy(self, request: web.Request, error: str, message: str,
              otlp_status: int = 503) -> web.Response:
        """503 + Retry-After; an OTLP request too many bodies at once keep waiting gets 429
        (both are retried by OTLP clients, after Retry-After)."""
        self.refused_busy += 1
        self.errors[error] += 1
        status = otlp_status if request.get(_OTLP) else 503
        return self._error(request, status, error, message,
                           **{"Retry-After": f"{max(1, round(self.cfg.retry_after))}"})

    def _error(self, request: web.Request, status: int, error: str, message: str,
               **headers: str) -> web.Response:
        """An error answer: logd's JSON, or a google.rpc.Status for an OTLP request."""
        encoding = request.get(_OTLP)
        if encoding is None:
            return _error(status, error, message, **headers)
        return web.Response(status=status, headers=headers or None, content_type=encoding,
                            body=otlp_answers.status_body(encoding, status,
                                                          f"{error}: {message}"))

    def _check_content_type(self, request: web.Request) -> None:
        """/v1/logs: protobuf is OTLP from the start; a type that is neither OTLP's nor one
        logd reads as JSON is refused (415)."""
        if request.path != OTLP_PATH:
            return
        ctype = request.content_type
        if ctype == otlp_answers.PROTOBUF:
            self._mark_otlp(request, otlp_answers.PROTOBUF)
        elif ctype not in _JSON_TYPES and "Content-Type" in request.headers:
            self._mark_otlp(request, otlp_answers.PROTOBUF)
            raise BadRequest(415, "unsupported_media_type",
                             f"Content-Type {ctype!r}; expected application/x-protobuf or "
                             "application/json (OTLP), or logd's application/json or "
                             "application/x-ndjson")

    def _mark_otlp(self, request: web.Request, encoding: str) -> None:
        request[_OTLP] = encoding
        self.otlp_requests += 1

    def _decode(self, body: bytes, request: web.Request
                ) -> tuple[list[bytes] | None, list[Any], bytes]:
        """(payloads if at hand, objects, severities) of a body, OTLP or logd's own;
        BadRequest when it cannot be read. An OTLP request's rejected records are left on
        the request for its answer."""
        encoding = request.get(_OTLP)
        doc: Any = None
        if encoding is None and request.path == OTLP_PATH and \
                request.content_type != "application/x-ndjson" and body.lstrip()[:1] == b"{":
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError:
                doc = None  # _parse says where
            if is_otlp_json(doc):
                self._mark_otlp(request, encoding := otlp_answers.JSON)
        if encoding is None:
            return self._parse(body, request.content_type, doc)
        try:
            mapped = decode_protobuf(body) if encoding == otlp_answers.PROTOBUF else \
                from_json(doc)
        except BadOtlp as e:
            self.otlp_decode_errors += 1
            raise BadRequest(400, "bad_otlp", str(e)) from None
        except Exception as e:
            # What no check foresaw (a bug in logd, not the request) would otherwise reach
            # aiohttp as a plain-text 500 with a traceback, per request and uncounted.
            self.otlp_decode_errors += 1
            log.debug("OTLP request not readable", exc_info=True)
            raise BadRequest(400, "bad_otlp", f"the request cannot be read "
                             f"({type(e).__name__}: {str(e)[:200]})") from None
        if mapped.rejected:
            self.otlp_rejected += mapped.rejected
            self.ratelog.warning("otlp_rejected", "OTLP log records rejected",
                                 listener=self.name, peer=request.remote,
                                 rejected=mapped.rejected, first=mapped.first_error)
        request[_MAPPED] = mapped
        return None, mapped.objs, bytes(mapped.severities)

    def _otlp_success(self, request: web.Request, receipt: BatchReceipt | None
                      ) -> web.Response:
        """200 with an ExportLogsServiceResponse: partial_success counts the log records
        rejected as invalid and those a full drop_newest destination dropped."""
        encoding = request[_OTLP]
        mapped: Mapped = request[_MAPPED]
        rejected = mapped.rejected
        reasons = []
        if rejected:
            reasons.append(f"{rejected} log records rejected; the first: {mapped.first_error}")
        if receipt is not None and receipt.dropped:
            dropped = min(receipt.dropped, receipt.records)
            rejected += dropped
            reasons.append(f"{dropped} log records dropped by a full destination "
                           "(when_full = drop_newest)")
        return web.Response(status=200, content_type=encoding,
                            body=otlp_answers.export_response(encoding, rejected,
                                                              "; ".join(reasons)))

    def _expected_size(self, request: web.Request) -> int:
        """What reading and parsing this body will hold: its length, or the most a body may
        be when the length is unknown or it is compressed."""
        length = request.content_length
        if length is None or request.headers.get("Content-Encoding", "identity").lower() \
                not in ("", "identity"):
            return self.cfg.max_body_bytes
        return length

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
            raw = await asyncio.wait_for(request.read(), self.cfg.body_timeout)
        except TimeoutError:
            raise BadRequest(408, "body_timeout", "the body did not arrive within "
                             f"body_timeout ({self.cfg.body_timeout:g}s)") from None
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

    def _parse(self, body: bytes, content_type: str, doc: Any = None
               ) -> tuple[list[bytes] | None, list[Any], bytes]:
        """(payload bytes if at hand, objects, severities), or BadRequest naming the first bad
        record. `doc`: the body, when it was parsed already."""
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
            if doc is None:
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
        from logd.control.http_metrics import CONTENT_TYPE
        from logd.metrics import render_stats
        return web.Response(body=render_stats(self.daemon_stats()).encode(),
                            headers={"Content-Type": CONTENT_TYPE})

    def stats(self) -> HttpListenerStats:
        errors = dict(self.errors)
        errors.update(self.server.errors)
        return {"type": "http", "connections": len(self.server.connections),
                "accepted": self.requests, "accepted_connections": self.server.accepted,
                "records": self.records, "bytes": self.bytes_in, "pauses": self.refused_busy,
                "waited_full": self.waited_full, "inflight_bytes": self.budget.used,
                "otlp_requests": self.otlp_requests, "otlp_records": self.otlp_records,
                "otlp_rejected_records": self.otlp_rejected,
                "otlp_decode_errors": self.otlp_decode_errors, "errors": errors}


class BatchReceipt(Receipt):
    """A receipt that remembers how many records its batch had."""

    __slots__ = ("records",)

    def __init__(self, records: int) -> None:
        super().__init__(refusable=True)  # a client can be told to retry
        self.records = records
