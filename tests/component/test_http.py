"""HTTP ingest: seed-001 clients, NDJSON, gzip, tokens, limits, busy, health.

logd runs in the test's event loop (testkit.inprocess); the HTTP client is urllib, in a
thread, so requests are the bytes a plain client sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from testkit.analyzer_client import TestAnalyzer
from testkit.harness import read_all_lines
from testkit.inprocess import RunningDaemon, run_daemon

Start = Callable[..., Awaitable[RunningDaemon]]


def http_config(out: Path, extra_listener: str = "", destination: str = "files") -> str:
    cfg = f"""
[daemon]
state_dir = "{out}/state"
control_socket = "{out}/control.sock"
stats_interval = "0s"

[listeners.http]
type = "http"
address = "127.0.0.1:0"
max_body_bytes = "64KiB"
{extra_listener}
"""
    if destination == "files":
        cfg += f"""
[outputs.files]
type = "file"
path = "{out}/{{app}}.log"
flush_interval = "50ms"
"""
    else:  # an analyzer pool nobody reads: its small buffer fills and stays full
        cfg += """
[listeners.pool]
type = "analyzer"
address = "127.0.0.1:0"
buffer = { max_bytes = "4KiB", when_full = "block" }
"""
    return cfg


@pytest.fixture
async def start(tmp_path: Path, out: Path) -> AsyncIterator[Start]:
    """Starts logd on http_config(out, **kw); what is running at the end is stopped."""
    async with contextlib.AsyncExitStack() as running:
        async def run(**kw: Any) -> RunningDaemon:
            return await running.enter_async_context(
                run_daemon(http_config(out, **kw), tmp_path))

        yield run


def _post(port: int, body: bytes, path: str,
          headers: dict[str, str] | None) -> tuple[int, dict[str, Any], Any]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body,
                                 method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


async def post(d: RunningDaemon, body: bytes, path: str = "/api/logs",
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], Any]:
    return await asyncio.to_thread(_post, d.port("http"), body, path, headers)


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


async def get(d: RunningDaemon, path: str) -> tuple[int, bytes]:
    return await asyncio.to_thread(_get, d.port("http"), path)


SEED_001_BATCH = [
    {"app_id": "payment-service", "level": "ERROR", "message": "card declined",
     "source": "api", "metadata": {"order": 17, "retry": True}},
    {"app_id": "auth-service", "level": "info", "message": "login ok", "source": "web"},
    {"app_id": "payment-service", "level": "warn", "message": "slow", "source": "api",
     "timestamp": "2026-11-23T10:00:00Z"},
]


async def test_seed_001_array_is_accepted_and_written(start: Start, out: Path) -> None:
    d = await start()
    status, _, body = await post(d, json.dumps(SEED_001_BATCH).encode(),
                           headers={"Content-Type": "application/json"})
    assert (status, body) == (202, {"accepted": 3})
    assert await d.stop() == 0
    payment = [json.loads(x) for x in read_all_lines(out, "payment-service.log")]
    assert payment == [SEED_001_BATCH[0], SEED_001_BATCH[2]]
    assert [json.loads(x) for x in read_all_lines(out, "auth-service.log")] == \
        [SEED_001_BATCH[1]]


async def test_ndjson_gzip_and_single_object(start: Start, out: Path) -> None:
    d = await start()
    nd = b'{"message": "one", "app": "nd"}\n\n{"message": "two", "app": "nd"}\n'
    assert (await post(d, nd, "/v1/logs", {"Content-Type": "application/x-ndjson"}))[2] == \
        {"accepted": 2}
    gz = gzip.compress(json.dumps([{"message": "zipped", "app": "gz"}]).encode())
    assert (await post(d, gz, "/v1/logs", {"Content-Encoding": "gzip"}))[2] == {"accepted": 1}
    assert (await post(d, b'{"message": "alone", "app": "one"}', "/v1/logs"))[2] == {"accepted": 1}
    assert await d.stop() == 0
    assert read_all_lines(out, "nd.log") == [b'{"message": "one", "app": "nd"}',
                                               b'{"message": "two", "app": "nd"}']
    assert len(read_all_lines(out, "gz.log")) == 1
    assert read_all_lines(out, "one.log") == [b'{"message": "alone", "app": "one"}']


@pytest.mark.parametrize(("body", "headers", "status", "error", "where"), [
    (b"[{\"message\": 1}, {oops", {}, 400, "bad_json", "char"),
    (b'{"message": "a"}\n{"message": "b"}\n{nope\n', {"Content-Type": "application/x-ndjson"},
     400, "bad_json", "line 3"),
    (b'[{"message": "a"}, {"msg": "b"}]', {}, 422, "missing_message", "index 1"),
    (b'[{"message": "a", "level": "loud"}]', {}, 422, "bad_level", "index 0"),
    (b'[{"message": "a", "timestamp": "yesterday"}]', {}, 422, "bad_timestamp", "index 0"),
    (b'[1, 2]', {}, 400, "bad_record", "index 0"),
    (b"x" * 70_000, {}, 413, "too_large", "max_body_bytes"),
    (gzip.compress(b"[" + b" " * 200_000 + b"]"), {"Content-Encoding": "gzip"}, 413,
     "too_large", "max_body_bytes"),
])
async def test_bad_requests_are_refused_whole_with_a_reason(
        start: Start, out: Path, body: bytes, headers: dict[str, str], status: int,
        error: str, where: str) -> None:
    d = await start()
    got_status, _, got = await post(d, body, headers=headers)
    assert got_status == status
    assert got["error"] == error and where in got["message"]
    assert await d.stop() == 0
    assert not list(out.glob("*.log")), "nothing of a refused batch is written"


async def test_tokens(start: Start) -> None:
    d = await start(extra_listener='tokens = ["s3cret", "other"]')
    body = b'{"message": "m", "app": "t"}'
    assert (await post(d, body))[0] == 401
    assert (await post(d, body, headers={"Authorization": "Bearer wrong"}))[0] == 401
    assert (await post(d, body, headers={"Authorization": "Bearer other"}))[0] == 202


async def test_full_buffers_hold_the_request_then_answer_503_with_retry_after(
        start: Start) -> None:
    d = await start(destination="pool", extra_listener='full_wait = "700ms"')
    big = json.dumps([{"message": "x" * 100}] * 100).encode()
    assert (await post(d, big))[0] == 202  # taken whole; now the 4 KiB buffer is over its bound
    began = time.monotonic()
    status, headers, body = await post(d, big)
    assert time.monotonic() - began >= 0.7, "answered before full_wait"
    assert status == 503 and body["error"] == "busy"
    assert int(headers["Retry-After"]) >= 1
    health_status, health = await get(d, "/health")
    assert health_status == 503
    assert json.loads(health)["outputs"]["pool"]["ready"] is False


async def test_health_and_metrics(start: Start) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    d = await start()
    await post(d, json.dumps(SEED_001_BATCH).encode())
    status, body = await get(d, "/health")
    assert status == 200
    assert json.loads(body)["outputs"]["files"]["ready"] is True
    status, text = await get(d, "/metrics")
    assert status == 200
    names = {f.name for f in text_string_to_metric_families(text.decode())}
    assert "logd_listener_records" in names or "logd_listener_records_total" in names


async def test_acknowledge_delivered_answers_once_every_destination_wrote_the_batch(
        tmp_path: Path, out: Path) -> None:
    """acknowledge = "delivered": the 202 waits for the file output's flush and for an
    analyzer's ACK; it never comes before, and the file holds the records when it does."""
    config = http_config(out, extra_listener='acknowledge = "delivered"').replace(
        'flush_interval = "50ms"', 'flush_interval = "30s"') + """
[listeners.pool]
type = "analyzer"
address = "127.0.0.1:0"
"""
    async with run_daemon(config, tmp_path) as d:
        body = json.dumps([{"message": f"m{i}", "app": "acked"} for i in range(50)]).encode()
        answer = asyncio.ensure_future(post(d, body))
        await asyncio.wait([answer], timeout=1.5)
        assert not answer.done(), "answered before an analyzer had the records"
        analyzer = await asyncio.to_thread(TestAnalyzer, d.port("pool"), 1.0)
        try:
            status, _, accepted = await asyncio.wait_for(answer, 10)
            assert status == 202 and accepted == {"accepted": 50}
            # The answer came on the analyzer's ACK of all 50 it received.
            assert analyzer.count == 50
            # Flushed before the answer, though flush_interval is 30 s.
            assert len((out / "acked.log").read_bytes().splitlines()) == 50
        finally:
            await asyncio.to_thread(analyzer.close)
        assert await d.stop() == 0


