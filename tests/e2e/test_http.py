"""HTTP ingest: seed-001 clients, NDJSON, gzip, tokens, limits, busy, health."""

from __future__ import annotations

import gzip
import json
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testkit.harness import LogdProcess, read_all_lines


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
def start(tmp_path: Path) -> Iterator:
    started: list[LogdProcess] = []

    def run(**kw: Any) -> LogdProcess:
        out = tmp_path / "out"
        out.mkdir(exist_ok=True)
        p = LogdProcess(http_config(out, **kw), tmp_path).start()
        p.out = out  # type: ignore[attr-defined]
        started.append(p)
        return p

    yield run
    for p in started:
        if p.alive():
            p.stop(signal.SIGKILL)


def post(p: LogdProcess, body: bytes, path: str = "/api/logs",
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], Any]:
    req = urllib.request.Request(f"http://127.0.0.1:{p.port('http')}{path}", data=body,
                                 method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def get(p: LogdProcess, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{p.port('http')}{path}",
                                    timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


SEED_001_BATCH = [
    {"app_id": "payment-service", "level": "ERROR", "message": "card declined",
     "source": "api", "metadata": {"order": 17, "retry": True}},
    {"app_id": "auth-service", "level": "info", "message": "login ok", "source": "web"},
    {"app_id": "payment-service", "level": "warn", "message": "slow", "source": "api",
     "timestamp": "2026-11-23T10:00:00Z"},
]


def test_seed_001_array_is_accepted_and_written(start) -> None:
    p = start()
    status, _, body = post(p, json.dumps(SEED_001_BATCH).encode(),
                           headers={"Content-Type": "application/json"})
    assert (status, body) == (202, {"accepted": 3})
    assert p.stop() == 0
    payment = [json.loads(x) for x in read_all_lines(p.out, "payment-service.log")]
    assert payment == [SEED_001_BATCH[0], SEED_001_BATCH[2]]
    assert [json.loads(x) for x in read_all_lines(p.out, "auth-service.log")] == \
        [SEED_001_BATCH[1]]


def test_ndjson_gzip_and_single_object(start) -> None:
    p = start()
    nd = b'{"message": "one", "app": "nd"}\n\n{"message": "two", "app": "nd"}\n'
    assert post(p, nd, "/v1/logs", {"Content-Type": "application/x-ndjson"})[2] == \
        {"accepted": 2}
    gz = gzip.compress(json.dumps([{"message": "zipped", "app": "gz"}]).encode())
    assert post(p, gz, "/v1/logs", {"Content-Encoding": "gzip"})[2] == {"accepted": 1}
    assert post(p, b'{"message": "alone", "app": "one"}', "/v1/logs")[2] == {"accepted": 1}
    assert p.stop() == 0
    assert read_all_lines(p.out, "nd.log") == [b'{"message": "one", "app": "nd"}',
                                               b'{"message": "two", "app": "nd"}']
    assert len(read_all_lines(p.out, "gz.log")) == 1
    assert read_all_lines(p.out, "one.log") == [b'{"message": "alone", "app": "one"}']


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
def test_bad_requests_are_refused_whole_with_a_reason(start, body: bytes,
                                                      headers: dict[str, str], status: int,
                                                      error: str, where: str) -> None:
    p = start()
    got_status, _, got = post(p, body, headers=headers)
    assert got_status == status
    assert got["error"] == error and where in got["message"]
    assert p.stop() == 0
    assert not list(p.out.glob("*.log")), "nothing of a refused batch is written"


def test_tokens(start) -> None:
    p = start(extra_listener='tokens = ["s3cret", "other"]')
    body = b'{"message": "m", "app": "t"}'
    assert post(p, body)[0] == 401
    assert post(p, body, headers={"Authorization": "Bearer wrong"})[0] == 401
    assert post(p, body, headers={"Authorization": "Bearer other"})[0] == 202


def test_full_buffers_hold_the_request_then_answer_503_with_retry_after(start) -> None:
    p = start(destination="pool", extra_listener='full_wait = "700ms"')
    big = json.dumps([{"message": "x" * 100}] * 100).encode()
    assert post(p, big)[0] == 202  # taken whole; now the 4 KiB buffer is over its bound
    began = time.monotonic()
    status, headers, body = post(p, big)
    assert time.monotonic() - began >= 0.7, "answered before full_wait"
    assert status == 503 and body["error"] == "busy"
    assert int(headers["Retry-After"]) >= 1
    health_status, health = get(p, "/health")
    assert health_status == 503
    assert json.loads(health)["outputs"]["pool"]["ready"] is False


def test_health_and_metrics(start) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    p = start()
    post(p, json.dumps(SEED_001_BATCH).encode())
    status, body = get(p, "/health")
    assert status == 200
    assert json.loads(body)["outputs"]["files"]["ready"] is True
    status, text = get(p, "/metrics")
    assert status == 200
    names = {f.name for f in text_string_to_metric_families(text.decode())}
    assert "logd_listener_records" in names or "logd_listener_records_total" in names


def test_acknowledge_delivered_answers_once_every_destination_wrote_the_batch(
        tmp_path: Path) -> None:
    """acknowledge = "delivered": the 202 waits for the file output's flush and for an
    analyzer's ACK; it never comes before, and the file holds the records when it does."""
    import threading

    from testkit.analyzer_client import TestAnalyzer

    out = tmp_path / "out"
    out.mkdir()
    config = http_config(out, extra_listener='acknowledge = "delivered"').replace(
        'flush_interval = "50ms"', 'flush_interval = "30s"') + """
[listeners.pool]
type = "analyzer"
address = "127.0.0.1:0"
"""
    p = LogdProcess(config, tmp_path).start()
    try:
        answers: list[Any] = []
        body = json.dumps([{"message": f"m{i}", "app": "acked"} for i in range(50)]).encode()
        t = threading.Thread(target=lambda: answers.append(post(p, body)))
        t.start()
        t.join(1.5)
        assert not answers, "answered before an analyzer had the records"
        analyzer = TestAnalyzer(p.port("pool"), 1.0)
        try:
            t.join(10)
            assert answers and answers[0][0] == 202 and answers[0][2] == {"accepted": 50}
            assert analyzer.acked == 50
            # Flushed before the answer, though flush_interval is 30 s.
            assert len((out / "acked.log").read_bytes().splitlines()) == 50
        finally:
            analyzer.close()
    finally:
        assert p.stop() == 0
