"""The control socket: newline-delimited JSON requests and replies, for logctl.

Request:  {"cmd": "stats"}            Reply: {"ok": true, "result": {...}}
                                             {"ok": false, "error": "..."}
Commands: ping, stats, listeners, outputs, metrics_line, reload, analyzers,
set_weight {"id", "weight"}, and tail {"filter"}: after its reply the connection carries one
JSON line per record that passes and matches ({"time", "source", "level", "payload"}), and
{"dropped": N} when the reader fell behind, until either side closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

from logd import procstats
from logd.component import StartError
from logd.filters import FilterError, compile_filter
from logd.tap import Tap

if TYPE_CHECKING:
    from logd.daemon import Daemon

log = logging.getLogger("logd.control")

MAX_REQUEST = 1 << 20
SOCKET_MODE = 0o660  # logd's user and group: logctl reloads and changes weights


class ControlServer:
    def __init__(self, daemon: Daemon, path: str) -> None:
        self.daemon = daemon
        self.path = path
        self._server: asyncio.AbstractServer | None = None
        self._cpu_mark = (time.monotonic(), 0.0)
        self._clients: set[asyncio.StreamWriter] = set()
        self._commands: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
            "ping": self._ping,
            "stats": self._stats,
            "listeners": self._listeners,
            "outputs": self._outputs,
            "metrics_line": self._metrics_line,
            "reload": self._reload,
            "analyzers": self._analyzers,
            "set_weight": self._set_weight,
        }

    async def start(self) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as e:
            raise StartError(f"daemon.control_socket: cannot create {directory}: "
                             f"{e.strerror}") from None
        if os.path.exists(self.path):
            if _someone_listens(self.path):
                raise StartError(f"daemon.control_socket: {self.path} is in use by a running "
                                 "logd")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)  # left behind by a logd that did not stop cleanly
        try:
            sock = _bind_unix(self.path, SOCKET_MODE)
        except OSError as e:
            raise StartError(f"daemon.control_socket: cannot listen on {self.path}: "
                             f"{e.strerror or e}") from None
        try:
            self._server = await asyncio.start_unix_server(self._serve, sock=sock,
                                                           limit=MAX_REQUEST)
        except OSError as e:
            sock.close()
            raise StartError(f"daemon.control_socket: cannot listen on {self.path}: "
                             f"{e.strerror or e}") from None
        self._cpu_mark = (time.monotonic(), _cpu_seconds())
        log.info("control socket listening", extra={"path": self.path})

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
            for writer in list(self._clients):
                writer.close()  # a watching logctl must not send a reload into a shutdown
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    await self._reply(writer, {"ok": False, "error": "request too long"})
                    return
                if not line:
                    return
                try:
                    req = orjson.loads(line)
                except orjson.JSONDecodeError:
                    req = None  # answered by _handle
                if isinstance(req, dict) and req.get("cmd") == "tail":
                    await self._tail(req, reader, writer)  # the connection is a stream now
                    return
                await self._reply(writer, await self._handle(line))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._clients.discard(writer)
            writer.close()

    async def _tail(self, req: dict[str, Any], reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        expression = req.get("filter") or "*"
        try:
            tap = Tap(compile_filter(str(expression)))
        except FilterError as e:
            await self._reply(writer, {"ok": False, "error": f"filter: {e}"})
            return
        router = self.daemon.router
        router.taps.append(tap)
        gone = asyncio.ensure_future(reader.read(1))  # the reader closes: the tail ends
        try:
            await self._reply(writer, {"ok": True, "result": {"filter": expression}})
            while not gone.done():
                more = asyncio.ensure_future(tap.wait())
                await asyncio.wait({more, gone}, return_when=asyncio.FIRST_COMPLETED)
                more.cancel()
                records, dropped = tap.take()
                out = [orjson.dumps({"dropped": dropped}) + b"\n"] if dropped else []
                out.extend(orjson.dumps(r) + b"\n" for r in records)
                if out:
                    writer.write(b"".join(out))
                    await writer.drain()
        finally:
            router.taps.remove(tap)
            gone.cancel()

    async def _reply(self, writer: asyncio.StreamWriter, reply: dict[str, Any]) -> None:
        writer.write(orjson.dumps(reply, default=str) + b"\n")
        await writer.drain()

    async def _handle(self, line: bytes) -> dict[str, Any]:
        try:
            req = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            return {"ok": False, "error": f"bad request: not JSON ({e})"}
        if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
            return {"ok": False, "error": 'bad request: expected {"cmd": "..."}'}
        handler = self._commands.get(req["cmd"])
        if handler is None:
            return {"ok": False, "error": f"unknown command {req['cmd']!r}; expected one of "
                    f"{', '.join(sorted([*self._commands, 'tail']))}"}
        try:
            return {"ok": True, "result": await handler(req)}
        except Exception as e:
            log.exception("control command failed", extra={"cmd": req["cmd"]})
            return {"ok": False, "error": f"{type(e).__name__}: {e}"}

    async def _ping(self, req: dict[str, Any]) -> Any:
        return {"pid": os.getpid()}

    async def _stats(self, req: dict[str, Any]) -> Any:
        stats = self.daemon.stats()
        now, cpu = time.monotonic(), _cpu_seconds()
        then, cpu_then = self._cpu_mark
        self._cpu_mark = (now, cpu)
        elapsed = now - then
        stats["process"]["cpu_pct"] = 100 * (cpu - cpu_then) / elapsed if elapsed > 0 else 0.0
        return stats

    async def _listeners(self, req: dict[str, Any]) -> Any:
        return self.daemon.stats()["listeners"]

    async def _outputs(self, req: dict[str, Any]) -> Any:
        return self.daemon.stats()["outputs"]

    async def _metrics_line(self, req: dict[str, Any]) -> Any:
        return {name: procstats.metrics_line(s)
                for name, s in self.daemon.stats()["outputs"].items()}

    async def _reload(self, req: dict[str, Any]) -> Any:
        return await self.daemon.reload()

    def _pools(self) -> dict[str, Any]:
        return {n: c for n, c in self.daemon.listeners.items() if hasattr(c, "analyzer_table")}

    async def _analyzers(self, req: dict[str, Any]) -> Any:
        return {name: pool.analyzer_table() for name, pool in self._pools().items()}

    async def _set_weight(self, req: dict[str, Any]) -> Any:
        analyzer_id, weight = req.get("id"), req.get("weight")
        if not isinstance(analyzer_id, str) or isinstance(weight, bool) \
                or not isinstance(weight, (int, float)):
            raise ValueError('set_weight needs {"id": "...", "weight": number}')
        for pool in self._pools().values():
            if analyzer_id in pool.analyzers:
                pool.set_weight(analyzer_id, float(weight))
                return {"id": analyzer_id, "weight": float(weight)}
        raise KeyError(f"no analyzer {analyzer_id!r}; see logctl analyzers")


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def _bind_unix(path: str, mode: int) -> socket.socket:
    """A listening unix socket at `path` that has `mode` from the moment it exists.

    bind() creates the file with the mode the umask leaves, and a chmod after it leaves a
    moment in which anyone the umask lets in can connect: bind under a umask that leaves
    exactly `mode`. The umask belongs to the whole process, so it is restored at once, with
    nothing in between; this runs at start, before any component's run task creates files.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old = os.umask(0o777 & ~mode)
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _someone_listens(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            s.connect(path)
            return True
        except OSError:
            return False
