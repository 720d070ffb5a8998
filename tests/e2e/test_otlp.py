"""OTLP/HTTP logs -> a real logd process -> a real ClickHouse and a file output, field by
field; the requests are built with the official protobuf classes."""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from testkit.clickhouse import ClickHouseDatabase
from testkit.configs import ingest_config
from testkit.harness import LOADGEN, REPO, LogdProcess, logctl, read_all_lines
from testkit.otlp import SPAN_ID, TRACE_ID, log_record, post, request, to_json

T0 = 1_795_426_800_250_000_000  # 2026-11-23 09:40:00.25 UTC


@pytest.fixture
def logd(tmp_path: Path, clickhouse: ClickHouseDatabase) -> Iterator[LogdProcess]:
    out = tmp_path / "out"
    out.mkdir()
    p = LogdProcess(ingest_config(out) + f"""
[outputs.clickhouse]
type = "clickhouse"
url = "{clickhouse.url}"
table = "logs"
batch_timeout = "100ms"
buffer = {{ max_bytes = "64MiB", when_full = "block" }}

[outputs.files]
type = "file"
path = "{out}/{{app}}.log"
flush_interval = "50ms"
""", tmp_path).start()
    p.out = out  # type: ignore[attr-defined]
    yield p
    if p.alive():
        p.stop(signal.SIGKILL)


def otlp_request(service: str) -> Any:
    return request(
        ({"service.name": service, "host.name": "web-1"},
         [({"name": "io.shop.payments", "version": "2.1.0"},
           [log_record("card declined", time_ns=T0, number=17, attributes={"order": 17},
                       trace_id=TRACE_ID, span_id=SPAN_ID, flags=1),
            log_record({"event": "retry"}, observed_ns=T0, text="Warning")])]))


def test_otlp_protobuf_and_json_arrive_in_clickhouse_and_files(
        logd: LogdProcess, clickhouse: ClickHouseDatabase) -> None:
    port = logd.port("http")
    status, _, body = post(port, gzip.compress(otlp_request("pb").SerializeToString()),
                           headers={"Content-Encoding": "gzip"})
    assert status == 200 and ExportLogsServiceResponse.FromString(body) == \
        ExportLogsServiceResponse()
    status, _, body = post(port, orjson.dumps(to_json(otlp_request("js"))), "application/json")
    assert (status, json.loads(body)) == (200, {})
    assert logd.stop() == 0
    got = [json.loads(line) for line in clickhouse.query(
        "SELECT app_id, level, message, source, toString(created_at) AS t, metadata "
        "FROM logs ORDER BY app_id, level FORMAT JSONEachRow").splitlines()]
    assert [(r["app_id"], r["level"], r["message"], r["source"], r["t"]) for r in got] == [
        (app, level, message, "http", "2026-11-23 09:40:00")
        for app in ("js", "pb")
        for level, message in (("Warning", '{"event":"retry"}'), ("error", "card declined"))]
    for r in got:
        md = json.loads(r["metadata"])
        assert md["resource"] == {"service.name": r["app_id"], "host.name": "web-1"}
        assert md["scope"] == {"name": "io.shop.payments", "version": "2.1.0"}
        if r["level"] == "error":
            assert (md["attributes"], md["trace_id"], md["span_id"], md["flags"],
                    md["severity_number"]) == ({"order": 17}, TRACE_ID.hex(), SPAN_ID.hex(),
                                               1, 17)
        else:
            assert set(md) == {"resource", "scope"}
    out = logd.out  # type: ignore[attr-defined]
    pb = [json.loads(line) for line in read_all_lines(out, "pb.log")]
    js = [json.loads(line) for line in read_all_lines(out, "js.log")]
    assert [r["message"] for r in pb] == ["card declined", '{"event":"retry"}']
    assert [{**r, "app_id": "x", "resource": None} for r in pb] == \
        [{**r, "app_id": "x", "resource": None} for r in js]
    assert pb[0]["timestamp"] == T0 / 1e9


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
def test_loadgen_otlp_arrives_whole(logd: LogdProcess, clickhouse: ClickHouseDatabase,
                                    encoding: str) -> None:
    """tools/loadgen --otlp: every log record is answered 200 and arrives once."""
    gen = subprocess.run(
        [sys.executable, str(LOADGEN), "--target",
         f"http://127.0.0.1:{logd.port('http')}/v1/logs", "--otlp", encoding, "--gzip",
         "--count", "3000", "--batch", "250", "--rate", "0", "--connections", "2",
         "--apps", "a:1,b:1", "--json"], cwd=REPO, capture_output=True, timeout=60)
    assert gen.returncode == 0, gen.stderr.decode()
    summary = json.loads(gen.stdout.decode().strip().splitlines()[-1])
    assert (summary["sent"], summary["errors"]) == (3000, 0)
    shown = logctl("--socket", str(logd.out / "control.sock"),  # type: ignore[attr-defined]
                   "listeners")
    assert "otlp 12 requests, 3,000 records, 0 rejected, 0 undecodable" in shown.stdout
    assert logd.stop() == 0
    assert logd.listener_stats("http")["otlp_records"] == 3000
    assert clickhouse.query("SELECT app_id, count() FROM logs GROUP BY app_id ORDER BY app_id "
                            "FORMAT TSV").split() == ["a", "1500", "b", "1500"]
    out = logd.out  # type: ignore[attr-defined]
    seqs = sorted((r["attributes"]["loadgen.seq"], r["resource"]["service.instance.id"])
                  for app in ("a", "b")
                  for r in map(json.loads, read_all_lines(out, f"{app}.log")))
    assert len(seqs) == len(set(seqs)) == 3000
