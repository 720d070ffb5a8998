"""The daemon: owns the components, their start order, signals, reload and the shutdown deadline.

Start: outputs first (so nothing is accepted that has nowhere to go), then listeners, then the
control socket and the metrics endpoint; then READY=1 to systemd.
Stop (SIGTERM/SIGINT): listeners stop accepting and deliver what they hold, outputs write out
their buffers, all within `shutdown_timeout`; whatever could not be written by then is logged
with its count. A second signal exits at once.
Reload (SIGHUP or `logctl reload`): a new config is validated and applied component by
component without losing records in flight; an invalid one changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from typing import Any

from logd import logsetup, procstats, registry
from logd.buffers.disk import HandedOver
from logd.component import Component, StartError
from logd.config import Config, ConfigError, load
from logd.outputs.base import Output
from logd.router import Router
from logd.sdnotify import Notifier
from logd.tls import TlsError

log = logging.getLogger("logd")

# Daemon keys a reload cannot change in a running process.
RESTART_KEYS = ("state_dir", "control_socket", "metrics_address")


class Daemon:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.outputs: dict[str, Output] = {}
        self.listeners: dict[str, Component] = {}
        self.router = Router({}, {})
        self.notifier = Notifier()
        self._stop = asyncio.Event()
        self._tasks: dict[int, asyncio.Task[None]] = {}  # id(component) -> its run task
        self._background: set[asyncio.Task[Any]] = set()
        self._retiring: dict[asyncio.Task[None], Output] = {}  # outputs a reload replaced
        self._reload_lock = asyncio.Lock()
        self._signals = 0
        self._first_signal = 0.0
        self._services: list[Any] = []
        self.reloads = 0
        self.started_at = time.time()
        self.control: Any = None  # the control socket's server, once started

    # -- building --

    def _new_output(self, name: str, cfg: Any, predecessor: Output | None = None) -> Output:
        """A new output; a reload's replacement takes over its predecessor's spool when both
        use the same one (the predecessor finishes what it holds, the rest is read again)."""
        out = registry.OUTPUTS[cfg.type].component_class()(cfg)
        state_dir = self.cfg.daemon.state_dir
        if hasattr(out, "state_dir"):
            out.state_dir = state_dir
        if (predecessor is not None and predecessor.buffer.persistent
                and out.buffer.persistent
                and os.path.realpath(out.spool_directory(state_dir))
                == os.path.realpath(predecessor.spool_directory(state_dir))):
            if cfg.type != predecessor.cfg.type:  # type: ignore[attr-defined]
                raise StartError(
                    f"output {name}: its spool holds {predecessor.cfg.type} records "  # type: ignore[attr-defined]
                    f"(not {cfg.type}); give the new type another buffer path")
            out.buffer = predecessor.buffer  # its new settings apply once the reload does
        else:
            out.open_buffer(state_dir)
        return out

    def _new_listener(self, name: str, cfg: Any) -> Component:
        lst = registry.LISTENERS[cfg.type].component_class()(cfg, self.router)
        if hasattr(lst, "stats_provider"):
            lst.stats_provider = self.stats
        if hasattr(lst, "state_dir"):
            lst.state_dir = self.cfg.daemon.state_dir
        return lst

    def _destinations(self) -> dict[str, Any]:
        """What routes can name: outputs and analyzer pools."""
        pools = {n: c for n, c in self.listeners.items() if getattr(c, "is_destination", False)}
        return {**self.outputs, **pools}

    def _spawn_run(self, comp: Component, after: asyncio.Task[None] | None = None) -> None:
        task = asyncio.get_running_loop().create_task(self._supervise(comp, after),
                                                      name=f"run:{comp.name}")
        self._tasks[id(comp)] = task

    # -- running --

    async def run(self) -> int:
        """Run until a stop signal; returns the process exit code."""
        procstats.GC.install()
        loop = asyncio.get_running_loop()
        started: list[Any] = []
        try:
            for name, c in self.cfg.outputs.items():
                out = self._new_output(name, c)
                await out.start()
                started.append(out)
                self.outputs[name] = out
            # Analyzer pools are destinations too: up before the router and the emitters.
            pools_first = sorted(self.cfg.listeners.items(),
                                 key=lambda item: item[1].type != "analyzer")
            for name, c in pools_first:
                if c.type != "analyzer":
                    self.router.reconfigure(self.cfg.routes, self._destinations())
                lst = self._new_listener(name, c)
                await lst.start()
                started.append(lst)
                self.listeners[name] = lst
            self.router.reconfigure(self.cfg.routes, self._destinations())
            await self._start_services(started)
        except StartError as e:
            log.error("start failed", extra={"reason": str(e)})
            for comp in reversed(started):
                await _close_quietly(comp)
            return 1
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        for comp in [*self.outputs.values(), *self.listeners.values()]:
            self._spawn_run(comp)
        ticker = loop.create_task(self._stats_ticker())
        watchdog = loop.create_task(self.notifier.watchdog())
        log.info("started", extra={"pid": os.getpid(), "config": self.cfg.source,
                                   "instance": self.cfg.daemon.instance,
                                   "listeners": list(self.listeners),
                                   "outputs": list(self.outputs)})
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

    async def _start_services(self, started: list[Any]) -> None:
        from logd.control.server import ControlServer
        control = ControlServer(self, self.cfg.daemon.control_socket)
        await control.start()
        started.append(control)
        self._services.append(control)
        self.control = control
        if self.cfg.daemon.metrics_address is not None:
            from logd.control.http_metrics import MetricsServer
            metrics = MetricsServer(self, self.cfg.daemon.metrics_address)
            await metrics.start()
            started.append(metrics)
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
        self._keep(asyncio.get_running_loop().create_task(self.reload()))

    def _keep(self, task: asyncio.Task[Any]) -> None:
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _supervise(self, comp: Component, after: asyncio.Task[None] | None) -> None:
        """Keep a component's run task alive: log a crash and restart it after a pause."""
        if after is not None:
            # A replaced output writes the same files: the new one starts once the old is done.
            try:
                await asyncio.shield(after)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # this task is cancelled (shutdown), not only the one waited for
            except Exception:
                pass  # the old one's failure was logged where it happened
            # A spool it took over: what the old one left unacknowledged is read again.
            comp.buffer.rewind()
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
                # What the crashed run held unacknowledged is read again (a disk spool).
                getattr(comp, "buffer", _NO_BUFFER).rewind()

    async def _stats_ticker(self) -> None:
        while True:
            interval = self.cfg.daemon.stats_interval
            if not interval:
                await asyncio.sleep(1.0)
                continue
            await asyncio.sleep(interval)
            self.log_metrics()

    def log_metrics(self) -> None:
        for name, lst in self.listeners.items():
            log.info("listener stats", extra={"listener": name, **lst.stats()})
        for name, out in self.outputs.items():
            log.info(procstats.metrics_line(out.stats()), extra={"output": name})

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
                result = await self._apply(new)
                self.reloads += result["applied"]
                return result
            finally:
                self.notifier.ready("running")

    async def _apply(self, new: Config) -> dict[str, Any]:
        old = self.cfg
        changes: list[str] = []
        out_gone = [n for n in self.outputs if n not in new.outputs]
        out_new = [n for n in new.outputs if n not in self.outputs]
        out_changed = [n for n in new.outputs if n in self.outputs
                       and new.outputs[n] != old.outputs[n]]
        lst_gone = [n for n in self.listeners if n not in new.listeners]
        lst_new = [n for n in new.listeners if n not in self.listeners]
        lst_changed = [n for n in new.listeners if n in self.listeners
                       and new.listeners[n] != old.listeners[n]]
        lst_kept = [n for n in new.listeners if n in self.listeners and n not in lst_changed]
        pools_touched = [n for n in lst_gone + lst_new + lst_changed
                         if "analyzer" in (getattr(old.listeners.get(n), "type", None),
                                           getattr(new.listeners.get(n), "type", None))]
        if pools_touched:
            reason = (f"analyzer listeners change only with a restart: "
                      f"{', '.join(sorted(pools_touched))}")
            log.error("reload refused; the running config stays", extra={"reason": reason})
            return {"applied": False, "problems": [reason], "changes": []}
        if new.daemon.instance != old.daemon.instance:
            # The name is in this process's paths: its outputs would move to another
            # instance's files while its state_dir and control socket stay.
            reason = (f"daemon.instance changes only with a restart (running as "
                      f"{old.daemon.instance!r}, the file says {new.daemon.instance!r})")
            log.error("reload refused; the running config stays", extra={"reason": reason})
            return {"applied": False, "problems": [reason], "changes": []}

        # 1. Start what is new, before anything old is touched: a failure changes nothing.
        fresh_outputs: dict[str, Output] = {}
        fresh_listeners: dict[str, Component] = {}
        try:
            for n in out_new + out_changed:
                out = self._new_output(n, new.outputs[n], self.outputs.get(n))
                fresh_outputs[n] = out
                await out.start()
            for n in lst_new:
                lst = self._new_listener(n, new.listeners[n])
                await lst.start()
                fresh_listeners[n] = lst
        except StartError as e:
            for comp in [*fresh_listeners.values(), *fresh_outputs.values()]:
                current = self.outputs.get(comp.name)
                if current is not None and getattr(comp, "buffer", None) is current.buffer:
                    comp.buffer = HandedOver(current.buffer)  # the running output keeps it
                await _close_quietly(comp)
            log.error("reload refused: a component failed to start; the running config "
                      "stays", extra={"reason": str(e)})
            return {"applied": False, "problems": [str(e)], "changes": []}

        # 2. Swap the outputs the router feeds; retired ones finish their buffers.
        retired = {n: self.outputs[n] for n in out_gone + out_changed}
        for n, out in fresh_outputs.items():
            if n in retired and out.buffer is retired[n].buffer:
                out.buffer.reconfigure(out.buffer_cfg)
                retired[n].buffer = HandedOver(out.buffer)
        self.outputs = {n: o for n, o in self.outputs.items() if n not in retired}
        self.outputs.update(fresh_outputs)
        self.outputs = {n: self.outputs[n] for n in new.outputs}
        self.router.reconfigure(new.routes, self._destinations())
        for lst in self.listeners.values():
            getattr(lst, "routes_changed", _nothing)()
        if new.routes != old.routes:
            changes.append("routes updated")
        for n, out in fresh_outputs.items():
            old_task = self._tasks.get(id(retired[n])) if n in retired else None
            self._spawn_run(out, after=old_task)
            changes.append(f"output {n} {'changed' if n in retired else 'added'}")
        for n, out in retired.items():
            if n in out_gone:
                changes.append(f"output {n} removed")
            task = asyncio.get_running_loop().create_task(self._retire_output(out))
            self._retiring[task] = out
            task.add_done_callback(lambda t: self._retiring.pop(t, None))

        # 3. Listeners: new ones run; removed ones drain; changed ones restart in place.
        for n, lst in fresh_listeners.items():
            self.listeners[n] = lst
            self._spawn_run(lst)
            changes.append(f"listener {n} added")
        for n in lst_gone:
            await self._retire_listener(self.listeners.pop(n))
            changes.append(f"listener {n} removed")
        problems: list[str] = []
        for n in lst_changed:
            await self._retire_listener(self.listeners.pop(n))
            lst = self._new_listener(n, new.listeners[n])
            try:
                await lst.start()
            except StartError as e:
                problems.append(str(e))
                log.error("listener did not restart with its new config; restoring the old one",
                          extra={"listener": n, "reason": str(e)})
                lst = self._new_listener(n, old.listeners[n])
                try:
                    await lst.start()
                except StartError as e2:
                    problems.append(str(e2))
                    continue
                self.listeners[n] = lst
                self._spawn_run(lst)
                continue
            self.listeners[n] = lst
            self._spawn_run(lst)
            changes.append(f"listener {n} changed")
        # Certificates renewed in place (same paths) are read again by the listeners that
        # keep running, analyzer pools included; a changed listener read them at its start.
        for n in lst_kept:
            reload_tls = getattr(self.listeners[n], "reload_tls", None)
            if reload_tls is None:
                continue
            try:
                if reload_tls():
                    changes.append(f"tls reloaded: {n}")
            except TlsError as e:
                problems.append(str(e))
                log.error("tls reload failed; the old certificate stays",
                          extra={"listener": n, "reason": str(e)})

        # 4. Daemon settings: some apply now, some need a restart.
        for key in RESTART_KEYS:
            if getattr(new.daemon, key) != getattr(old.daemon, key):
                problems.append(f"daemon.{key} changes only when logd restarts")
        if new.daemon.log_level != old.daemon.log_level:
            logsetup.set_level(new.daemon.log_level)
            changes.append(f"log_level {new.daemon.log_level}")
        kept_daemon = {k: getattr(old.daemon, k) for k in RESTART_KEYS}
        self.cfg = Config(daemon=_replace(new.daemon, **kept_daemon),
                          listeners=new.listeners, outputs=new.outputs, routes=new.routes,
                          source=old.source)
        log.info("reloaded", extra={"changes": changes, "problems": problems})
        return {"applied": True, "changes": changes, "problems": problems}

    async def _retire_output(self, out: Output) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.daemon.shutdown_timeout
        await out.drain(deadline)
        task = self._tasks.pop(id(out), None)
        if task is not None:
            try:
                _, pending = await asyncio.wait([task],
                                                timeout=max(0.0, deadline - loop.time()))
            except asyncio.CancelledError:
                # The daemon stops meanwhile: the old output stops too, or its replacement
                # (waiting for it) never starts and never ends.
                out.give_up()
                await _cancel(task)
                raise
            if pending:
                log.error("retired output did not finish its buffer in time",
                          extra={"output": out.name, "records": out.buffer.queued_records})
                out.give_up()
                await _cancel(task)
        await _close_quietly(out)
        log.info(procstats.metrics_line(out.stats()), extra={"output": out.name,
                                                            "retired": True})

    async def _retire_listener(self, lst: Component) -> None:
        loop = asyncio.get_running_loop()
        await lst.drain(loop.time() + self.cfg.daemon.shutdown_timeout)
        await _cancel(self._tasks.pop(id(lst), None))
        await _close_quietly(lst)
        log.info("listener stats", extra={"listener": lst.name, "retired": True, **lst.stats()})

    # -- stop --

    async def _shutdown(self) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.daemon.shutdown_timeout
        async with self._reload_lock:
            for svc in self._services:
                await _close_quietly(svc)
            sources = [lst for lst in self.listeners.values()
                       if not getattr(lst, "is_destination", False)]
            await asyncio.gather(*(lst.drain(deadline) for lst in sources))
            for lst in sources:
                await _cancel(self._tasks.pop(id(lst), None))
            # Outputs retired by a reload are finishing too; wait for them within the deadline.
            lost = 0
            if self._retiring:
                _, late = await asyncio.wait(list(self._retiring),
                                             timeout=max(0.0, deadline - loop.time()))
                for task in late:
                    out = self._retiring[task]
                    out.give_up()
                    await _cancel(task)
                    lost += out.pending_records()
                    log.error("shutdown deadline passed; records not written",
                              extra={"output": out.name, "records": out.pending_records()})
                    await _close_quietly(out)
            destinations = self._destinations()
            for out in destinations.values():
                await out.drain(deadline)
            pending = {id(o): self._tasks[id(o)] for o in destinations.values()
                       if id(o) in self._tasks}
            if pending:
                _, still = await asyncio.wait(list(pending.values()),
                                              timeout=max(0.0, deadline - loop.time()))
                for name, out in destinations.items():
                    task = pending.get(id(out))
                    if task in still:
                        out.give_up()
                        await _cancel(task)  # what it was sending returns to its counts
                        out.buffer.keep_held()  # a spool takes what it held in memory
                        left = out.pending_records()
                        lost += left
                        if left:
                            log.error("shutdown deadline passed; records not written",
                                      extra={"output": name, "records": left})
                        if out.buffer.persistent:
                            log.warning("shutdown deadline passed; records stay in the spool "
                                        "and are sent after the next start",
                                        extra={"output": name,
                                               "records": out.buffer.queued_records})
                    elif out.pending_records():
                        # Finished without writing everything (an analyzer pool with no
                        # analyzer left): still records lost.
                        lost += out.pending_records()
            for comp in [*self.listeners.values(), *self.outputs.values()]:
                await _close_quietly(comp)
            self.log_metrics()
            return lost

    def stats(self) -> dict[str, Any]:
        return {
            "process": procstats.process_stats(),
            "daemon": {"config": self.cfg.source, "instance": self.cfg.daemon.instance,
                       "reloads": self.reloads,
                       "started_at": self.started_at,
                       "library_errors": dict(logsetup.LIBRARY_ERRORS),
                       "control_errors": 0 if self.control is None else self.control.errors},
            "listeners": {n: c.stats() for n, c in self.listeners.items()},
            "outputs": {n: c.stats() for n, c in self.outputs.items()},
            "router": {"unrouted": self.router.unrouted,
                       "submit_errors": self.router.submit_errors},
        }


def _replace(obj: Any, **changes: Any) -> Any:
    import dataclasses
    return dataclasses.replace(obj, **changes)


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


def _nothing() -> None:
    pass


class _NoBuffer:
    def rewind(self) -> None:
        pass


_NO_BUFFER = _NoBuffer()


async def _close_quietly(comp: Any) -> None:
    try:
        await comp.close()
    except Exception:
        log.exception("close failed", extra={"component": getattr(comp, "name", comp)})
    buffer = getattr(comp, "buffer", None)
    if buffer is not None:
        buffer.release()
