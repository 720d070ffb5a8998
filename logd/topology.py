"""The running components: built from a config in order, supervised, changed by a reload's
diff, and stopped within a deadline.

Start: outputs first (so nothing is accepted that has nowhere to go), then analyzer pools
(destinations too), then the other listeners; the router learns each destination as it
comes up.
Reload (`apply`): what is new starts before anything old is touched, so a failure changes
nothing; the router switches; replaced outputs finish their buffers (a spool is handed to the
replacement); removed listeners drain; changed listeners restart in place.
Stop (`shutdown`): listeners stop taking records and deliver what they hold, then the
destinations write out their buffers, within the deadline; what is left is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any

from logd import logsetup, procstats, registry
from logd.buffers.disk import HandedOver
from logd.component import BuildContext, Component, Listener, StartError
from logd.config import Config
from logd.config_diff import ConfigDiff
from logd.outputs.base import Destination
from logd.router import Router
from logd.tls import TlsError

log = logging.getLogger("logd")


class Topology:
    def __init__(self, cfg: Config, stats: Callable[[], dict[str, Any]]) -> None:
        self.cfg = cfg
        self.router = Router({}, {})
        self.outputs: dict[str, Destination] = {}
        self.listeners: dict[str, Listener] = {}
        self._ctx = BuildContext(state_dir=cfg.daemon.state_dir, router=self.router,
                                 stats=stats)
        self._tasks: dict[int, asyncio.Task[None]] = {}  # id(component) -> its run task
        self._retiring: dict[asyncio.Task[None], Destination] = {}  # outputs a reload replaced

    # -- building --

    def destinations(self) -> dict[str, Destination]:
        """What routes can name: outputs and analyzer pools."""
        pools = {n: c for n, c in self.listeners.items() if isinstance(c, Destination)}
        return {**self.outputs, **pools}

    def _new_output(self, name: str, cfg: Any, predecessor: Destination | None = None
                    ) -> Destination:
        """A new output; a reload's replacement takes over its predecessor's spool when both
        use the same one (the predecessor finishes what it holds, the rest is read again)."""
        out: Destination = registry.OUTPUTS[cfg.type].component_class()(cfg, self._ctx)
        state_dir = self._ctx.state_dir
        if (predecessor is not None and predecessor.buffer.persistent
                and out.buffer.persistent
                and os.path.realpath(out.spool_directory(state_dir))
                == os.path.realpath(predecessor.spool_directory(state_dir))):
            if cfg.type != predecessor.type:
                raise StartError(
                    f"output {name}: its spool holds {predecessor.type} records "
                    f"(not {cfg.type}); give the new type another buffer path")
            out.buffer = predecessor.buffer  # its new settings apply once the reload does
        else:
            out.open_buffer(state_dir)
        return out

    def _new_listener(self, name: str, cfg: Any) -> Listener:
        listener: Listener = registry.LISTENERS[cfg.type].component_class()(cfg, self._ctx)
        return listener

    def _spawn_run(self, comp: Component, after: asyncio.Task[None] | None = None) -> None:
        task = asyncio.get_running_loop().create_task(self._supervise(comp, after),
                                                      name=f"run:{comp.name}")
        self._tasks[id(comp)] = task

    async def start(self) -> None:
        """Start every component of the config, in order; StartError (with everything
        started closed again) when one cannot start."""
        started: list[Component] = []
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
                    self.router.reconfigure(self.cfg.routes, self.destinations())
                lst = self._new_listener(name, c)
                await lst.start()
                started.append(lst)
                self.listeners[name] = lst
            self.router.reconfigure(self.cfg.routes, self.destinations())
        except StartError:
            for comp in reversed(started):
                await close_quietly(comp)
            self.outputs.clear()
            self.listeners.clear()
            raise

    def run(self) -> None:
        """Start every component's run task."""
        for comp in [*self.outputs.values(), *self.listeners.values()]:
            self._spawn_run(comp)

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
            if isinstance(comp, Destination):
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
                if isinstance(comp, Destination):
                    # What the crashed run held unacknowledged is read again (a disk spool).
                    comp.buffer.rewind()

    def log_metrics(self) -> None:
        for name, lst in self.listeners.items():
            log.info("listener stats", extra={"listener": name, **lst.stats()})
        for name, out in self.outputs.items():
            log.info(procstats.metrics_line(out.stats()), extra={"output": name})

    # -- reload --

    async def apply(self, new: Config, change: ConfigDiff) -> dict[str, Any]:
        """Apply a new config whose diff from the running one is `change`."""
        old = self.cfg
        if not change.applicable:
            for reason in change.refused:
                log.error("reload refused; the running config stays", extra={"reason": reason})
            return {"applied": False, "problems": list(change.refused), "changes": []}
        changes: list[str] = []

        # 1. Start what is new, before anything old is touched: a failure changes nothing.
        fresh_outputs: dict[str, Destination] = {}
        fresh_listeners: dict[str, Listener] = {}
        try:
            for n in (*change.outputs_added, *change.outputs_changed):
                out = self._new_output(n, new.outputs[n], self.outputs.get(n))
                fresh_outputs[n] = out
                await out.start()
            for n in change.listeners_added:
                lst = self._new_listener(n, new.listeners[n])
                await lst.start()
                fresh_listeners[n] = lst
        except StartError as e:
            for fresh in fresh_outputs.values():
                current = self.outputs.get(fresh.name)
                if current is not None and fresh.buffer is current.buffer:
                    fresh.buffer = HandedOver(current.buffer)  # the running output keeps it
                await close_quietly(fresh)
            for lst in fresh_listeners.values():
                await close_quietly(lst)
            log.error("reload refused: a component failed to start; the running config "
                      "stays", extra={"reason": str(e)})
            return {"applied": False, "problems": [str(e)], "changes": []}

        # 2. Swap the outputs the router feeds; retired ones finish their buffers.
        retired = {n: self.outputs[n] for n in (*change.outputs_removed,
                                                *change.outputs_changed)}
        for n, out in fresh_outputs.items():
            if n in retired and out.buffer is retired[n].buffer:
                out.buffer.reconfigure(out.buffer_cfg)
                retired[n].buffer = HandedOver(out.buffer)
        self.outputs = {n: o for n, o in self.outputs.items() if n not in retired}
        self.outputs.update(fresh_outputs)
        self.outputs = {n: self.outputs[n] for n in new.outputs}
        self.router.reconfigure(new.routes, self.destinations())
        for lst in self.listeners.values():
            lst.routes_changed()
        if change.routes_changed:
            changes.append("routes updated")
        for n, out in fresh_outputs.items():
            old_task = self._tasks.get(id(retired[n])) if n in retired else None
            self._spawn_run(out, after=old_task)
            changes.append(f"output {n} {'changed' if n in retired else 'added'}")
        for n, out in retired.items():
            if n in change.outputs_removed:
                changes.append(f"output {n} removed")
            task = asyncio.get_running_loop().create_task(self._retire_output(out))
            self._retiring[task] = out
            task.add_done_callback(lambda t: self._retiring.pop(t, None))

        # 3. Listeners: new ones run; removed ones drain; changed ones restart in place.
        for n, lst in fresh_listeners.items():
            self.listeners[n] = lst
            self._spawn_run(lst)
            changes.append(f"listener {n} added")
        for n in change.listeners_removed:
            await self._retire_listener(self.listeners.pop(n))
            changes.append(f"listener {n} removed")
        problems: list[str] = []
        for n in change.listeners_changed:
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
        for n in change.listeners_kept:
            try:
                if self.listeners[n].reload_tls():
                    changes.append(f"tls reloaded: {n}")
            except TlsError as e:
                problems.append(str(e))
                log.error("tls reload failed; the old certificate stays",
                          extra={"listener": n, "reason": str(e)})
        # Likewise the outputs that keep running (client certificates to Kafka brokers).
        for n in new.outputs:
            if n in change.outputs_added or n in change.outputs_changed \
                    or n not in self.outputs:
                continue
            try:
                if self.outputs[n].reload_tls():
                    changes.append(f"tls reloaded: {n}")
            except TlsError as e:
                problems.append(str(e))
                log.error("tls reload failed; the old certificate stays",
                          extra={"output": n, "reason": str(e)})

        # 4. Daemon settings: some apply now, some need a restart.
        problems.extend(f"daemon.{key} changes only when logd restarts"
                        for key in change.restart_keys)
        if change.log_level is not None:
            logsetup.set_level(change.log_level)
            changes.append(f"log_level {change.log_level}")
        self.cfg = new
        log.info("reloaded", extra={"changes": changes, "problems": problems})
        return {"applied": True, "changes": changes, "problems": problems}

    async def _retire_output(self, out: Destination) -> None:
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
        await close_quietly(out)
        log.info(procstats.metrics_line(out.stats()), extra={"output": out.name,
                                                            "retired": True})

    async def _retire_listener(self, lst: Listener) -> None:
        loop = asyncio.get_running_loop()
        await lst.drain(loop.time() + self.cfg.daemon.shutdown_timeout)
        await _cancel(self._tasks.pop(id(lst), None))
        await close_quietly(lst)
        log.info("listener stats", extra={"listener": lst.name, "retired": True, **lst.stats()})

    # -- stop --

    async def shutdown(self, deadline: float) -> int:
        """Stop everything by `deadline` (loop time); returns the records not written."""
        loop = asyncio.get_running_loop()
        sources = [lst for lst in self.listeners.values() if not isinstance(lst, Destination)]
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
                await close_quietly(out)
        destinations = self.destinations()
        for out in destinations.values():
            await out.drain(deadline)
        pending = {id(o): self._tasks[id(o)] for o in destinations.values()
                   if id(o) in self._tasks}
        if pending:
            _, still = await asyncio.wait(list(pending.values()),
                                          timeout=max(0.0, deadline - loop.time()))
            for name, out in destinations.items():
                waited = pending.get(id(out))
                if waited is not None and waited in still:
                    out.give_up()
                    await _cancel(waited)  # what it was sending returns to its counts
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
            await close_quietly(comp)
        self.log_metrics()
        return lost


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


async def close_quietly(comp: Any) -> None:
    """Close a component or a service (and let go of a destination's buffer); a failure is
    logged, not raised."""
    try:
        await comp.close()
    except Exception:
        log.exception("close failed", extra={"component": comp.name})
    if isinstance(comp, Destination):
        comp.buffer.release()
