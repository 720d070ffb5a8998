"""The emitter port: TCP connections carrying frames or lines.

One `data_received` call decodes a whole socket read into one batch and hands it to the router.
When an output under `when_full = "block"` is full, the connection stops reading (TCP flow
control pushes back on the emitter) until that buffer has room again.
A protocol error closes only the connection that made it, with a counter and a log line.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from logd.backpressure import FullBuffers
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
)
from logd.framing import FrameDecoder, FramingError, LineDecoder, invalid_utf8
from logd.listeners.serve import open_server
from logd.logsetup import RateLimitedLog
from logd.record import Batch, frame_severities
from logd.stats import TcpListenerStats
from logd.tls import HANDSHAKE_TIMEOUT, ServerTls, TlsConfig, count_handshake_errors, peer_cn
from logd.units import format_size

if TYPE_CHECKING:
    pass

log = logging.getLogger("logd.tcp")


_DEFAULT_PENDING = 256 * 1024**2


@dataclass(frozen=True)
class TcpListenerConfig:
    type: str = setting("tcp", one_of("tcp"))
    address: tuple[str, int] = setting(("127.0.0.1", 8080), to_address,
                                       "host:port to listen on (loopback unless opened)")
    framing: str = setting("frames", one_of("frames", "lines"),
                           "frames: [u32 length][u8 severity][payload]; lines: LF-delimited")
    max_frame_bytes: int = setting(1024**2, to_size(lo=2),
                                   "a longer frame or line closes its connection")
    max_connections: int = setting(10000, to_int(1), "connections beyond it are refused")
    idle_timeout: float = setting(0.0, to_duration,
                                  "close connections silent this long (0: never)")
    keepalive: bool = setting(True, to_bool, "TCP keepalive, to find half-open connections")
    reuse_port: bool = setting(False, to_bool,
                               "SO_REUSEPORT: other logd processes with it on may listen "
                               "on the same address; the kernel spreads connections")
    max_pending_bytes: int = setting(_DEFAULT_PENDING, to_size(lo=2),
                                     "incomplete frames held across all connections; beyond "
                                     "it the connections holding most are closed")
    tls: TlsConfig | None = nested(TlsConfig, lambda: None,  # noqa: RUF009
                                   "cert, key and optional client_ca: TLS; none: plaintext")
    name: str = component_name()

    def validate(self) -> list[tuple[str, str]]:
        if self.max_pending_bytes < self.max_frame_bytes + 4:
            if self.max_pending_bytes == _DEFAULT_PENDING:
                # Most likely unset: name the key the file has.
                return [("max_frame_bytes", f"must be at most max_pending_bytes - 4 "
                         f"(max_pending_bytes is {format_size(_DEFAULT_PENDING)} by default: "
                         "set it too, to hold a frame that long and its header)")]
            return [("max_pending_bytes", f"must be at least max_frame_bytes + 4 "
                     f"({self.max_frame_bytes + 4}: a frame and its header), or no frame "
                     "that long could complete")]
        return []


class _Connection(asyncio.Protocol):
    __slots__ = ("decoder", "held", "last_data", "listener", "offset", "paused", "peer",
                 "transport", "who")

    def __init__(self, listener: TcpListener) -> None:
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        cfg = listener.cfg
        self.decoder: FrameDecoder | LineDecoder = (
            FrameDecoder(cfg.max_frame_bytes) if cfg.framing == "frames"
            else LineDecoder(cfg.max_frame_bytes))
        self.peer = "?"
        self.who: dict[str, str] = {}  # peer (and client_cn) for log lines
        self.last_data = time.monotonic()
        self.paused = False
        self.held = 0  # bytes of an incomplete frame, as counted in listener.pending_bytes

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        lst = self.listener
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.who = {"peer": self.peer}
        if lst.tls is not None:
            cn = peer_cn(transport)
            if cn is not None:
                self.who["client_cn"] = cn
        if len(lst.connections) >= lst.cfg.max_connections or lst.stopping:
            lst.errors["refused"] += 1
            lst.ratelog.warning("refused", "connection refused: max_connections reached",
                                listener=lst.name, **self.who,
                                max_connections=lst.cfg.max_connections)
            cast(asyncio.Transport, transport).abort()
            return
        lst.connections.add(self)
        lst.accepted += 1
        if lst.blocked_by:
            # The listener waits for a full buffer: this one waits too, once the loop has
            # started reading it (a pause inside connection_made would be undone by that).
            asyncio.get_running_loop().call_soon(self._pause_if_blocked)
        sock = transport.get_extra_info("socket")
        if sock is not None and lst.cfg.keepalive:
            _set_keepalive(sock)

    def data_received(self, data: bytes) -> None:
        lst = self.listener
        lst.bytes_in += len(data)
        self.last_data = time.monotonic()
        decoder = self.decoder
        try:
            if isinstance(decoder, FrameDecoder):
                payloads, chunk, start, stop = decoder.feed(data)
                if not payloads:
                    return
                nbytes = stop - start - 5 * len(payloads)
                if len(payloads) > 64:
                    # Severities are read from the chunk later, if ever: no per-record work.
                    batch = Batch(payloads, None, lst.name, time.time(), nbytes,
                                  frames=(chunk, start, stop))
                else:
                    # Few (large) frames: take their severities now rather than keep the
                    # whole read alive beside the payloads.
                    batch = Batch(payloads, frame_severities(chunk, start, stop), lst.name,
                                  time.time(), nbytes)
            else:
                block, count = decoder.feed(data)
                if not count:
                    return
                batch = Batch.from_lines(block, count, lst.name, time.time())
        except FramingError as e:
            self._deliver_before_error(e)
            self._protocol_error(e)
            return
        finally:
            held = decoder.pending
            if held != self.held:
                lst.pending_bytes += held - self.held
                self.held = held
                if lst.pending_bytes > lst.cfg.max_pending_bytes:
                    lst.shed_pending()
        self._deliver(batch, chunk if isinstance(decoder, FrameDecoder) else block)

    def _deliver_before_error(self, e: FramingError) -> None:
        """The whole records that came in the same read, before the bad one, are kept."""
        name = self.listener.name
        if e.frames is not None and e.frames[0]:
            payloads, chunk, start, stop = e.frames
            self._deliver(Batch(payloads, frame_severities(chunk, start, stop), name,
                                time.time(), stop - start - 5 * len(payloads)), chunk)
        elif e.lines is not None and e.lines[1]:
            block, count = e.lines
            self._deliver(Batch.from_lines(block, count, name, time.time()), block)

    def _deliver(self, batch: Batch, block: bytes) -> None:
        lst = self.listener
        lst.records += batch.count
        bad = invalid_utf8(block, lambda: batch.payloads)
        if bad:
            lst.errors["invalid_utf8"] += bad
            lst.ratelog.warning("invalid_utf8", "records with invalid UTF-8 (kept as bytes)",
                                listener=lst.name, **self.who, records=bad)
        blocked = lst.router.dispatch(batch)
        if blocked:
            lst.pause_all(blocked)
            if self.transport is not None:  # whatever state it was in, this one reads no more
                self.paused = True
                self.transport.pause_reading()

    def _pause_if_blocked(self) -> None:
        if self.listener.blocked_by:
            self.pause()

    def pause(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        self.paused = False
        self.last_data = time.monotonic()  # idle from now, not from before the pause
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def _protocol_error(self, e: FramingError) -> None:
        lst = self.listener
        lst.errors[e.reason] += 1
        lst.ratelog.warning(e.reason, f"closing connection: {e}", listener=lst.name,
                            **self.who, offset=e.offset)
        if self.transport is not None:
            self.transport.abort()

    def deliver_unterminated_line(self) -> None:
        """A line connection's last line without LF is still a record (at EOF or drain)."""
        if isinstance(self.decoder, LineDecoder):
            block = self.decoder.finish()
            if block:
                self._deliver(Batch.from_lines(block, 1, self.listener.name, time.time()),
                              block)

    def eof_received(self) -> bool:
        lst = self.listener
        if isinstance(self.decoder, LineDecoder):
            self.deliver_unterminated_line()
        elif self.decoder.pending:
            lst.errors["truncated"] += 1
            lst.ratelog.warning("truncated", "connection closed inside a frame; partial frame "
                                "discarded", listener=lst.name, **self.who,
                                bytes=self.decoder.pending)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.release_held()
        self.listener.connections.discard(self)
        self.transport = None

    def release_held(self) -> None:
        self.listener.pending_bytes -= self.held
        self.held = 0


