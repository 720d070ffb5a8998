"""Serving an aiohttp application with the bounds a daemon on an open port needs.

aiohttp parses HTTP; this module owns the listening socket and every connection around it:
- a connection must send a request's headers within `header_timeout` of connecting or of
  its first byte after a response (slowloris connections are closed and counted); idle
  keep-alive connections close after `keepalive_timeout`;
- at most `max_connections` connections; more are refused and counted;
- TLS, with a handshake that must finish within `header_timeout`;
- a stop closes the socket, lets requests in progress finish until the deadline, then
  closes what is left.
Each connection's protocol wraps aiohttp's own (`web.Server` is the protocol factory
aiohttp documents for low-level servers); a middleware tells the wrapper when a request's
handler starts and ends.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web

from logd.component import StartError
from logd.logsetup import RateLimitedLog

log = logging.getLogger("logd.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_FRESH, _IDLE, _HEADERS, _HANDLING = range(4)


class _Guard(asyncio.Protocol):
    """One connection: aiohttp's protocol inside, timers and counts outside."""

    __slots__ = ("inner", "server", "state", "timer", "transport")

    def __init__(self, server: GuardedServer) -> None:
        self.server = server
        self.inner: Any = None
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.state = _FRESH

    def connection_made(self, base: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, base)  # a stream server's transports are
        srv = self.server
        if srv.closing or len(srv.connections) >= srv.max_connections:
            srv.errors["refused"] += 1
            srv.ratelog.warning("refused", "connection refused: max_connections reached",
                                listener=srv.name, peer=_peer(transport),
                                max_connections=srv.max_connections)
            transport.abort()
            return
        self.transport = transport
        srv.connections[transport] = self
        srv.accepted += 1
        self.inner = srv.protocol_factory()
        self.inner.connection_made(transport)
        self._arm("header_timeout")

    def data_received(self, data: bytes) -> None:
        if self.inner is None:
            return
        if self.state == _IDLE:
            # A new request begins: its headers have header_timeout to arrive.
            self.state = _HEADERS
            self._arm("header_timeout")
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else False

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.transport is not None:
            self.server.connections.pop(self.transport, None)
        if self.inner is not None:
            self.inner.connection_lost(exc)
            self.inner = None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def request_started(self) -> None:
        self.state = _HANDLING
        self._disarm()

    def request_finished(self) -> None:
        # Idle until the next request's first byte; aiohttp's keep-alive timer runs meanwhile.
        self.state = _IDLE
        self._disarm()

    def _arm(self, reason: str) -> None:
        self._disarm()
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.server.header_timeout, self._expire, reason)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expire(self, reason: str) -> None:
        self.timer = None
        srv = self.server
        srv.errors[reason] += 1
        srv.ratelog.warning(reason, "closing connection: no complete request headers in "
                            "time", listener=srv.name, peer=_peer(self.transport),
                            header_timeout_s=srv.header_timeout)
        if self.transport is not None:
            self.transport.abort()


def _peer(transport: asyncio.BaseTransport | None) -> str:
    peer = transport.get_extra_info("peername") if transport is not None else None
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)


class GuardedServer:
    """An aiohttp application on a TCP port, within the bounds above."""

    def __init__(self, name: str, key: str, *, header_timeout: float = 10.0,
                 keepalive_timeout: float = 75.0, max_connections: int = 10000,
                 ssl_context: ssl.SSLContext | None = None, reuse_port: bool = False) -> None:
        self.name = name
        self.key = key  # the config key named when the port cannot be had
        # SO_REUSEPORT: other processes asking for it too may serve the same port.
        self.reuse_port = reuse_port
        self.header_timeout = header_timeout
        self.keepalive_timeout = keepalive_timeout
        self.max_connections = max_connections
        self.ssl_context = ssl_context
        self.connections: dict[asyncio.Transport, _Guard] = {}
        self.accepted = 0
        self.errors: Counter[str] = Counter()
        self.ratelog = RateLimitedLog(log)
        self.closing = False
        self.bound: tuple[str, int] | None = None
        self.protocol_factory: Callable[[], Any] = lambda: None
        self._runner: web.AppRunner | None = None
        self._server: asyncio.AbstractServer | None = None

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Put in the application's middlewares: the connection's header clock stops while
        its request is handled."""
        guard = self.connections.get(request.transport) if request.transport else None
        if guard is not None:
            guard.request_started()
        try:
            return await handler(request)
        finally:
            if guard is not None:
                guard.request_finished()

    async def start(self, app: web.Application, address: tuple[str, int]) -> tuple[str, int]:
        runner = web.AppRunner(app, access_log=None, handle_signals=False,
                               keepalive_timeout=self.keepalive_timeout)
        await runner.setup()
        server_factory = runner.server
        assert server_factory is not None
        self.protocol_factory = server_factory
        host, port = address
        extra: dict[str, Any] = {}
        if self.ssl_context is not None:
            extra = {"ssl": self.ssl_context, "ssl_handshake_timeout": self.header_timeout}
        try:
            self._server = await asyncio.get_running_loop().create_server(
                lambda: _Guard(self), host or None, port, backlog=4096, reuse_address=True,
                reuse_port=self.reuse_port, **extra)
        except OSError as e:
            await runner.cleanup()
            raise StartError(f"{self.key}: cannot listen on {host}:{port}: "
                             f"{e.strerror or e}") from None
        self._runner = runner
        sockname = self._server.sockets[0].getsockname()
        self.bound = (sockname[0], sockname[1])
        return self.bound

    async def drain(self, deadline: float) -> None:
        """Stop accepting; requests in progress finish until `deadline` (loop time), then
        every connection closes."""
        self.closing = True
        if self._server is not None:
            self._server.close()
            self._server = None
        runner, self._runner = self._runner, None
        if runner is None:
            return
        loop = asyncio.get_running_loop()
        if runner.server is not None:
            await runner.server.shutdown(max(0.0, deadline - loop.time()))
        await runner.cleanup()
        for transport in list(self.connections):
            transport.abort()

    async def close(self) -> None:
        await self.drain(asyncio.get_running_loop().time())
