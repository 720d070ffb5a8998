"""HTTP and TCP -> logd -> a real PostgreSQL server (Debian's binaries, see testkit.postgres)."""

from __future__ import annotations

import json
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from testkit.configs import ingest_config
from testkit.harness import REPO, LogdProcess
from testkit.harness import post_records as post
from testkit.postgres import PostgresDatabase
from testkit.wire import frame

pytestmark = pytest.mark.timeout(180)


def config(out: Path, pg: PostgresDatabase, buffer: str = '{ max_bytes = "64MiB" }') -> str:
    return ingest_config(out) + f"""
[outputs.pg]
type = "postgres"
dsn = "{pg.dsn}"
batch_rows = 2000
batch_timeout = "100ms"
retry_max = "1s"
buffer = {buffer}
"""


@pytest.fixture
def start_logd(tmp_path: Path) -> Iterator[Callable[[PostgresDatabase], LogdProcess]]:
    """Starts logd writing to a database; kills what is left at the end."""
    started: list[LogdProcess] = []

    def start(pg: PostgresDatabase) -> LogdProcess:
        out = tmp_path / "out"
        out.mkdir()
        p = LogdProcess(config(out, pg), tmp_path).start()
        p.out = out  # type: ignore[attr-defined]
        started.append(p)
        return p

    yield start
    for p in started:
        if p.alive():
            p.stop(signal.SIGKILL)


@pytest.fixture
def logd(start_logd: Callable[[PostgresDatabase], LogdProcess],
         postgres: PostgresDatabase) -> LogdProcess:
    return start_logd(postgres)


def wait_for_rows(pg: PostgresDatabase, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while pg.count() < n:
        assert time.monotonic() < deadline, f"{pg.count()} of {n} rows in PostgreSQL"
        time.sleep(0.2)  # polling PostgreSQL: no event to await from here


def test_records_arrive_with_their_fields(logd: LogdProcess, postgres: PostgresDatabase) -> None:
    post(logd, [
        {"app_id": "payment-service", "level": "ERROR", "message": "card declined",
         "source": "api", "metadata": {"order": 17}, "timestamp": "2026-11-23T10:00:00.250Z"},
        {"app": "auth-service", "level": "warning", "message": "nul \u0000 inside",
         "timestamp": 1795426800, "user": "u1\u0000"},
    ])
    with socket.create_connection(("127.0.0.1", logd.port("emitters"))) as s:
        s.sendall(frame(b"from tcp", 3))
    assert logd.stop() == 0
    got = postgres.query(
        "SELECT app_id, level, message, source, "
        "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS'), metadata::text "
        "FROM logs ORDER BY app_id").splitlines()
    rows = [line.split("|") for line in got]
    assert [r[:4] for r in rows] == [
        ["auth-service", "warning", "nul \ufffd inside", "http"],
        ["emitters", "error", "from tcp", "emitters"],
        ["payment-service", "ERROR", "card declined", "api"],
    ]
    assert rows[2][4] == "2026-11-23 10:00:00.250"
    assert rows[0][4] == "2026-11-23 09:40:00.000"
    assert json.loads(rows[2][5]) == {"order": 17}
    assert json.loads(rows[0][5]) == {"user": "u1\ufffd"}
    indexes = postgres.query("SELECT indexname FROM pg_indexes WHERE tablename = 'logs'")
    assert "logs_app_created_idx" in indexes and "logs_created_idx" in indexes


def failed_attempt(entry: dict[str, Any]) -> bool:
    """A log line of the PostgreSQL output failing to reach its server."""
    return entry.get("output") == "pg" and entry.get("msg") in (
        "insert failed; retrying", "cannot connect to PostgreSQL; retrying")


def test_postgres_down_under_load_loses_nothing(
        start_logd: Callable[[PostgresDatabase], LogdProcess],
        private_postgres: PostgresDatabase) -> None:
    """PostgreSQL stops while records arrive at 8,000/s and stays down until logd has
    failed to reach it five times (its backoff at retry_max): nothing is lost or doubled."""
    logd = start_logd(private_postgres)
    gen = subprocess.Popen(
        [sys.executable, "tools/loadgen", "--target",
         f"http://127.0.0.1:{logd.port('http')}/api/logs", "--rate", "8000", "--count",
         "48000", "--batch", "200", "--json"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_rows(private_postgres, 1, timeout=30)  # records flow before the outage
        private_postgres.server.stop()
        # The outage lasts until logd has noticed it and retried with backoff.
        logd.wait_for(failed_attempt, timeout=60, count=5)
        private_postgres.server.start()
        out, err = gen.communicate(120)
        assert gen.returncode == 0, err.decode()
    finally:
        if gen.poll() is None:
            gen.kill()
            gen.wait()
    sent = json.loads(out.decode().strip().splitlines()[-1])["sent"]
    assert sent >= 40_000
    assert logd.stop() == 0
    total, distinct = private_postgres.query(
        "SELECT count(*), count(DISTINCT metadata) FROM logs").split("|")
    assert int(total) == sent, "every accepted record is in PostgreSQL"
    assert int(distinct) == sent, "and none twice"
    assert logd.entries("insert failed; retrying") or logd.entries(
        "cannot connect to PostgreSQL; retrying")


def test_rows_postgres_refuses_go_to_the_dead_letter_file(
        logd: LogdProcess, postgres: PostgresDatabase) -> None:
    logd.wait_for(lambda e: e.get("msg") == "connected")
    postgres.query("ALTER TABLE logs ADD CONSTRAINT no_poison CHECK (message <> 'poison')")
    records = [{"app_id": "a", "message": f"fine {i}"} for i in range(100)]
    records[37] = {"app_id": "a", "message": "poison"}
    # too long for the (app_id, created_at) index: SQLSTATE 54000, about this row too
    records[60] = {"app_id": secrets.token_urlsafe(6000), "message": "long app"}
    post(logd, records)
    assert logd.stop() == 0
    assert postgres.query("SELECT count(*) FROM logs") == "98\n"
    dead = [json.loads(line) for line in
            (logd.out / "state" / "pg.dead-letter.ndjson").read_text().splitlines()]
    assert sorted(e["row"]["message"] for e in dead) == ["long app", "poison"]
    assert any("no_poison" in e["reason"] for e in dead)


def test_a_disk_spool_replays_into_postgres_after_kill_9(
        tmp_path: Path, private_postgres: PostgresDatabase) -> None:
    private_postgres.server.stop()
    out = tmp_path / "out"
    out.mkdir()
    cfg = config(out, private_postgres, buffer='{ type = "disk", max_bytes = "64MiB" }')
    first = LogdProcess(cfg, tmp_path).start()
    try:
        post(first, [{"message": f"m{i}"} for i in range(1000)])
    finally:
        first.stop(signal.SIGKILL)
    private_postgres.server.start()
    second = LogdProcess(cfg, tmp_path).start()
    wait_for_rows(private_postgres, 1000)
    assert second.stop() == 0
    assert private_postgres.query("SELECT count(DISTINCT message) FROM logs") == "1000\n"
