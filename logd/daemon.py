"""The daemon: owns the components, their start order, signals, and the shutdown deadline.

Start: outputs first (so nothing is accepted that has nowhere to go), then listeners.
Stop (SIGTERM/SIGINT): listeners stop accepting and deliver what they hold, outputs write out
their buffers, all within `shutdown_timeout`; whatever could not be written by then is logged
with its count. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from typing import Any

from logd import procstats, registry
from logd.component import Component, StartError
from logd.config import Config
from logd.outputs.base import Output
from logd.router import Router

log = logging.getLogger("logd")


class Daemon:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.outputs: dict[str, Output] = {
            name: registry.OUTPUTS[c.type].component_class()(c)
            for name, c in cfg.outputs.items()
        }
        self.router = Router(cfg.routes, self.outputs)
        self.listeners: dict[str, Component] = {
            name: registry.LISTENERS[c.type].component_class()(c, self.router)
            for name, c in cfg.listeners.items()
        }
        self._stop = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._signals = 0
        self.started_at = time.time()

    async def run(self) -> int:
        """Run until a stop signal; returns the process exit code."""
        procstats.GC.install()
        loop = asyncio.get_running_loop()
        started: list[Component] = []
        try:
            for comp in [*self.outputs.values(), *self.listeners.values()]:
                await comp.start()
                started.append(comp)
        except StartError as e:
            log.error("start failed", extra={"reason": str(e)})
            for comp in reversed(started):
                await _close_quietly(comp)
            return 1
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        for name, comp in [*self.outputs.items(), *self.listeners.items()]:
            self._tasks[name] = loop.create_task(self._supervise(comp), name=f"run:{name}")
        ticker = loop.create_task(self._stats_ticker())
        log.info("started", extra={"pid": os.getpid(), "config": self.cfg.source,
                                   "listeners": list(self.listeners),
                                   "outputs": list(self.outputs)})
        await self._stop.wait()
        ticker.cancel()
        lost = await self._shutdown()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        log.info("stopped", extra={"unwritten_records": lost})
        return 0 if lost == 0 else 1

    def request_stop(self) -> None:
        self._stop.set()

    def _on_signal(self, sig: int) -> None:
        self._signals += 1
        if self._signals > 1:
            log.error("second signal: exiting without draining", extra={"signal": sig})
            os._exit(1)
        log.info("stopping", extra={"signal": signal.Signals(sig).name})
        self._stop.set()

    async def _supervise(self, comp: Component) -> None:
        """Keep a component's run task alive: log a crash and restart it after a pause."""
        while True:
            try:
                await comp.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("component crashed; restarting in 1s",
                              extra={"component": comp.name})
                await asyncio.sleep(1.0)

    async def _stats_ticker(self) -> None:
        interval = self.cfg.daemon.stats_interval
        if not interval:
            return
        while True:
            await asyncio.sleep(interval)
            self.log_metrics()

    def log_metrics(self) -> None:
        for name, lst in self.listeners.items():
            log.info("listener stats", extra={"listener": name, **lst.stats()})
        for name, out in self.outputs.items():
            log.info(procstats.metrics_line(out.stats()), extra={"output": name})

    async def _shutdown(self) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.daemon.shutdown_timeout
        await asyncio.gather(*(lst.drain(deadline) for lst in self.listeners.values()))
        for name in self.listeners:
            await _cancel(self._tasks.pop(name, None))
        for out in self.outputs.values():
            await out.drain(deadline)
        lost = 0
        pending = [self._tasks[n] for n in self.outputs if n in self._tasks]
        if pending:
            _, still = await asyncio.wait(pending, timeout=max(0.0, deadline - loop.time()))
            for name, out in self.outputs.items():
                task = self._tasks.get(name)
                if task in still:
                    left = out.buffer.queued_records
                    lost += left
                    log.error("shutdown deadline passed; records not written",
                              extra={"output": name, "records": left})
                    out.give_up()
                    await _cancel(task)
        for comp in [*self.listeners.values(), *self.outputs.values()]:
            await _close_quietly(comp)
        self.log_metrics()
        return lost

    def stats(self) -> dict[str, Any]:
        return {
            "process": procstats.process_stats(),
            "listeners": {n: c.stats() for n, c in self.listeners.items()},
            "outputs": {n: c.stats() for n, c in self.outputs.items()},
            "router": {"unrouted": self.router.unrouted},
        }


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


async def _close_quietly(comp: Component) -> None:
    try:
        await comp.close()
    except Exception:
        log.exception("close failed", extra={"component": comp.name})
