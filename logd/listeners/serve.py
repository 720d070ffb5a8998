"""Opening a listening TCP socket the way every listener does: errors name the listener."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from logd.component import StartError

log = logging.getLogger("logd.listen")


async def open_server(name: str, address: tuple[str, int],
                      factory: Callable[[], asyncio.BaseProtocol],
                      **log_fields: Any) -> tuple[asyncio.AbstractServer, tuple[str, int]]:
    """Listen on `address`; log "listening" with the bound port (port 0 picks one)."""
    host, port = address
    try:
        server = await asyncio.get_running_loop().create_server(
            factory, host or None, port, backlog=4096, reuse_address=True)
    except OSError as e:
        raise StartError(f"listeners.{name}: cannot listen on {host}:{port}: "
                         f"{e.strerror or e}") from None
    sockname = server.sockets[0].getsockname()
    log.info("listening", extra={"listener": name, **log_fields, "host": sockname[0],
                                 "port": sockname[1]})
    return server, (sockname[0], sockname[1])
