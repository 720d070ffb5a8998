"""OTLP/HTTP logs on the HTTP listener: both encodings, gzip, partial success, every error
answer, the counters, and logd's own JSON beside it on /v1/logs.

logd runs in the test's event loop (testkit.inprocess), writing raw records (each one's JSON)
to files; requests are built with the official protobuf classes and sent by urllib in a
thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from testkit.harness import read_all_lines
from testkit.inprocess import RunningDaemon, run_daemon
from testkit.otlp import SPAN_ID, TRACE_ID, log_record, request, to_json
from testkit.otlp import post as otlp_post
from tests.component.test_http import http_config

Start = Callable[..., Awaitable[RunningDaemon]]
T0 = 1_764_000_000_500_000_000


@pytest.fixture
async def start(tmp_path: Path, out: Path) -> AsyncIterator[Start]:
    async with contextlib.AsyncExitStack() as running:
        async def run(**kw: Any) -> RunningDaemon:
            return await running.enter_async_context(
                run_daemon(http_config(out, **kw), tmp_path))

        yield run


async def post(d: RunningDaemon, body: bytes, content_type: str = "application/x-protobuf",
               headers: dict[str, str] | None = None, path: str = "/v1/logs"
               ) -> tuple[int, dict[str, str], bytes]:
    return await asyncio.to_thread(otlp_post, d.port("http"), body, content_type, headers,
                                   path)


def sample_request() -> Any:
    return request(
        ({"service.name": "checkout", "deployment.environment": "prod"},
         [({"name": "io.shop.payments", "version": "2.1.0"},
           [log_record("card declined", time_ns=T0, number=17,
                       attributes={"order": 17, "user": "u-9"}, trace_id=TRACE_ID,
                       span_id=SPAN_ID, flags=1),
            log_record({"event": "retry", "attempt": 2}, observed_ns=T0, text="WARN")])]),
        ({"service.name": "auth"}, [(None, [log_record("login ok", number=9)])]))


EXPECTED = {
    "checkout": [
        {"app_id": "checkout", "level": "error", "message": "card declined",
         "timestamp": T0 / 1e9,
         "resource": {"service.name": "checkout", "deployment.environment": "prod"},
         "scope": {"name": "io.shop.payments", "version": "2.1.0"},
         "attributes": {"order": 17, "user": "u-9"}, "trace_id": TRACE_ID.hex(),
         "span_id": SPAN_ID.hex(), "flags": 1, "severity_number": 17},
        {"app_id": "checkout", "level": "WARN", "message": '{"event":"retry","attempt":2}',
         "timestamp": T0 / 1e9,
         "resource": {"service.name": "checkout", "deployment.environment": "prod"},
         "scope": {"name": "io.shop.payments", "version": "2.1.0"}},
    ],
    "auth": [{"app_id": "auth", "level": "info", "message": "login ok",
              "resource": {"service.name": "auth"}, "severity_number": 9}],
}


def written(out: Path, app: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in read_all_lines(out, f"{app}.log")]


async def test_protobuf_request_is_answered_200_and_written_field_by_field(
        start: Start, out: Path) -> None:
    d = await start()
    status, headers, body = await post(d, sample_request().SerializeToString())
    assert status == 200
    assert headers["Content-Type"] == "application/x-protobuf"
    answer = ExportLogsServiceResponse.FromString(body)
    assert not answer.HasField("partial_success")
    http = d.stats()["listeners"]["http"]
    assert (http["otlp_requests"], http["otlp_records"], http["otlp_rejected_records"],
            http["otlp_decode_errors"]) == (1, 3, 0, 0)
    assert await d.stop() == 0
    assert written(out, "checkout") == EXPECTED["checkout"]
    assert written(out, "auth") == EXPECTED["auth"]


async def test_json_and_gzip_give_the_same_records(start: Start, out: Path) -> None:
    d = await start()
    doc = orjson.dumps(to_json(sample_request()))
    status, headers, body = await post(d, doc, "application/json")
    assert (status, headers["Content-Type"], json.loads(body)) == (200, "application/json", {})
    status, _, body = await post(d, gzip.compress(sample_request().SerializeToString()),
                                 headers={"Content-Encoding": "gzip"})
    assert status == 200 and ExportLogsServiceResponse.FromString(body) == \
        ExportLogsServiceResponse()
    status, _, body = await post(d, gzip.compress(doc), "application/json",
                                 headers={"Content-Encoding": "gzip"})
    assert (status, json.loads(body)) == (200, {})
    assert d.stats()["listeners"]["http"]["otlp_records"] == 9
    assert await d.stop() == 0
    assert written(out, "checkout") == EXPECTED["checkout"] * 3
    assert written(out, "auth") == EXPECTED["auth"] * 3


async def test_invalid_records_are_rejected_alone_as_partial_success(
        start: Start, out: Path) -> None:
    d = await start()
    req = request(({"service.name": "p"}, [(None, [
        log_record("kept"), log_record("bad trace", trace_id=b"\x01" * 3),
        log_record("kept too")])]))
    status, _, body = await post(d, req.SerializeToString())
    assert status == 200
    partial = ExportLogsServiceResponse.FromString(body).partial_success
    assert partial.rejected_log_records == 1
    assert "log_records[1]" in partial.error_message and "trace_id" in partial.error_message
    doc = to_json(req)
    doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"][1]["traceId"] = "xyz"
    status, _, body = await post(d, orjson.dumps(doc), "application/json")
    answer = json.loads(body)
    assert status == 200 and answer["partialSuccess"]["rejectedLogRecords"] == "1"
    assert "not hex" in answer["partialSuccess"]["errorMessage"]
    http = d.stats()["listeners"]["http"]
    assert (http["otlp_records"], http["otlp_rejected_records"]) == (4, 2)
    assert await d.stop() == 0
    assert [r["message"] for r in written(out, "p")] == ["kept", "kept too"] * 2


async def test_hostile_json_integers_reject_their_record_not_the_request(
        start: Start, out: Path) -> None:
    d = await start()
    req = request(({"service.name": "p"}, [(None, [
        log_record("kept"), log_record("minus minus"), log_record("long time"),
        log_record("long flags"), log_record("arabic digit"), log_record("kept too")])]))
    doc = to_json(req)
    recs = doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    recs[1]["attributes"] = [{"key": "n", "value": {"intValue": "--5"}}]
    recs[2]["timeUnixNano"] = "1" * 4301  # past int()'s limit of 4300 digits
    recs[3]["flags"] = "9" * 5000
    recs[4]["body"] = {"intValue": "\u0663"}
    status, headers, body = await post(d, orjson.dumps(doc), "application/json")
    assert status == 200, body
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body)["partialSuccess"]["rejectedLogRecords"] == "4"
    http = d.stats()["listeners"]["http"]
    assert (http["otlp_records"], http["otlp_rejected_records"]) == (2, 4)
    assert await d.stop() == 0
    assert [r["message"] for r in written(out, "p")] == ["kept", "kept too"]


async def test_a_record_string_that_is_not_utf8_rejects_that_record_alone(
        start: Start, out: Path) -> None:
    d = await start()
    bad_text, bad_event = log_record("bad text", text="TEXT"), log_record("bad event")
    bad_event.event_name = "EVNT"
    req = request(({"service.name": "p"}, [(None, [
        log_record("kept", text="Info"), bad_text, bad_event, log_record("kept too")])]))
    data = req.SerializeToString()
    data = data.replace(b"TEXT", b"T\xc3(T").replace(b"EVNT", b"E\xffNT")
    status, _, body = await post(d, data)
    assert status == 200, body
    partial = ExportLogsServiceResponse.FromString(body).partial_success
    assert partial.rejected_log_records == 2
    assert "log_records[1]" in partial.error_message and "UTF-8" in partial.error_message
    assert await d.stop() == 0
    assert [r["message"] for r in written(out, "p")] == ["kept", "kept too"]


async def test_an_unforeseen_error_decoding_a_request_is_a_counted_400_status(
        start: Start, monkeypatch: pytest.MonkeyPatch) -> None:
    import logd.listeners.http as http_listener

    def failing(body: bytes) -> Any:
        raise ValueError("unforeseen")

    monkeypatch.setattr(http_listener, "decode_protobuf", failing)
    d = await start()
    status, headers, body = await post(d, sample_request().SerializeToString())
    assert status == 400 and headers["Content-Type"] == "application/x-protobuf"
    code, message = status_of("application/x-protobuf", body)
    assert code == 3 and "ValueError: unforeseen" in message
    assert d.stats()["listeners"]["http"]["otlp_decode_errors"] == 1


async def test_a_request_of_only_rejected_records_takes_nothing(start: Start,
                                                               out: Path) -> None:
    d = await start()
    req = request(({}, [(None, [log_record(span_id=b"\x00")])]))
    status, _, body = await post(d, req.SerializeToString())
    assert status == 200
    assert ExportLogsServiceResponse.FromString(body).partial_success.rejected_log_records == 1
    status, _, body = await post(d, b"")  # an empty request is a valid one
    assert (status, body) == (200, b"")
    assert await d.stop() == 0
    assert not list(out.glob("*.log"))


def status_of(content_type: str, body: bytes) -> tuple[int, str]:
    if content_type == "application/json":
        doc = json.loads(body)
        return doc["code"], doc["message"]
    s = Status.FromString(body)
    return s.code, s.message


@pytest.mark.parametrize(("body", "content_type", "headers", "status", "code", "why"), [
    (b"\x0a\xff\xff\xff\x0f", "application/x-protobuf", {}, 400, 3, "bad_otlp"),
    (b'{"resourceLogs": {}}', "application/json", {}, 400, 3, "expected an array"),
    (b"\x1f\x8bnot gzip", "application/x-protobuf", {"Content-Encoding": "gzip"}, 400, 3,
     "gzip"),
    (b"\x0a" * 70_000, "application/x-protobuf", {}, 413, 8, "max_body_bytes"),
    (gzip.compress(b"\x00" * 200_000), "application/x-protobuf",
     {"Content-Encoding": "gzip"}, 413, 8, "max_body_bytes"),
    (b"<logs/>", "application/xml", {}, 415, 3, "application/x-protobuf"),
    (b"\x0a\x00", "application/protobuf", {}, 415, 3, "Content-Type"),
])
async def test_errors_carry_a_status_in_the_request_encoding(
        start: Start, out: Path, body: bytes, content_type: str, headers: dict[str, str],
        status: int, code: int, why: str) -> None:
    d = await start()
    got, got_headers, answer = await post(d, body, content_type, headers)
    assert got == status
    answer_type = got_headers["Content-Type"]
    assert answer_type == ("application/json" if content_type == "application/json"
                           else "application/x-protobuf")
    got_code, message = status_of(answer_type, answer)
    assert got_code == code and why in message, message
    if status == 400 and content_type != "application/xml" and "gzip" not in why:
        assert d.stats()["listeners"]["http"]["otlp_decode_errors"] == 1
    assert await d.stop() == 0
    assert not list(out.glob("*.log"))


async def test_tokens_apply_with_a_status_answer(start: Start) -> None:
    d = await start(extra_listener='tokens = ["s3cret"]')
    body = sample_request().SerializeToString()
    status, _, answer = await post(d, body)
    assert status == 401 and Status.FromString(answer).code == 16
    status, _, _ = await post(d, body, headers={"Authorization": "Bearer s3cret"})
    assert status == 200


async def _slow_body(port: int, content_type: str) -> tuple[int, dict[str, str], bytes]:
    """POST /v1/logs with a tenth of the body it announces: (status, headers, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: "
                     + content_type.encode() + b"\r\nContent-Length: 100\r\n\r\n"
                     + b"\x0a" * 10)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode().split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:] if line)
        body = await asyncio.wait_for(reader.readexactly(int(headers["Content-Length"])), 10)
        return int(lines[0].split()[1]), headers, body
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_a_body_too_slow_answers_408_with_a_status_for_protobuf(start: Start) -> None:
    d = await start(extra_listener='body_timeout = "200ms"')
    status, headers, body = await _slow_body(d.port("http"), "application/x-protobuf")
    assert status == 408 and headers["Content-Type"] == "application/x-protobuf"
    code, message = status_of("application/x-protobuf", body)
    assert code == 4 and "body_timeout" in message
    # application/json: OTLP or logd's own cannot be told before the body is read.
    status, headers, body = await _slow_body(d.port("http"), "application/json")
    assert status == 408 and json.loads(body)["error"] == "body_timeout"


