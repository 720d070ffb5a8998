"""The control socket: newline-delimited JSON requests and replies, for logctl.

Request:  {"cmd": "stats"}            Reply: {"ok": true, "result": {...}}
                                             {"ok": false, "error": "...", "code": "..."}
Commands: ping, stats, listeners, outputs, metrics_line, reload, analyzers,
set_weight {"id", "weight"}, and tail {"filter"}: after its reply the connection carries one
JSON line per record that passes and matches ({"time", "source", "level", "payload"}), and
{"dropped": N} when the reader fell behind, until either side closes it.

Every request line gets one reply. An error's code says whose it is: "bad_request" (the
request is wrong: not JSON, no command, bad arguments, a filter that does not compile),
"not_found" (it names an analyzer logd does not have) or "internal" (a fault of logd's,
counted as control_errors in stats and logged on one line, rate-limited).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from logd import procstats
from logd.component import StartError
from logd.filters import FilterError, compile_filter
from logd.logsetup import RateLimitedLog
from logd.tap import Tap
from logd.weighted import WeightError, check_weight

if TYPE_CHECKING:
    from logd.outputs.analyzer_pool import AnalyzerPool
    from logd.router import Router

log = logging.getLogger("logd.control")

MAX_REQUEST = 1 << 20
SOCKET_MODE = 0o660  # logd's user and group: logctl reloads and changes weights


class RequestError(Exception):
    """The caller's mistake: answered with the message, not logged (a client can send any
    number of them)."""

    def __init__(self, message: str, code: str = "bad_request",
                 column: int | None = None) -> None:
        self.code = code
        self.column = column  # where in the request's filter expression, when it is about one
        super().__init__(message)


def _request(line: bytes) -> dict[str, Any]:
    """The request a line holds, or RequestError saying why it is none."""
    try:
        req = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        raise RequestError(f"bad request: not JSON ({e})") from None
    if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
        raise RequestError('bad request: expected {"cmd": "..."}')
    return req


class ControlTarget(Protocol):
    """What the control socket needs of the daemon."""

    @property
    def router(self) -> Router: ...

    def stats(self) -> dict[str, Any]: ...

    async def reload(self) -> dict[str, Any]: ...

    def analyzer_pools(self) -> dict[str, AnalyzerPool]: ...


class ControlServer:
    name = "control"

    def __init__(self, daemon: ControlTarget, path: str) -> None:
        self.daemon = daemon
        self.path = path
        self._server: asyncio.AbstractServer | None = None
        self._cpu_mark = (time.monotonic(), 0.0)
        self._clients: set[asyncio.StreamWriter] = set()
        self.errors = 0  # faults of logd's own while answering (stats: control_errors)
        self.ratelog = RateLimitedLog(log)
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
                    # The rest of the line is still unread: the connection cannot go on.
                    await self._reply(writer, self._refused(RequestError(
                        f"bad request: over {MAX_REQUEST} bytes (a request is one JSON "
                        "line)"), "?"))
                    return
                if not line:
                    return
                try:
                    req = _request(line)
                except RequestError as e:
                    await self._reply(writer, self._refused(e, "?"))
                    continue
                if req["cmd"] == "tail":
                    await self._tail(req, reader, writer)  # the connection is a stream now
                    return
                await self._reply(writer, await self._handle(req))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception as e:  # a fault here would otherwise end in asyncio's traceback
            self._fault(e, "?")
        finally:
            self._clients.discard(writer)
            writer.close()

    async def _tail(self, req: dict[str, Any], reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        expression = req.get("filter")
        if expression is None or expression == "":
            expression = "*"
        try:
            if not isinstance(expression, str):
                raise RequestError('tail needs {"filter": "EXPRESSION"}, a string')
            try:
                tap = Tap(compile_filter(expression))
            except FilterError as e:
                raise RequestError(f"filter: {e.message}", column=e.column) from None
        except RequestError as e:
            await self._reply(writer, self._refused(e, "tail"))
            return
        except Exception as e:
            await self._reply(writer, self._fault(e, "tail"))
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
        try:
            data = orjson.dumps(reply, default=str)
        except TypeError as e:  # orjson.JSONEncodeError: a result JSON cannot hold
            data = orjson.dumps(self._fault(e, "reply"))
        writer.write(data + b"\n")
        await writer.drain()

    def _refused(self, e: RequestError, cmd: str) -> dict[str, Any]:
        self.ratelog.debug("refused", "control request refused", cmd=cmd, error=str(e))
        reply: dict[str, Any] = {"ok": False, "error": str(e), "code": e.code}
        if e.column is not None:
            reply["column"] = e.column
        return reply

    def _fault(self, e: Exception, cmd: str) -> dict[str, Any]:
        """A fault of logd's while answering: counted, logged on one line (no traceback: a
        client repeating the request would repeat it), answered."""
        self.errors += 1
        error = f"{type(e).__name__}: {e}"
        self.ratelog.error(f"{cmd}:{type(e).__name__}", "control command failed", cmd=cmd,
                           error=error)
        return {"ok": False, "error": f"internal error: {error}", "code": "internal"}

    async def _handle(self, req: dict[str, Any]) -> dict[str, Any]:
        cmd = req["cmd"]
        handler = self._commands.get(cmd)
        try:
            if handler is None:
                raise RequestError(f"unknown command {cmd!r}; expected one of "
                                   f"{', '.join(sorted([*self._commands, 'tail']))}")
            return {"ok": True, "result": await handler(req)}
        except RequestError as e:
            return self._refused(e, cmd if handler else "?")
        except Exception as e:
            return self._fault(e, cmd)

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
        return self.daemon.analyzer_pools()

    async def _analyzers(self, req: dict[str, Any]) -> Any:
        return {name: pool.analyzer_table() for name, pool in self._pools().items()}

    async def _set_weight(self, req: dict[str, Any]) -> Any:
        analyzer_id, weight = req.get("id"), req.get("weight")
        if not isinstance(analyzer_id, str) or isinstance(weight, bool) \
                or not isinstance(weight, (int, float)):
            raise RequestError('set_weight needs {"id": "...", "weight": number}')
        try:
            weight = check_weight(weight)
        except WeightError as e:
            raise RequestError(f"set_weight: {e}") from None
        for pool in self._pools().values():
            a = pool.analyzers.get(analyzer_id)
            if a is not None and a.weight is not None:
                pool.set_weight(analyzer_id, weight)
                return {"id": analyzer_id, "weight": weight}
        raise RequestError(f"no analyzer {analyzer_id!r}; see logctl analyzers", "not_found")


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