def _set_keepalive(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 60)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 6)
    except OSError:
        pass


class TcpListener(Listener):
    protocol: type[_Connection] = _Connection  # what each connection is read with

    def __init__(self, cfg: TcpListenerConfig, ctx: BuildContext | None = None) -> None:
        super().__init__(cfg.name)
        self.cfg = cfg
        self.router = (ctx or BuildContext()).the_router()
        self.connections: set[_Connection] = set()
        self.server: asyncio.AbstractServer | None = None
        self.bound: tuple[str, int] | None = None
        self.stopping = False
        self.accepted = 0
        self.records = 0
        self.bytes_in = 0
        self.pauses = 0
        self.pending_bytes = 0  # incomplete frames held by all connections
        self.blocked_by = FullBuffers(self._resume_all)  # what the connections wait for
        self.errors: Counter[str] = Counter()
        self.ratelog = RateLimitedLog(log)
        self.tls: ServerTls | None = None

    def pause_all(self, blocked: list[Any]) -> None:
        """A buffer this listener feeds is full (when_full = block): every connection stops
        reading until it has room, not only the one whose read filled it, so the buffer
        overshoots by at most the reads already taken, not one more per connection."""
        if not self.blocked_by.hold(blocked):
            return
        self.pauses += 1
        for conn in self.connections:
            conn.pause()

    def routes_changed(self) -> None:
        """A reload changed where records go: everyone reads again; a read that meets a full
        buffer pauses them anew."""
        self.blocked_by.routes_changed()

    def _resume_all(self) -> None:
        for conn in list(self.connections):
            conn.resume()

    def shed_pending(self) -> None:
        """Over max_pending_bytes: close the connections holding the most incomplete data
        until the rest fits (many slow senders must not add up to unbounded memory)."""
        budget = self.cfg.max_pending_bytes
        for conn in sorted(self.connections, key=lambda c: c.held, reverse=True):
            if self.pending_bytes <= budget or not conn.held:
                break
            self.errors["over_pending_budget"] += 1
            self.ratelog.warning("over_pending_budget", "closing connection: incomplete "
                                 "frames over the listener's max_pending_bytes",
                                 listener=self.name, **conn.who, held=conn.held,
                                 max_pending_bytes=budget)
            conn.release_held()
            if conn.transport is not None:
                conn.transport.abort()

    async def start(self) -> None:
        if self.cfg.tls is not None:
            self.tls = ServerTls(self.cfg.tls, f"listeners.{self.name}",
                                 count_handshake_errors(self.errors, self.ratelog, self.name))
        self.server, self.bound = await open_server(
            self.name, self.cfg.address, lambda: self.protocol(self),
            ssl=self.tls.context if self.tls else None,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT, reuse_port=self.cfg.reuse_port,
            type=self.cfg.type, framing=self.cfg.framing)

    def reload_tls(self) -> bool:
        """Read the certificate files again (SIGHUP): connections made from now on use them.
        False when this listener has no TLS; TlsError (the old ones stay) when unusable."""
        if self.tls is None:
            return False
        self.tls.reload()
        return True

    async def run(self) -> None:
        idle = self.cfg.idle_timeout
        if not idle:
            return
        while not self.stopping:
            await asyncio.sleep(min(idle, 1.0))
            cutoff = time.monotonic() - idle
            for conn in list(self.connections):
                if conn.last_data < cutoff and not conn.paused and conn.transport is not None:
                    self.errors["idle_timeout"] += 1
                    conn.transport.close()

    async def drain(self, deadline: float) -> None:
        """Stop accepting; let connections deliver what they already sent, briefly.

        A connection closes once its peer closed, or it has been quiet for a moment; at most
        `linger` seconds for all. What a peer sends after that is refused by the close.
        """
        self.stopping = True
        if self.server is not None:
            self.server.close()
        loop = asyncio.get_running_loop()
        linger_end = min(deadline, loop.time() + 2.0)
        while self.connections and loop.time() < linger_end:
            quiet = time.monotonic() - 0.2
            for conn in list(self.connections):
                if conn.last_data < quiet and not conn.paused and conn.transport is not None:
                    conn.deliver_unterminated_line()
                    conn.transport.close()
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        self.connections.clear()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    def stats(self) -> TcpListenerStats:
        return {
            "type": "tcp",
            "connections": len(self.connections),
            "accepted": self.accepted,
            "records": self.records,
            "bytes": self.bytes_in,
            "pauses": self.pauses,
            "pending_bytes": self.pending_bytes,
            "errors": dict(self.errors),
        }