ROUTED = """
[outputs.files]
type = "file"
path = "{out}/{{app}}.log"
flush_interval = "50ms"

[routes.to_pool]
match = 'app == "pooled"'
to = ["pool"]

[routes.to_files]
match = 'app != "pooled"'
to = ["files"]
"""


async def test_a_full_buffer_holds_only_the_requests_routed_to_it(
        start: Start, out: Path, tmp_path: Path) -> None:
    """The pool (nobody reads it) is full; a batch routed to the files only is taken at
    once, one routed to the pool waits and is refused."""
    d = await start(destination="pool", extra_listener='full_wait = "500ms"\n'
                    + ROUTED.format(out=out))
    big = json.dumps([{"message": "x" * 100, "app": "pooled"}] * 100).encode()
    assert (await post(d, big))[0] == 202  # the 4 KiB pool is over its bound now
    began = time.monotonic()
    assert (await post(d, b'[{"message": "elsewhere", "app": "web"}]'))[0] == 202
    assert time.monotonic() - began < 0.4, "held up by a buffer it is not routed to"
    assert (await post(d, big))[0] == 503
    assert await d.stop() in (0, 1)  # the pool has no analyzer: its records are undelivered
    assert read_all_lines(out, "web.log") == [b'{"message":"elsewhere","app":"web"}']


async def test_requests_held_for_room_end_within_the_shutdown_deadline(
        tmp_path: Path, out: Path) -> None:
    """A request held for room (full_wait 60 s) does not hold up a stop past
    shutdown_timeout (2 s)."""
    config = http_config(out, extra_listener='full_wait = "60s"', destination="pool") \
        .replace('stats_interval = "0s"', 'stats_interval = "0s"\nshutdown_timeout = "2s"')
    async with run_daemon(config, tmp_path) as d:
        big = json.dumps([{"message": "x" * 100}] * 100).encode()
        assert (await post(d, big))[0] == 202
        held = asyncio.ensure_future(post(d, big))
        listener = d.daemon.listeners["http"]
        for _ in range(200):  # until it holds the request (its body's bytes are counted)
            if listener.budget.used:
                break
            await asyncio.sleep(0.01)
        assert listener.budget.used and not held.done()
        began = time.monotonic()
        await d.stop()
        assert time.monotonic() - began < 6
        with contextlib.suppress(Exception):  # refused or cut: either way it did not wait
            await asyncio.wait_for(held, 10)