async def test_a_failure_inside_logd_answers_500_in_the_request_encoding(
        start: Start, out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import logd.listeners.http as http_listener

    async def failing(*args: Any) -> Any:
        raise RuntimeError("unforeseen")

    monkeypatch.setattr(http_listener.HttpListener, "_hand_over", failing)
    d = await start()
    status, headers, body = await post(d, sample_request().SerializeToString())
    assert status == 500 and headers["Content-Type"] == "application/x-protobuf"
    code, message = status_of("application/x-protobuf", body)
    assert code == 13 and "internal" in message
    status, headers, body = await post(d, orjson.dumps(to_json(sample_request())),
                                       "application/json")
    assert status == 500 and status_of("application/json", body)[0] == 13
    status, headers, body = await post(d, b'{"message": "own"}', "application/json")
    assert status == 500 and json.loads(body)["error"] == "internal"
    assert d.stats()["listeners"]["http"]["errors"] == {"internal": 3}


async def test_full_buffers_answer_503_with_retry_after_and_a_status(start: Start) -> None:
    d = await start(destination="pool", extra_listener='full_wait = "300ms"')
    big = request(({}, [(None, [log_record("x" * 100) for _ in range(100)])]))
    body = big.SerializeToString()
    assert (await post(d, body))[0] == 200  # taken whole; the 4 KiB buffer is now over
    status, headers, answer = await post(d, body)
    assert status == 503 and headers["Retry-After"] == "1"
    code, message = status_of("application/x-protobuf", answer)
    assert code == 14 and "busy" in message
    status, headers, answer = await post(d, orjson.dumps(to_json(big)), "application/json")
    assert status == 503 and headers["Retry-After"] == "1"
    assert status_of("application/json", answer)[0] == 14


async def test_drops_of_a_drop_newest_destination_are_reported_as_rejected(
        tmp_path: Path, out: Path) -> None:
    config = http_config(out, destination="pool").replace('when_full = "block"',
                                                          'when_full = "drop_newest"')
    big = request(({}, [(None, [log_record("x" * 100) for _ in range(100)])]))
    async with run_daemon(config, tmp_path) as d:
        answers = [ExportLogsServiceResponse.FromString((await post(
            d, big.SerializeToString()))[2]).partial_success for _ in range(2)]
    # Nobody reads the pool: the 4 KiB buffer cannot hold the second request at least.
    assert answers[1].rejected_log_records == 100
    assert "dropped by a full destination" in answers[1].error_message


async def test_logd_json_still_works_beside_otlp(start: Start, out: Path) -> None:
    d = await start()
    one = b'{"message": "own", "app": "mine"}'
    arr = b'[{"message": "arr", "app": "mine"}]'
    nd = b'{"message": "nd", "app": "mine"}\n'
    for body, ctype, path in [(one, "application/json", "/v1/logs"),
                              (arr, "application/json", "/v1/logs"),
                              (nd, "application/x-ndjson", "/v1/logs"),
                              (one, "application/x-www-form-urlencoded", "/v1/logs"),
                              (one, "application/json", "/api/logs"),
                              (one, "text/plain", "/api/logs")]:
        status, _, answer = await post(d, body, ctype, path=path)
        assert (status, json.loads(answer)) == (202, {"accepted": 1}), (ctype, path)
    # logd's own errors keep logd's own answers
    status, _, answer = await post(d, b'{"msg": "no message"}', "application/json")
    assert status == 422 and json.loads(answer)["error"] == "missing_message"
    # /api/logs is seed 001's: OTLP is for /v1/logs only
    status, _, answer = await post(d, orjson.dumps(to_json(sample_request())),
                                   "application/json", path="/api/logs")
    assert status == 422 and json.loads(answer)["error"] == "missing_message"
    assert d.stats()["listeners"]["http"]["otlp_requests"] == 0
    assert await d.stop() == 0
    assert [r["message"] for r in written(out, "mine")] == ["own", "arr", "nd", "own",
                                                             "own", "own"]


async def test_metrics_count_otlp_per_listener(start: Start) -> None:
    d = await start()
    await post(d, sample_request().SerializeToString())
    await post(d, b"\x0a\xff", "application/x-protobuf")
    text = (await asyncio.to_thread(_get_metrics, d.port("http"))).decode()
    assert 'logd_listener_otlp_requests_total{listener="http"} 2' in text
    assert 'logd_listener_otlp_records_total{listener="http"} 3' in text
    assert 'logd_listener_otlp_decode_errors_total{listener="http"} 1' in text
    assert 'logd_listener_otlp_rejected_records_total{listener="http"} 0' in text


def _get_metrics(port: int) -> bytes:
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read()


async def test_too_many_bodies_at_once_answer_429_with_retry_after(start: Start) -> None:
    d = await start(extra_listener='full_wait = "300ms"\nmax_inflight_bytes = "1KiB"')
    port = d.port("http")
    # A client that sends half its body holds the whole byte budget meanwhile.
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                 b"Content-Length: 4096\r\n\r\n" + b"\x0a" * 100)
    await writer.drain()
    try:
        while d.stats()["listeners"]["http"]["inflight_bytes"] == 0:
            await asyncio.sleep(0.01)  # the slow request has taken the budget
        status, headers, answer = await post(d, sample_request().SerializeToString())
        assert status == 429 and headers["Retry-After"] == "1"
        code, message = status_of("application/x-protobuf", answer)
        assert code == 8 and "too many request bodies" in message
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
