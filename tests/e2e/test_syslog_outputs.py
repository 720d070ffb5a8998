"""Syslog -> logd -> real ClickHouse and PostgreSQL: the parsed fields beyond the standard
columns (host, facility, procid, msgid, sd) arrive in `metadata`. The databases' default
buffer is a disk spool, so the batches also pass through the spool's codec on the way."""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.clickhouse import ClickHouseDatabase
from testkit.harness import LogdProcess
from testkit.postgres import PostgresDatabase

pytestmark = pytest.mark.timeout(180)

MESSAGES = [
    b'<38>1 2026-11-23T10:00:00.250Z db1 sshd 4242 LOGIN [auth@32473 user="ann" '
    b'ok="no"] failed password',
    b"<78>Nov 23 10:00:01 web2 cron[77]: job started",
    b"no pri at all",
]


def config(out: Path, output: str, shutdown_timeout: str = "60s") -> str:
    return f"""
[daemon]
state_dir = "{out}/state"
control_socket = "{out}/control.sock"
stats_interval = "0s"
shutdown_timeout = "{shutdown_timeout}"

[listeners.syslog]
type = "syslog"
address = "127.0.0.1:0"

{output}
"""


@pytest.fixture
def run(tmp_path: Path) -> Iterator[list[LogdProcess]]:
    started: list[LogdProcess] = []
    yield started
    for p in started:
        if p.alive():
            p.stop(signal.SIGKILL)


def send_and_stop(tmp_path: Path, output: str, started: list[LogdProcess]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    logd = LogdProcess(config(out, output), tmp_path).start()
    started.append(logd)
    with socket.create_connection(("127.0.0.1", logd.port("syslog"))) as s:
        s.sendall(b"\n".join(MESSAGES) + b"\n")
        s.shutdown(socket.SHUT_WR)
        s.recv(1)  # logd closes once it has read everything
    assert logd.stop() == 0  # a stop writes every buffer out


def check(rows: list[tuple[str, str, str, str]]) -> None:
    assert len(rows) == len(MESSAGES)
    by_app = {r[0]: r for r in rows}
    assert set(by_app) == {"sshd", "cron", "syslog"}
    _, level, message, metadata = by_app["sshd"]
    assert (level, message) == ("info", "failed password")
    assert json.loads(metadata) == {"host": "db1", "facility": "auth", "procid": "4242",
                                    "msgid": "LOGIN",
                                    "sd": {"auth@32473": {"user": "ann", "ok": "no"}}}
    _, level, message, metadata = by_app["cron"]
    assert (level, message) == ("info", "job started")
    assert json.loads(metadata) == {"host": "web2", "facility": "cron", "procid": "77"}
    _, level, message, metadata = by_app["syslog"]
    assert (level, message, json.loads(metadata)) == ("info", "no pri at all", {})


def test_clickhouse_gets_syslog_fields_in_metadata(tmp_path: Path, run: list[LogdProcess],
                                                  clickhouse: ClickHouseDatabase) -> None:
    send_and_stop(tmp_path, f"""
[outputs.clickhouse]
type = "clickhouse"
url = "{clickhouse.url}"
table = "logs"
batch_timeout = "100ms"
""", run)
    text = clickhouse.query("SELECT app_id, level, message, metadata, toString(created_at) "
                            "AS t FROM logs FORMAT JSONEachRow")
    got = [json.loads(line) for line in text.splitlines() if line]
    check([(r["app_id"], r["level"], r["message"], r["metadata"]) for r in got])
    assert {r["app_id"]: r["t"] for r in got}["sshd"] == "2026-11-23 10:00:00"


def test_postgres_gets_syslog_fields_in_metadata(tmp_path: Path, run: list[LogdProcess],
                                                postgres: PostgresDatabase) -> None:
    send_and_stop(tmp_path, f"""
[outputs.pg]
type = "postgres"
dsn = "{postgres.dsn}"
batch_timeout = "100ms"
""", run)
    text = postgres.query("SELECT json_build_array(app_id, level, message, metadata::text) "
                          "FROM logs")
    check([tuple(json.loads(line)) for line in text.splitlines() if line.strip()])


def test_spooled_syslog_batches_keep_their_fields_across_a_restart(
        tmp_path: Path, run: list[LogdProcess], clickhouse: ClickHouseDatabase) -> None:
    """ClickHouse unreachable: the batches wait in the disk spool, logd stops with them
    there; the next logd, with ClickHouse reachable, sends them with their fields."""
    from testkit.syslog import free_udp_port

    unreachable = clickhouse.url.replace(f":{clickhouse.server.tcp_port}/",
                                         f":{free_udp_port()}/")
    assert unreachable != clickhouse.url
    out = tmp_path / "out"
    out.mkdir()

    def output(url: str) -> str:
        return f"""
[outputs.clickhouse]
type = "clickhouse"
url = "{url}"
table = "logs"
batch_timeout = "100ms"
retry_max = "1s"
"""

    # What cannot be sent by the stop's deadline stays in the spool.
    first = LogdProcess(config(out, output(unreachable), "2s"), tmp_path).start()
    run.append(first)
    with socket.create_connection(("127.0.0.1", first.port("syslog"))) as s:
        s.sendall(b"\n".join(MESSAGES) + b"\n")
    first.wait_for(lambda e: e.get("msg") == "cannot connect to ClickHouse; retrying",
                   timeout=60)
    assert first.stop() == 0
    assert first.entries("listener stats")[-1]["records"] == len(MESSAGES)

    second = LogdProcess(config(out, output(clickhouse.url)), tmp_path).start()
    run.append(second)
    assert second.stop() == 0  # a stop writes the spool out
    text = clickhouse.query("SELECT app_id, level, message, metadata FROM logs "
                            "FORMAT JSONEachRow")
    got = [json.loads(line) for line in text.splitlines() if line]
    check([(r["app_id"], r["level"], r["message"], r["metadata"]) for r in got])
