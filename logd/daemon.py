"""The daemon: signals, systemd notifications, the control socket, reloads and the deadline.

The components themselves (their order, supervision, a reload's changes, the stop) are the
topology's (logd/topology.py); what a reload changes is a pure diff (logd/config_diff.py).
Start: the topology, then the control socket and the metrics endpoint; then READY=1.
Stop (SIGTERM/SIGINT): everything within `shutdown_timeout`; what could not be written by then
is logged with its count. A second signal exits at once.
Reload (SIGHUP or `logctl reload`): the file is read again; an invalid one changes nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import time
from typing import Any

from logd import __version__, linescan, logsetup, procstats
from logd.component import StartError
from logd.config import Config, ConfigError, load
from logd.config_diff import RESTART_KEYS, diff
from logd.outputs.analyzer_pool import AnalyzerPool
from logd.outputs.base import Destination
from logd.router import Router
from logd.sdnotify import Notifier
from logd.topology import Topology, close_quietly

log = logging.getLogger("logd")


class Daemon:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.topology = Topology(cfg, self.stats)
        self.notifier = Notifier()
        self._stop = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()
        self._reload_lock = asyncio.Lock()
        self._signals = 0
        self._first_signal = 0.0
        self._services: list[Any] = []
        self.reloads = 0
        self.started_at = time.time()
        self.control: Any = None  # the control socket's server, once started

    # -- what the control socket and the metrics endpoint see --

    @property
    def router(self) -> Router:
        return self.topology.router

    @property
    def outputs(self) -> dict[str, Destination]:
        return self.topology.outputs

    @property
    def listeners(self) -> dict[str, Any]:
        return self.topology.listeners

    def analyzer_pools(self) -> dict[str, AnalyzerPool]:
        return {n: c for n, c in self.topology.listeners.items()
                if isinstance(c, AnalyzerPool)}

    # -- running --

    async def run(self) -> int:
        """Run until a stop signal; returns the process exit code."""
        procstats.GC.install()
        loop = asyncio.get_running_loop()
        try:
            await self.topology.start()
            await self._start_services()
        except StartError as e:
            log.error("start failed", extra={"reason": str(e)})
            for svc in reversed(self._services):
                await close_quietly(svc)
            await self.topology.shutdown(loop.time())
            return 1
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        self.topology.run()
        ticker = loop.create_task(self._stats_ticker())
        watchdog = loop.create_task(self.notifier.watchdog())
        log.info("started", extra={"pid": os.getpid(), "config": self.cfg.source,
                                   "instance": self.cfg.daemon.instance,
                                   "listeners": list(self.topology.listeners),
                                   "outputs": list(self.topology.outputs),
                                   "line_scan": "compiled" if linescan.COMPILED else "python"})
        self.notifier.ready()
        await self._stop.wait()
        self.notifier.stopping()
        ticker.cancel()
        lost = await self._shutdown()
        watchdog.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        # A reload request that arrives while the process exits must not kill it.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.notifier.close()
        log.info("stopped", extra={"unwritten_records": lost})
        return 0 if lost == 0 else 1

    async def _start_services(self) -> None:
        from logd.control.server import ControlServer
        control = ControlServer(self, self.cfg.daemon.control_socket)
        await control.start()
        self._services.append(control)
        self.control = control
        if self.cfg.daemon.metrics_address is not None:
            from logd.control.http_metrics import MetricsServer
            metrics = MetricsServer(self, self.cfg.daemon.metrics_address)
            await metrics.start()
            self._services.append(metrics)

    def request_stop(self) -> None:
        self._stop.set()

    def _on_signal(self, sig: int) -> None:
        now = time.monotonic()
        if self._signals:
            # The same stop often arrives twice at once (a supervisor and a process group,
            # timeout(1) and make): only a second request a moment later means "now".
            if now - self._first_signal < 1.0:
                return
            log.error("second signal: exiting without draining", extra={"signal": sig})
            os._exit(1)
        self._signals += 1
        self._first_signal = now
        log.info("stopping", extra={"signal": signal.Signals(sig).name})
        self._stop.set()

    def _on_sighup(self) -> None:
        if self._stop.is_set():
            log.info("reload ignored: stopping", extra={"signal": "SIGHUP"})
            return
        log.info("reload requested", extra={"signal": "SIGHUP"})
        task = asyncio.get_running_loop().create_task(self.reload())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _stats_ticker(self) -> None:
        while True:
            interval = self.cfg.daemon.stats_interval
            if not interval:
                await asyncio.sleep(1.0)
                continue
            await asyncio.sleep(interval)
            self.topology.log_metrics()

    # -- reload --

    async def reload(self) -> dict[str, Any]:
        """Re-read the config file and apply it; an invalid file changes nothing."""
        if self._stop.is_set():
            return {"applied": False, "problems": ["logd is stopping"], "changes": []}
        async with self._reload_lock:
            if self._stop.is_set():
                return {"applied": False, "problems": ["logd is stopping"], "changes": []}
            self.notifier.reloading()
            try:
                try:
                    new = load(self.cfg.source)
                except ConfigError as e:
                    problems = [f"{k}: {m}" if k else m for k, m in e.problems]
                    log.error("reload refused: config invalid; the running one stays",
                              extra={"problems": problems})
                    return {"applied": False, "problems": problems, "changes": []}
                # What only a restart changes stays as the process runs it.
                kept = {k: getattr(self.cfg.daemon, k) for k in RESTART_KEYS}
                effective = dataclasses.replace(
                    new, daemon=dataclasses.replace(new.daemon, **kept), source=self.cfg.source)
                result = await self.topology.apply(effective, diff(self.cfg, new))
                if result["applied"]:
                    self.cfg = effective
                    self.reloads += 1
                return result
            finally:
                self.notifier.ready("running")

    # -- stop --

    async def _shutdown(self) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.daemon.shutdown_timeout
        async with self._reload_lock:
            for svc in self._services:
                await close_quietly(svc)
            return await self.topology.shutdown(deadline)

    def stats(self) -> dict[str, Any]:
        topology = self.topology
        return {
            "process": procstats.process_stats(),
            "daemon": {"version": __version__,
                       "config": self.cfg.source, "instance": self.cfg.daemon.instance,
                       "reloads": self.reloads,
                       "started_at": self.started_at,
                       "line_scan": "compiled" if linescan.COMPILED else "python",
                       "library_errors": dict(logsetup.LIBRARY_ERRORS),
                       "control_errors": 0 if self.control is None else self.control.errors},
            "listeners": {n: c.stats() for n, c in topology.listeners.items()},
            "outputs": {n: c.stats() for n, c in topology.outputs.items()},
            "router": {"unrouted": topology.router.unrouted,
                       "submit_errors": topology.router.submit_errors},
        }
