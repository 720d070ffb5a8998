"""One reading of a record: the same JSON over TCP lines, TCP frames and HTTP meets the same
route decision, lands in the same file, and has the same values in ClickHouse, PostgreSQL
and Kafka."""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from testkit.clickhouse import ClickHouseDatabase
from testkit.harness import LogdProcess, read_all_lines
from testkit.kafka import KafkaTopic
from testkit.postgres import PostgresDatabase
from testkit.wire import frame

pytestmark = pytest.mark.timeout(180)

# (record, the severity byte a frame carries for it, routed?)
RECORDS: list[tuple[dict[str, Any], int, bool]] = [
    # app is app_id (billing), not app: not routed, though `app` says web
    ({"app": "web", "app_id": "billing", "level": "fatal", "message": "a", "source": "s"},
     2, False),
    # below error: not routed
    ({"app_id": "web", "level": "WARNING", "message": "b", "source": "s"}, 4, False),
    # routed: level kept as sent, time from the record, the rest into metadata
    ({"app": "web", "level": "fatal", "message": "c", "source": "api",
      "timestamp": "2026-11-23T10:00:00Z", "metadata": {"k": 1}, "extra": 2}, 2, True),
    # routed: `severity` stands in for a missing level; no source: the listener's name
    ({"app_id": "web", "severity": "err", "message": "d"}, 3, True),
]
LISTENERS = ("http", "lines", "frames")


def test_every_listener_and_output_reads_a_record_the_same_way(
        tmp_path: Path, clickhouse: ClickHouseDatabase, postgres: PostgresDatabase,
        kafka: KafkaTopic) -> None:
    ch, pg = clickhouse, postgres
    out = tmp_path / "out"
    out.mkdir()
    config = f"""
[daemon]
state_dir = "{out}/state"
control_socket = "{out}/control.sock"
stats_interval = "0s"

[listeners.http]
type = "http"
address = "127.0.0.1:0"

[listeners.lines]
type = "tcp"
address = "127.0.0.1:0"
framing = "lines"

[listeners.frames]
type = "tcp"
address = "127.0.0.1:0"

[outputs.files]
type = "file"
path = "{out}/{{app}}.log"

[outputs.ch]
type = "clickhouse"
url = "{ch.url}"
batch_timeout = "100ms"

[outputs.pg]
type = "postgres"
dsn = "{pg.dsn}"
batch_timeout = "100ms"

[outputs.kafka]
type = "kafka"
brokers = ["{kafka.bootstrap}"]
topic = "{kafka.topic}"
format = "json"
batch_timeout = "50ms"

[routes.web_errors]
match = 'app == "web" && level >= error'
to = ["files", "ch", "pg", "kafka"]
"""
    p = LogdProcess(config, tmp_path).start()
    try:
        sent = {name: [dict(r, message=f"{r['message']} via {name}") for r, _, _ in RECORDS]
                for name in LISTENERS}
        req = urllib.request.Request(f"http://127.0.0.1:{p.port('http')}/v1/logs",
                                     data=json.dumps(sent["http"]).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 202
        with socket.create_connection(("127.0.0.1", p.port("lines"))) as s:
            s.sendall(b"".join(json.dumps(r).encode() + b"\n" for r in sent["lines"]))
        with socket.create_connection(("127.0.0.1", p.port("frames"))) as s:
            s.sendall(b"".join(frame(json.dumps(r).encode(), sev)
                               for r, (_, sev, _) in zip(sent["frames"], RECORDS, strict=True)))
    finally:
        assert p.stop() == 0
    routed = [r["message"] for name in LISTENERS
              for r, (_, _, yes) in zip(sent[name], RECORDS, strict=True) if yes]

    # The route decision and the file name: only web's errors, in web.log.
    in_file = [json.loads(line)["message"] for line in read_all_lines(out, "web.log")]
    assert sorted(in_file) == sorted(routed)
    assert sorted(f.name for f in out.glob("*.log")) == ["web.log"]
    assert p.listener_stats("lines")["records"] == len(RECORDS)

    def expected(message: str) -> tuple[str, str, str, str]:
        record, listener = _by_message(sent, message)
        source = record.get("source", listener)
        return "web", record.get("level", record.get("severity")), message, source

    want = sorted(expected(m) for m in routed)
    got_ch = [json.loads(line) for line in ch.query(
        "SELECT app_id, level, message, source, toString(created_at) AS t, metadata "
        "FROM logs FORMAT JSONEachRow").splitlines()]
    assert sorted((r["app_id"], r["level"], r["message"], r["source"]) for r in got_ch) == want
    got_pg = [line.split("|") for line in pg.query(
        "SELECT app_id, level, message, source, "
        "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), metadata::text "
        "FROM logs").splitlines()]
    assert sorted(tuple(r[:4]) for r in got_pg) == want
    got_kafka = [json.loads(v) for _, _, v in kafka.consume(len(routed))]
    assert sorted((v["app_id"], v["level"], v["message"], v["source"])
                  for v in got_kafka) == want

    # Time and metadata agree too, for the record that carries them.
    for name in LISTENERS:
        message = f"c via {name}"
        [row_ch] = [r for r in got_ch if r["message"] == message]
        [row_pg] = [r for r in got_pg if r[2] == message]
        [value] = [v for v in got_kafka if v["message"] == message]
        assert row_ch["t"] == row_pg[4] == "2026-11-23 10:00:00"
        assert value["time"].startswith("2026-11-23T10:00:00")
        assert json.loads(row_ch["metadata"]) == json.loads(row_pg[5]) == \
            value["metadata"] == {"k": 1, "extra": 2}


def _by_message(sent: dict[str, list[dict[str, Any]]], message: str
                ) -> tuple[dict[str, Any], str]:
    for listener, records in sent.items():
        for r in records:
            if r["message"] == message:
                return r, listener
    raise AssertionError(message)

