"""GET /metrics (Prometheus text format) and GET /health, on `[daemon] metrics_address`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiohttp import web

from logd.listeners.web import GuardedServer
from logd.metrics import render_stats

if TYPE_CHECKING:
    from logd.daemon import Daemon

log = logging.getLogger("logd.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class MetricsServer:
    name = "metrics"

    def __init__(self, daemon: Daemon, address: tuple[str, int]) -> None:
        self.daemon = daemon
        self.address = address
        self.server = GuardedServer("metrics", "daemon.metrics_address",
                                    max_connections=256)
        self.bound: tuple[str, int] | None = None

    async def start(self) -> None:
        app = web.Application(middlewares=[self.server.middleware])
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health", self._health)
        self.bound = await self.server.start(app, self.address)
        log.info("metrics listening", extra={"host": self.bound[0], "port": self.bound[1]})

    async def _metrics(self, request: web.Request) -> web.Response:
        body = render_stats(self.daemon.stats())
        return web.Response(body=body.encode(), headers={"Content-Type": CONTENT_TYPE})

    async def _health(self, request: web.Request) -> web.Response:
        status, body = self.daemon.router.health()
        return web.json_response(body, status=status)

    async def close(self) -> None:
        await self.server.close()
