"""logd in the caller's event loop, for component tests: no process to start, and the
daemon's own objects at hand.

    async with run_daemon(config_text, tmp_path) as d:
        port = d.port("emitters")                  # a listener's bound port (port 0 in config)
        await d.wait_for(lambda e: e.get("msg") == "connected")   # its log, as JSON lines
        d.daemon.stats()                           # what `logctl stats --json` would show
        assert await d.stop() == 0                 # the exit code `logd` would exit with

The daemon is built as `logd --config` builds it (logd.config.load of a file, then
logd.daemon.Daemon) and runs its `run()` as a task; its log records are kept as the dicts
the process would print (logd.logsetup's JSON formatter and library filter). What needs a
process stays with testkit.harness.LogdProcess: signals, kill -9, exit codes, the CLI.

The test's loop runs the daemon, so a test must not block it: client code that blocks
(urllib, plain sockets) runs in a thread, e.g. through `await asyncio.to_thread(...)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import tempfile
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson

from logd import logsetup
from logd.config import load
from logd.daemon import Daemon
from testkit.harness import LogLines


class _Capture(logging.Handler):
    """Keeps every log record as the JSON object logd's stderr would carry."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.entries: list[dict[str, Any]] = []
        self.changed = asyncio.Event()
        self._loop = loop
        self._thread = threading.get_ident()
        self.setFormatter(logsetup.JsonFormatter())
        # As logsetup.setup() does: a library's error with a traceback is one counted line.
        self.addFilter(logsetup.OneLineFilter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            entry = orjson.loads(self.format(record))
        except Exception:
            self.handleError(record)
            return
        self.entries.append(entry)
        # Worker threads (file writes, resolvers) log too: wake the loop from theirs.
        if threading.get_ident() == self._thread:
            self.changed.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop has closed meanwhile
                self._loop.call_soon_threadsafe(self.changed.set)


class RunningDaemon(LogLines):
    """A Daemon running in this loop: its ports, its log, and its stop."""

    def __init__(self, daemon: Daemon, task: asyncio.Task[int], capture: _Capture,
                 workdir: Path, config_path: Path) -> None:
        self.daemon = daemon
        self.task = task
        self.workdir = workdir
        self.config_path = config_path
        self._capture = capture

    @property
    def logs(self) -> list[dict[str, Any]]:
        return self._capture.entries

    def _log_snapshot(self) -> list[dict[str, Any]]:
        return list(self._capture.entries)

    def port(self, listener: str) -> int:
        """The port `listener` is bound to now (a reload may have replaced it)."""
        bound = getattr(self.daemon.listeners[listener], "bound", None)
        assert bound is not None, f"listener {listener} is not listening"
        return int(bound[1])

    def metrics_port(self) -> int:
        entries = self.entries("metrics listening")
        assert entries, "no metrics_address in the config"
        return int(entries[-1]["port"])

    def alive(self) -> bool:
        return not self.task.done()

    def stats(self) -> dict[str, Any]:
        """What the control socket's `stats` answers."""
        return self.daemon.stats()

    async def wait_for(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 15.0,
                       count: int = 1) -> dict[str, Any]:
        """The `count`-th log entry matching `pred` (the first, by default), waiting for
        it; fails if the daemon ends first."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        seen = matched = 0
        while True:
            entries = self._capture.entries
            for entry in entries[seen:]:
                if pred(entry):
                    matched += 1
                    if matched == count:
                        return entry
            seen = len(entries)
            if self.task.done():
                raise AssertionError(f"logd stopped ({self._outcome()}):\n{self.tail()}")
            left = end - loop.time()
            if left <= 0:
                raise AssertionError("timed out waiting for a log entry; last lines:\n"
                                     + self.tail())
            self._capture.changed.clear()
            waiter = asyncio.ensure_future(self._capture.changed.wait())
            await asyncio.wait([waiter, self.task], timeout=left,
                               return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()

    async def stop(self) -> int:
        """Stop as SIGTERM does and wait for it, within the config's shutdown_timeout (and
        a margin); returns the exit code logd would exit with. Safe to call twice."""
        self.daemon.request_stop()
        limit = self.daemon.cfg.daemon.shutdown_timeout + 15
        try:
            return await asyncio.wait_for(asyncio.shield(self.task), limit)
        except TimeoutError:
            raise AssertionError(f"logd did not stop within {limit:g}s:\n{self.tail()}") \
                from None

    def tail(self, lines: int = 30) -> str:
        return "\n".join(orjson.dumps(e).decode() for e in self._capture.entries[-lines:])

    def _outcome(self) -> str:
        if self.task.cancelled():
            return "cancelled"
        exc = self.task.exception()
        return f"raised {exc!r}" if exc is not None else f"exit code {self.task.result()}"


@contextlib.asynccontextmanager
async def run_daemon(config: str, workdir: Path | None = None, *,
                     start_timeout: float = 30.0) -> AsyncIterator[RunningDaemon]:
    """Run logd on `config` (a TOML text; listeners on port 0) in the running loop.

    The config is written to `workdir`/logd.toml (a temp dir of its own if None), so a
    reload reads it again as it would in the process. Returns once logd has logged
    "started"; a start that fails is an AssertionError with logd's reason. On the way out
    the daemon is stopped, unless the test did, with the shutdown deadline.
    """
    own_dir = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="logd-")) if workdir is None else workdir
    config_path = workdir / "logd.toml"
    config_path.write_text(config)
    cfg = load(str(config_path))
    loop = asyncio.get_running_loop()
    capture = _Capture(loop)
    root = logging.getLogger()
    old_level = root.level
    old_sighup = signal.getsignal(signal.SIGHUP)
    root.addHandler(capture)
    root.setLevel(cfg.daemon.log_level.upper())
    # A process starts with no library errors counted; this one has run other daemons.
    logsetup.LIBRARY_ERRORS.clear()
    logd = Daemon(cfg)
    task = loop.create_task(logd.run(), name="logd")
    try:
        daemon = RunningDaemon(logd, task, capture, workdir, config_path)
        await daemon.wait_for(lambda e: e.get("msg") == "started", start_timeout)
        try:
            yield daemon
        finally:
            if not task.done():
                await daemon.stop()
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        root.removeHandler(capture)
        root.setLevel(old_level)
        # Daemon.run() ignores SIGHUP on its way out (a reload request must not kill an
        # exiting process); this process goes on running tests.
        signal.signal(signal.SIGHUP, old_sighup)
        if own_dir:
            shutil.rmtree(workdir, ignore_errors=True)

