"""The control socket answers every request line, and logs only logd's own faults, once each.

ControlServer runs in-process on a real unix socket; the daemon it serves is a stand-in with
the interface the commands use (router, listeners, stats(), reload()).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

import logd.control.server as server_module
from logd.control.server import MAX_REQUEST, ControlServer
from logd.record import Batch
from logd.router import Router


class Analyzer:
    def __init__(self, weight: float | None) -> None:
        self.weight = weight


class Pool:
    """An analyzer listener as the control commands see it."""

    def __init__(self) -> None:
        self.analyzers = {"a1": Analyzer(1.0), "new": Analyzer(None)}

    def set_weight(self, analyzer_id: str, w: float) -> None:
        self.analyzers[analyzer_id].weight = w

    def analyzer_table(self) -> list[dict[str, Any]]:
        return [{"id": k, "weight": a.weight} for k, a in self.analyzers.items()]


class StandIn:
    def __init__(self) -> None:
        self.router = Router({}, {})
        self.listeners: dict[str, Any] = {"pool": Pool()}
        self.fail_stats: Exception | None = None
        self.stats_result: dict[Any, Any] | None = None

    def stats(self) -> dict[Any, Any]:
        if self.fail_stats is not None:
            raise self.fail_stats
        if self.stats_result is not None:
            return self.stats_result
        return {"process": {"pid": 1}, "daemon": {"reloads": 0}, "listeners": {},
                "outputs": {}, "router": {"unrouted": 0}}

    async def reload(self) -> dict[str, Any]:
        return {"applied": True, "changes": [], "problems": []}

    def analyzer_pools(self) -> dict[str, Any]:
        return self.listeners


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, line: bytes) -> None:
        self.writer.write(line + b"\n")
        await self.writer.drain()

    async def reply(self) -> dict[str, Any]:
        line = await asyncio.wait_for(self.reader.readline(), 10)
        assert line.endswith(b"\n"), line
        return orjson.loads(line)

    async def ask(self, request: Any) -> dict[str, Any]:
        await self.send(request if isinstance(request, bytes) else orjson.dumps(request))
        return await self.reply()

    async def closed(self) -> bool:
        return await asyncio.wait_for(self.reader.read(1), 10) == b""


CLIENTS: list[Client] = []


@pytest.fixture
async def control(tmp_path: Path) -> AsyncIterator[tuple[ControlServer, StandIn]]:
    daemon = StandIn()
    server = ControlServer(daemon, str(tmp_path / "c.sock"))  # type: ignore[arg-type]
    await server.start()
    yield server, daemon
    while CLIENTS:
        writer = CLIENTS.pop().writer
        writer.close()
        await writer.wait_closed()
    await server.close()
    await asyncio.sleep(0)  # the server's side of each connection sees EOF and closes


async def connect(server: ControlServer) -> Client:
    reader, writer = await asyncio.open_unix_connection(server.path, limit=4 * MAX_REQUEST)
    client = Client(reader, writer)
    CLIENTS.append(client)
    return client


def control_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "logd.control" and r.levelno >= logging.INFO
            and r.getMessage() != "control socket listening"]


async def test_malformed_requests_are_each_answered(
        control: tuple[ControlServer, StandIn], caplog: pytest.LogCaptureFixture) -> None:
    server, _ = control
    client = await connect(server)
    for line, error in [(b"\xff\xfe", "not JSON"), (b"{\"cmd\": \"st", "not JSON"),
                        (b"", "not JSON"), (b"[]", 'expected {"cmd"'),
                        (b'"stats"', 'expected {"cmd"'), (b"{}", 'expected {"cmd"'),
                        (b'{"cmd": 1}', 'expected {"cmd"'), (b'{"cmd": null}', 'expected'),
                        (b'{"cmd": "nope"}', "unknown command 'nope'"),
                        (b'{"cmd": "set_weight"}', "set_weight needs"),
                        (b'{"cmd": "tail", "filter": ["a"]}', "tail needs")]:
        reply = await client.ask(line)
        assert reply["ok"] is False and reply["code"] == "bad_request", line
        assert error in reply["error"], (line, reply)
        if b"tail" in line:
            assert await client.closed()  # a tail request ends the exchange either way
            client = await connect(server)
    assert (await client.ask({"cmd": "ping"}))["ok"] is True  # the connection goes on
    assert server.errors == 0 and control_lines(caplog) == []


async def test_a_request_over_the_limit_is_answered_and_the_connection_closed(
        control: tuple[ControlServer, StandIn]) -> None:
    server, _ = control
    client = await connect(server)
    client.writer.write(b'{"cmd": "ping", "pad": "' + b"x" * MAX_REQUEST + b'"}\n')
    reply = await client.reply()
    assert reply == {"ok": False, "error": f"bad request: over {MAX_REQUEST} bytes (a request "
                     "is one JSON line)", "code": "bad_request"}
    assert await client.closed()
    assert (await (await connect(server)).ask({"cmd": "ping"}))["ok"] is True


async def test_a_thousand_bad_set_weights_get_a_thousand_answers_and_no_log(
        control: tuple[ControlServer, StandIn], caplog: pytest.LogCaptureFixture) -> None:
    server, daemon = control
    client = await connect(server)
    bad = [{"cmd": "set_weight", "id": "a1", "weight": "heavy"},
           {"cmd": "set_weight", "id": 7, "weight": 1},
           {"cmd": "set_weight", "id": "a1", "weight": -1},
           {"cmd": "set_weight", "id": "a1", "weight": True},
           {"cmd": "set_weight", "id": "ghost", "weight": 1},
           {"cmd": "set_weight", "id": "new", "weight": 1}]  # no weight of its own yet
    # Pipelined, as a script in a loop sends them: every line gets its reply, in order.
    client.writer.write(b"".join(orjson.dumps(bad[i % len(bad)]) + b"\n" for i in range(1000)))
    replies = [await client.reply() for _ in range(1000)]
    codes = [r["code"] for r in replies]
    assert codes[:6] == ["bad_request"] * 4 + ["not_found"] * 2
    assert not any(r["ok"] for r in replies) and len(set(codes)) == 2
    assert "finite and >= 0" in replies[2]["error"]
    assert replies[4]["error"] == "no analyzer 'ghost'; see logctl analyzers"
    assert server.errors == 0 and control_lines(caplog) == []
    ok = await client.ask({"cmd": "set_weight", "id": "a1", "weight": 0.25})
    assert ok == {"ok": True, "result": {"id": "a1", "weight": 0.25}}
    assert daemon.listeners["pool"].analyzers["a1"].weight == 0.25


async def test_a_fault_is_answered_counted_and_logged_once_per_burst(
        control: tuple[ControlServer, StandIn], caplog: pytest.LogCaptureFixture) -> None:
    server, daemon = control
    daemon.fail_stats = RuntimeError("stats broke")
    client = await connect(server)
    for _ in range(200):
        reply = await client.ask({"cmd": "stats"})
        assert reply == {"ok": False, "error": "internal error: RuntimeError: stats broke",
                         "code": "internal"}
    assert server.errors == 200
    lines = control_lines(caplog)
    assert 1 <= len(lines) <= server.ratelog.throttle.burst
    assert all(r.exc_info is None and r.levelno == logging.ERROR for r in lines)
    assert lines[0].getMessage() == "control command failed"
    assert lines[0].error == "RuntimeError: stats broke"  # type: ignore[attr-defined]
    daemon.fail_stats = None
    assert (await client.ask({"cmd": "stats"}))["ok"] is True


async def test_a_result_json_cannot_hold_is_an_internal_error_answered(
        control: tuple[ControlServer, StandIn]) -> None:
    server, daemon = control
    daemon.stats_result = {"process": {}, "daemon": {}, 1: "a key that is no string"}
    client = await connect(server)
    reply = await client.ask({"cmd": "stats"})
    assert reply["ok"] is False and reply["code"] == "internal"
    assert reply["error"].startswith("internal error: ")
    assert server.errors == 1


async def test_tail_refuses_a_filter_nesting_5000_deep_in_one_line(
        control: tuple[ControlServer, StandIn], caplog: pytest.LogCaptureFixture) -> None:
    server, _ = control
    client = await connect(server)
    reply = await client.ask({"cmd": "tail", "filter": "(" * 5000 + "a" + ")" * 5000})
    assert reply == {"ok": False, "code": "bad_request", "error": "filter: expression nests "
                     "deeper than 64 levels at column 65", "column": 65}
    assert await client.closed()
    assert server.errors == 0 and control_lines(caplog) == []


async def test_tail_answers_when_compiling_its_filter_fails_in_any_way(
        control: tuple[ControlServer, StandIn], monkeypatch: pytest.MonkeyPatch) -> None:
    server, _ = control

    def broken(expression: str) -> Any:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(server_module, "compile_filter", broken)
    client = await connect(server)
    reply = await client.ask({"cmd": "tail", "filter": "a"})
    assert reply == {"ok": False, "code": "internal", "error": "internal error: "
                     "RecursionError: maximum recursion depth exceeded"}
    assert server.errors == 1


async def test_tail_streams_what_its_filter_matches(
        control: tuple[ControlServer, StandIn]) -> None:
    server, daemon = control
    client = await connect(server)
    reply = await client.ask({"cmd": "tail", "filter": "level >= warn"})
    assert reply == {"ok": True, "result": {"filter": "level >= warn"}}
    daemon.router.dispatch(Batch([b"disk full", b"fine"], bytes([3, 6]), "emitters", 1.5, 13))
    assert await client.reply() == {"time": 1.5, "source": "emitters", "level": "error",
                                    "payload": "disk full"}
    client.writer.close()
    for _ in range(100):  # the server notices the reader left and removes the tap
        if not daemon.router.taps:
            break
        await asyncio.sleep(0.01)
    assert daemon.router.taps == []
