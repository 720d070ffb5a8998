"""Opening a listening TCP socket the way every listener does: errors name the listener."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from ssl import SSLContext
from typing import Any

from logd.component import StartError
from logd.tls import HANDSHAKE_TIMEOUT, TlsProtocol

log = logging.getLogger("logd.listen")


async def open_server(name: str, address: tuple[str, int],
                      factory: Callable[[], asyncio.BaseProtocol], *,
                      ssl: SSLContext | None = None, ssl_handshake_timeout: float | None = None,
                      reuse_port: bool = False,
                      **log_fields: Any) -> tuple[asyncio.AbstractServer, tuple[str, int]]:
    """Listen on `address`; log "listening" with the bound port (port 0 picks one).

    With `ssl`, connections are TLS: the protocol from `factory` sees them once the handshake
    is done, and a handshake not done within `ssl_handshake_timeout` seconds is dropped. TLS
    is done by logd.tls.TlsProtocol, not by the event loop (see there why).

    With `reuse_port`, other processes that also ask for it may listen on the same address
    (SO_REUSEPORT): the kernel hands each new connection to one of them. Without it on every
    socket, a second bind fails as before.
    """
    host, port = address
    if ssl is not None:
        factory = _with_tls(factory, ssl, ssl_handshake_timeout or HANDSHAKE_TIMEOUT)
    try:
        server = await asyncio.get_running_loop().create_server(
            factory, host or None, port, backlog=4096, reuse_address=True,
            reuse_port=reuse_port)
    except OSError as e:
        raise StartError(f"listeners.{name}: cannot listen on {host}:{port}: "
                         f"{e.strerror or e}") from None
    sockname = server.sockets[0].getsockname()
    log.info("listening", extra={"listener": name, **log_fields, "host": sockname[0],
                                 "port": sockname[1], "tls": ssl is not None})
    return server, (sockname[0], sockname[1])


def _with_tls(factory: Callable[[], asyncio.BaseProtocol], context: SSLContext,
              timeout: float) -> Callable[[], asyncio.BaseProtocol]:
    def make() -> asyncio.BaseProtocol:
        return TlsProtocol(factory(), context, timeout)  # type: ignore[arg-type]
    return make
