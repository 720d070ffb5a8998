"""The analyzer pool: consumers connect and receive the stream, load-balanced by weight.

The pool is a destination (routes send to it), with a bounded buffer like an output, that
analyzers connect to (so it is configured as a listener, `type = "analyzer"`). Its run task
takes batches from the buffer and cuts them into chunks; each chunk goes to the analyzer
that stride scheduling says is due (O(log n)), within that analyzer's window of
`max_unacked` messages (an AckWindow). When the due analyzer's window is full the pool
waits for its ACKs: shares follow the weights, and a slow analyzer slows the pool (an
analyzer that cannot keep up lowers its weight; one that stops ACKing is dropped at
`ack_timeout`). While the pool waits its buffer fills and applies `when_full` upstream.

An analyzer that disconnects, breaks the protocol, or leaves messages unacked past
`ack_timeout` is dropped, and every message it had not ACKed is sent to the others again
(at-least-once: such messages may be seen twice; they are counted as redelivered).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

from logd.analyzer_protocol import (
    AckWindow,
    AnalyzerProtocolError,
    ControlDecoder,
    encode_frames,
)
from logd.component import BuildContext, Listener
from logd.config import (
    MemoryBufferConfig,
    component_name,
    nested,
    one_of,
    setting,
    to_address,
    to_bool,
    to_duration,
    to_int,
)
from logd.delivery import Receipt
from logd.listeners.serve import open_server
from logd.logsetup import RateLimitedLog
from logd.outputs.base import Destination
from logd.stats import AnalyzerPoolStats
from logd.tls import HANDSHAKE_TIMEOUT, ServerTls, TlsConfig, count_handshake_errors, peer_cn
from logd.weighted import StridePicker

log = logging.getLogger("logd.analyzer")

CHUNK = 64  # records per pick: small enough for exact shares, large enough to batch writes


@dataclass(frozen=True)
class AnalyzerListenerConfig:
    type: str = setting("analyzer", one_of("analyzer"))
    address: tuple[str, int] = setting(("127.0.0.1", 8081), to_address,
                                       "host:port analyzers connect to (loopback unless "
                                       "opened)")
    ack_timeout: float = setting(30.0, to_duration,
                                 "an analyzer silent this long with messages unacked is "
                                 "dropped and its messages go to the others")
    max_unacked: int = setting(10000, to_int(1, 2**30), "messages in flight per analyzer")
    max_connections: int = setting(10000, to_int(1), "analyzers beyond it are refused")
    reuse_port: bool = setting(False, to_bool,
                               "SO_REUSEPORT: other logd processes with it on may listen "
                               "on the same address; each analyzer reaches one of them")
    buffer: MemoryBufferConfig = nested(MemoryBufferConfig,  # noqa: RUF009
                                        MemoryBufferConfig)
    tls: TlsConfig | None = nested(TlsConfig, lambda: None,  # noqa: RUF009
                                   "cert, key and optional client_ca: TLS; with client_ca an "
                                   "analyzer proves who it is with its certificate")
    name: str = component_name()


class _Analyzer(asyncio.Protocol):
    def __init__(self, pool: AnalyzerPool) -> None:
        self.pool = pool
        self.id = ""
        self.peer = "?"
        self.client_cn: str | None = None  # from its certificate, with client_ca
        self.transport: asyncio.Transport | None = None
        self.decoder = ControlDecoder()
        self.weight: float | None = None
        self.window = AckWindow()  # sent, not yet ACKed; each chunk's tag is its receipt
        self.last_progress = time.monotonic()
        self.sent = 0
        self.redelivered_to = 0
        self.write_paused = False
        self.connected_at = time.time()
        self.closed = False

    @property
    def in_flight(self) -> int:
        return self.window.in_flight

    @property
    def acked(self) -> int:
        return self.window.acked

    def who(self) -> dict[str, str]:
        """The peer, and the CN of its certificate if it presented one: for log lines."""
        if self.client_cn is None:
            return {"peer": self.peer}
        return {"peer": self.peer, "client_cn": self.client_cn}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        if self.pool.tls is not None:
            self.client_cn = peer_cn(transport)
        self.pool._connected(self)

    def data_received(self, data: bytes) -> None:
        error = None
        try:
            events = self.decoder.feed(data)
        except AnalyzerProtocolError as e:
            events, error = e.events, e
        for kind, value in events:
            if kind == "ack":
                self.pool._ack(self, int(value))
            else:
                self.pool._weight(self, value, "analyzer")
            if self.closed:
                return
        if error is not None:
            # The messages before the bad one count: ACKed ones are not sent twice.
            self.pool._protocol_error(self, error.reason, str(error))

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self.pool._ready.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool._lost(self, "disconnected")


class AnalyzerPool(Destination, Listener):
    kind = "listener"

    def __init__(self, cfg: AnalyzerListenerConfig, ctx: BuildContext | None = None) -> None:
        super().__init__(cfg.name, cfg.type, cfg.buffer, ctx)
        self.cfg = cfg
        self.picker = StridePicker()
        self.analyzers: dict[str, _Analyzer] = {}
        self._ids = itertools.count(1)
        self._redeliver: deque[tuple[list[bytes], bytes, Receipt | None]] = deque()
        self._ready = asyncio.Event()
        self._lease_sent = 0  # records of the lease being sent that are already out
        self.server: asyncio.AbstractServer | None = None
        self.bound: tuple[str, int] | None = None
        self._draining = False
        self.errors: Counter[str] = Counter()
        self.ratelog = RateLimitedLog(log)
        self.accepted_connections = 0
        self.tls: ServerTls | None = None
        self.sent = 0
        self.acked_total = 0
        self.redelivered = 0
        self.dropped_analyzers = 0

    # -- lifecycle --

    async def start(self) -> None:
        if self.cfg.tls is not None:
            self.tls = ServerTls(self.cfg.tls, f"listeners.{self.name}",
                                 count_handshake_errors(self.errors, self.ratelog, self.name))
        self.server, self.bound = await open_server(
            self.name, self.cfg.address, lambda: _Analyzer(self),
            ssl=self.tls.context if self.tls else None,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT, reuse_port=self.cfg.reuse_port,
            type="analyzer")

    def reload_tls(self) -> bool:
        """Read the certificate files again (SIGHUP): analyzers that connect from now on see
        them. False when this listener has no TLS; TlsError (the old ones stay) when
        unusable."""
        if self.tls is None:
            return False
        self.tls.reload()
        return True

    async def run(self) -> None:
        watchdog = asyncio.get_running_loop().create_task(self._ack_timeouts())
        try:
            await self._distribute()
        finally:
            watchdog.cancel()

    async def _distribute(self) -> None:
        max_cost = 4 * 1024 * 1024
        while True:
            if self._draining and self._nobody_to_send_to():
                left = self.pending_records()
                if left:
                    log.error("shutdown: no analyzer connected; records not delivered",
                              extra={"listener": self.name, "records": left})
                return
            if self._redeliver:
                await self._send_redeliveries()
                continue
            if self.picker.eligible == 0:
                # Nobody to send to: leave records in the buffer, where when_full applies.
                self._ready.clear()
                await self._ready.wait()
                continue
            lease = await self.buffer.get(max_cost, timeout=0.5)
            if lease is not None:
                # Delivered when the analyzers ACK, not when the lease is done.
                receipts = lease.take_receipts()
                try:
                    for i, batch in enumerate(lease.batches):
                        # What a lost analyzer held goes out before more new records.
                        await self._send_redeliveries()
                        await self._send(batch.payloads, batch.severity_bytes(),
                                         receipts[i] if receipts is not None else None)
                        self._lease_sent += batch.count
                        # Let ACKs in between batches, so windows drain as they fill.
                        await asyncio.sleep(0)
                finally:
                    self._lease_sent = 0
                    self.buffer.ack(lease)
            elif self._draining and self.buffer.empty() and not self._redeliver:
                if not any(a.in_flight for a in self.analyzers.values()):
                    return
                self._ready.clear()
                await self._ready.wait()  # an ACK, or an analyzer lost (its messages return)

    def _nobody_to_send_to(self) -> bool:
        """No analyzer that could take a record, and none whose ACKs are still to come."""
        return self.picker.eligible == 0 and not any(
            a.in_flight for a in self.analyzers.values())

    async def _send_redeliveries(self) -> None:
        while self._redeliver:
            payloads, sevs, receipt = self._redeliver.popleft()
            await self._send(payloads, sevs, receipt, redelivery=True)
            if self._draining and self._nobody_to_send_to():
                return

    async def _send(self, payloads: list[bytes], sevs: bytes, receipt: Receipt | None = None,
                    redelivery: bool = False) -> None:
        """Hand records out chunk by chunk to the analyzers that are due.

        Whatever is not handed out when this returns early (a drain with nobody left) or is
        cancelled (the shutdown deadline) goes back to the front of the redelivery queue, so
        it is still counted as pending.
        """
        n = len(payloads)
        pos = 0
        picker = self.picker
        # Many analyzers and few records: smaller chunks, so each still gets its share.
        per_pick = max(1, min(CHUNK, n // max(1, picker.eligible)))
        try:
            while pos < n:
                key = picker.peek()
                if key is None:
                    if self._draining and self._nobody_to_send_to():
                        return
                    self._ready.clear()
                    await self._ready.wait()
                    continue
                a = self.analyzers[key]
                room = self.cfg.max_unacked - a.in_flight
                if room <= 0 or a.write_paused:
                    # The due analyzer is behind: wait for its ACKs (or for it to be dropped
                    # at ack_timeout) rather than give its share to others, so shares follow
                    # the weights and a slow analyzer slows the pool (it can lower its weight).
                    self._ready.clear()
                    await self._ready.wait()
                    continue
                c = min(per_pick, n - pos, room)
                chunk = payloads[pos:pos + c]
                chunk_sevs = sevs[pos:pos + c]
                assert a.transport is not None
                if a.in_flight == 0:
                    a.last_progress = time.monotonic()  # the ACK clock starts with a send
                a.transport.write(encode_frames(chunk, chunk_sevs))
                a.window.sent(chunk, chunk_sevs, receipt)
                a.sent += c
                if redelivery:
                    a.redelivered_to += c
                self.sent += c
                picker.charge(key, c)
                pos += c
        finally:
            if pos < n:
                self._redeliver.appendleft((payloads[pos:], sevs[pos:], receipt))

    async def drain(self, deadline: float) -> None:
        self._draining = True
        self.buffer.close()
        self._ready.set()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for a in list(self.analyzers.values()):
            if a.transport is not None:
                a.transport.close()

    def pending_records(self) -> int:
        """Taken but not ACKed: buffered (less what of the current lease went out), waiting
        for redelivery, and in flight."""
        return (self.buffer.queued_records - self._lease_sent
                + sum(len(p) for p, _, _ in self._redeliver)
                + sum(a.in_flight for a in self.analyzers.values()))

    # -- connection events --

    def _connected(self, a: _Analyzer) -> None:
        if len(self.analyzers) >= self.cfg.max_connections:
            self.errors["refused"] += 1
            self.ratelog.warning("refused", "analyzer refused: max_connections reached",
                                 listener=self.name, **a.who())
            a.closed = True
            assert a.transport is not None
            a.transport.abort()
            return
        a.id = f"{self.name}-{next(self._ids)}"
        self.analyzers[a.id] = a
        self.accepted_connections += 1

    def _weight(self, a: _Analyzer, w: float, source: str) -> None:
        first = a.weight is None
        a.weight = w
        if first:
            self.picker.add(a.id, w)
            log.info("analyzer connected", extra={"listener": self.name, "analyzer": a.id,
                                                  **a.who(), "weight": w})
        else:
            self.picker.set_weight(a.id, w)
            log.info("analyzer weight", extra={"listener": self.name, "analyzer": a.id,
                                               "weight": w, "set_by": source})
        self._ready.set()  # the pool may be waiting on this analyzer, now drained or not

    def set_weight(self, analyzer_id: str, w: float) -> None:
        """Operator override (logctl analyzers set-weight); the analyzer may send its own."""
        from logd.weighted import check_weight
        a = self.analyzers.get(analyzer_id)
        if a is None or a.weight is None:
            raise KeyError(f"no analyzer {analyzer_id!r} on {self.name}")
        self._weight(a, check_weight(w), "operator")

    def _ack(self, a: _Analyzer, wire: int) -> None:
        try:
            done = a.window.ack(wire)
        except AnalyzerProtocolError as e:
            self._protocol_error(a, e.reason, str(e))
            return
        if not done:
            return  # cumulative: an old ACK says nothing new
        a.last_progress = time.monotonic()
        for receipt, n in done:
            self.acked_total += n
            if receipt is not None:
                receipt.written(n)
        self._ready.set()

    def _protocol_error(self, a: _Analyzer, reason: str, detail: str) -> None:
        self.errors[reason] += 1
        self.ratelog.warning(reason, f"closing analyzer connection: {detail}",
                             listener=self.name, analyzer=a.id, **a.who())
        if a.transport is not None:
            a.transport.abort()
        self._lost(a, reason)

    def _lost(self, a: _Analyzer, reason: str) -> None:
        """Drop an analyzer; what it had not ACKed goes to the others."""
        if a.closed:
            return
        a.closed = True
        if a.id in self.picker:
            self.picker.remove(a.id)
        self.analyzers.pop(a.id, None)
        unacked = 0
        for chunk, sevs, receipt in a.window.unacked():
            self._redeliver.append((chunk, sevs, receipt))
            unacked += len(chunk)
        if unacked:
            self.redelivered += unacked
            self.dropped_analyzers += 1
            log.warning("analyzer gone; its unacked messages go to the others", extra={
                "listener": self.name, "analyzer": a.id, "reason": reason,
                "redelivered": unacked})
        elif a.weight is not None:
            log.info("analyzer disconnected", extra={"listener": self.name, "analyzer": a.id,
                                                     "reason": reason})
        self._ready.set()

    async def _ack_timeouts(self) -> None:
        timeout = self.cfg.ack_timeout
        while True:
            await asyncio.sleep(min(1.0, max(timeout / 4, 0.01)))
            now = time.monotonic()
            for a in list(self.analyzers.values()):
                if a.in_flight and now - a.last_progress > timeout:
                    self.errors["ack_timeout"] += 1
                    self.ratelog.warning("ack_timeout", "analyzer did not ACK in time; "
                                         "dropping it", listener=self.name, analyzer=a.id,
                                         **a.who(), in_flight=a.in_flight)
                    if a.transport is not None:
                        a.transport.abort()
                    self._lost(a, "ack_timeout")

    # -- figures --

    def analyzer_table(self) -> list[dict[str, Any]]:
        shares = self.picker.shares()
        return [{"id": a.id, "peer": a.peer, "client_cn": a.client_cn, "weight": a.weight,
                 "share": shares.get(a.id, 0.0),
                 "sent": a.sent, "in_flight": a.in_flight, "acked": a.acked,
                 "redelivered_to": a.redelivered_to,
                 "waiting": a.in_flight >= self.cfg.max_unacked or a.write_paused,
                 "connected_s": time.time() - a.connected_at}
                for a in self.analyzers.values()]

    def stats(self) -> AnalyzerPoolStats:
        out: AnalyzerPoolStats = {
            **super().stats(),
            "type": "analyzer",
            "connections": len(self.analyzers),
            "accepted": self.buffer.accepted_records,
            "accepted_connections": self.accepted_connections,
            "records": self.buffer.accepted_records,
            "sent": self.sent,
            "acked": self.acked_total,
            "written": self.acked_total,  # delivered, as outputs count it
            "in_flight": sum(a.in_flight for a in self.analyzers.values()),
            "redelivered": self.redelivered,
            "redelivery_queued": sum(len(p) for p, _, _ in self._redeliver),
            "dropped_analyzers": self.dropped_analyzers,
            "errors": dict(self.errors),
        }
        return out
