"""HTTP (and TCP) -> logd -> a real ClickHouse server (Debian's 18.16, see testkit.clickhouse)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from testkit.clickhouse import ClickHouseDatabase
from testkit.configs import ingest_config
from testkit.harness import REPO, LogdProcess, env_for_testkit, logctl
from testkit.harness import post_records as post
from testkit.wire import frame


def config(out: Path, ch: ClickHouseDatabase, batch_timeout: str = "200ms",
           buffer: str = '{ max_bytes = "256MiB", when_full = "block" }',
           shutdown_timeout: str = "60s") -> str:
    return ingest_config(out, shutdown_timeout) + f"""
[outputs.clickhouse]
type = "clickhouse"
url = "{ch.url}"
table = "logs"
batch_rows = 5000
batch_timeout = "{batch_timeout}"
retry_max = "1s"
buffer = {buffer}
"""


@pytest.fixture
def start_logd(tmp_path: Path) -> Iterator[Callable[[ClickHouseDatabase], LogdProcess]]:
    """Starts logd writing to a database (config's defaults); kills what is left at the end."""
    started: list[LogdProcess] = []

    def start(ch: ClickHouseDatabase) -> LogdProcess:
        out = tmp_path / "out"
        out.mkdir()
        p = LogdProcess(config(out, ch), tmp_path).start()
        p.out = out  # type: ignore[attr-defined]
        started.append(p)
        return p

    yield start
    for p in started:
        if p.alive():
            p.stop(signal.SIGKILL)


@pytest.fixture
def logd(start_logd: Callable[[ClickHouseDatabase], LogdProcess],
         clickhouse: ClickHouseDatabase) -> LogdProcess:
    return start_logd(clickhouse)


def rows(ch: ClickHouseDatabase, sql: str) -> list[dict[str, Any]]:
    text = ch.query(sql + " FORMAT JSONEachRow")
    return [json.loads(line) for line in text.splitlines() if line]


def test_posted_records_arrive_with_their_fields(logd: LogdProcess,
                                                 clickhouse: ClickHouseDatabase) -> None:
    batch = [
        {"app_id": "payment-service", "level": "ERROR", "message": "card declined",
         "source": "api", "metadata": {"order": 17}, "timestamp": "2026-11-23T10:00:00Z"},
        {"app": "auth-service", "level": "warning", "message": "slow login",
         "timestamp": 1795426800},
        {"app_id": "api-gateway", "message": "plain"},
    ]
    assert post(logd, batch) == {"accepted": 3}
    with socket.create_connection(("127.0.0.1", logd.port("emitters"))) as s:
        s.sendall(frame(b"from tcp", 3))
    assert logd.stop() == 0
    got = rows(clickhouse, "SELECT app_id, level, message, source, toString(created_at) AS t, "
               "metadata FROM logs ORDER BY app_id")
    assert [(r["app_id"], r["level"], r["message"], r["source"]) for r in got] == [
        ("api-gateway", "info", "plain", "http"),
        ("auth-service", "warning", "slow login", "http"),
        ("emitters", "error", "from tcp", "emitters"),
        ("payment-service", "ERROR", "card declined", "api"),
    ]
    by_app = {r["app_id"]: r for r in got}
    assert by_app["payment-service"]["t"] == "2026-11-23 10:00:00"
    assert json.loads(by_app["payment-service"]["metadata"]) == {"order": 17}
    assert by_app["auth-service"]["t"] == "2026-11-23 09:40:00"  # epoch 1795426800, UTC
    assert json.loads(by_app["api-gateway"]["metadata"]) == {}


def failed_attempt(entry: dict[str, Any]) -> bool:
    """A log line of the ClickHouse output failing to reach its server."""
    return entry.get("output") == "clickhouse" and entry.get("msg") in (
        "insert failed; retrying", "cannot connect to ClickHouse; retrying")


def test_clickhouse_down_under_load_loses_nothing(
        start_logd: Callable[[ClickHouseDatabase], LogdProcess],
        private_clickhouse: ClickHouseDatabase) -> None:
    """ClickHouse stops while records arrive at 10,000/s and stays down until logd has
    failed to reach it five times (its backoff at retry_max): nothing is lost or doubled."""
    logd = start_logd(private_clickhouse)
    gen = subprocess.Popen(
        [sys.executable, "tools/loadgen", "--target",
         f"http://127.0.0.1:{logd.port('http')}/api/logs", "--rate", "10000", "--count",
         "120000", "--batch", "200", "--connections", "2", "--json"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        logd.wait_for(lambda e: e.get("msg") == "connected")
        wait_for_rows(private_clickhouse, 1, timeout=30)  # records flow before the outage
        private_clickhouse.server.stop()
        # The outage lasts until logd has noticed it and retried with backoff.
        logd.wait_for(failed_attempt, timeout=60, count=5)
        private_clickhouse.server.start()
        out, err = gen.communicate(120)
        assert gen.returncode == 0, err.decode()
    finally:
        if gen.poll() is None:
            gen.kill()
            gen.wait()
    sent = json.loads(out.decode().strip().splitlines()[-1])["sent"]
    assert sent >= 100_000
    assert logd.stop() == 0
    total, distinct = private_clickhouse.query(
        "SELECT count(), uniqExact(metadata) FROM logs").split()
    assert int(total) == sent, "every accepted record is in ClickHouse"
    assert int(distinct) == sent, "and none twice"
    assert logd.entries("insert failed; retrying") or logd.entries("cannot connect")


def test_rows_clickhouse_refuses_go_to_the_dead_letter_file(
        logd: LogdProcess, clickhouse: ClickHouseDatabase) -> None:
    # A column whose default throws for one message: the server refuses that row's batch.
    # logd made its table on connecting; this one replaces it.
    logd.wait_for(lambda e: e.get("msg") == "connected")
    clickhouse.query("DROP TABLE IF EXISTS logs")
    clickhouse.query(
        "CREATE TABLE logs (app_id String, level String, message String, "
        "source String, created_at DateTime, metadata String, "
        "poison UInt8 DEFAULT throwIf(message = 'poison')) ENGINE = MergeTree() "
        "PARTITION BY toYYYYMMDD(created_at) ORDER BY (app_id, created_at)")
    records = [{"app_id": "a", "message": f"fine {i}"} for i in range(100)]
    records[37] = {"app_id": "a", "message": "poison"}
    assert post(logd, records) == {"accepted": 100}
    assert logd.stop() == 0
    assert clickhouse.query("SELECT count() FROM logs").strip() == "99"
    dead = (logd.out / "state" / "clickhouse.dead-letter.ndjson").read_text().splitlines()
    assert len(dead) == 1
    entry = json.loads(dead[0])
    assert entry["row"]["message"] == "poison" and "395" in entry["reason"]


def test_a_table_with_other_column_types_is_written_through_asynchs_encoder(
        logd: LogdProcess, clickhouse: ClickHouseDatabase) -> None:
    # Made by hand with types logd does not encode itself (Nullable, a DateTime with a zone,
    # FixedString): the rows still arrive, converted by asynch.
    logd.wait_for(lambda e: e.get("msg") == "connected")
    clickhouse.query("DROP TABLE IF EXISTS logs")
    clickhouse.query(
        "CREATE TABLE logs (app_id FixedString(8), level String, "
        "message Nullable(String), source String, created_at DateTime('UTC'), "
        "metadata String) ENGINE = MergeTree() ORDER BY created_at")
    assert post(logd, [{"app_id": "billing", "message": f"m{i}", "timestamp": 1795426800 + i,
                        "metadata": {"i": i}} for i in range(50)]) == {"accepted": 50}
    assert logd.stop() == 0
    got = rows(clickhouse, "SELECT app_id, message, toString(created_at) AS t, metadata "
               "FROM logs ORDER BY created_at")
    assert len(got) == 50
    assert got[7]["app_id"].rstrip("\u0000") == "billing"
    assert (got[7]["message"], got[7]["t"]) == ("m7", "2026-11-23 09:40:07")
    assert json.loads(got[7]["metadata"]) == {"i": 7}


DISK = '{ type = "disk", max_bytes = "64MiB", when_full = "block" }'


def wait_for_rows(ch: ClickHouseDatabase, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while ch.count() < n:
        assert time.monotonic() < deadline, f"{ch.count()} of {n} rows in ClickHouse"
        time.sleep(0.2)  # polling ClickHouse: no event to await from here


def test_a_disk_spool_keeps_what_was_accepted_through_kill_9(
        tmp_path: Path, private_clickhouse: ClickHouseDatabase) -> None:
    private_clickhouse.server.stop()  # nothing can be written: everything waits in the spool
    out = tmp_path / "out"
    out.mkdir()
    first = LogdProcess(config(out, private_clickhouse, buffer=DISK), tmp_path).start()
    try:
        for b in range(10):
            assert post(first, [{"app_id": "a", "message": f"m{b}-{i}"}
                                for i in range(500)]) == {"accepted": 500}
    finally:
        first.stop(signal.SIGKILL)
    private_clickhouse.server.start()
    second = LogdProcess(config(out, private_clickhouse, buffer=DISK), tmp_path).start()
    try:
        replay = second.wait_for(lambda e: e.get("msg", "").startswith("spool has records"))
        assert replay["records"] == 5000
        wait_for_rows(private_clickhouse, 5000)
        assert second.stop() == 0
    finally:
        if second.alive():
            second.stop(signal.SIGKILL)
    assert private_clickhouse.query("SELECT count(), uniqExact(message) FROM logs").split() == \
        ["5000", "5000"]
    # written and acknowledged: a third start has nothing to send again
    third = LogdProcess(config(out, private_clickhouse, buffer=DISK), tmp_path).start()
    assert third.stop() == 0
    assert not third.entries("spool has records from before; sending them first")
    assert private_clickhouse.count() == 5000


def test_a_stop_with_clickhouse_down_leaves_records_in_the_spool(
        tmp_path: Path, private_clickhouse: ClickHouseDatabase) -> None:
    private_clickhouse.server.stop()
    out = tmp_path / "out"
    out.mkdir()
    cfg = config(out, private_clickhouse, buffer=DISK, shutdown_timeout="1s")
    first = LogdProcess(cfg, tmp_path).start()
    assert post(first, [{"message": f"m{i}"} for i in range(300)]) == {"accepted": 300}
    shown = logctl("--socket", str(out / "control.sock"), "stats")
    assert shown.returncode == 0
    row = next(line for line in shown.stdout.splitlines() if line.startswith("clickhouse"))
    assert "300" in row and "DISCONNECTED" in row and "spool" in row, row
    assert first.stop() == 0, "nothing is lost: the spool keeps it"
    kept = first.wait_for(lambda e: "stay in the spool" in e.get("msg", ""))
    assert kept["records"] == 300
    private_clickhouse.server.start()
    second = LogdProcess(cfg, tmp_path).start()
    wait_for_rows(private_clickhouse, 300)
    assert second.stop() == 0
    assert private_clickhouse.count() == 300


def test_reload_hands_the_spool_to_the_changed_output(
        tmp_path: Path, clickhouse: ClickHouseDatabase) -> None:
    out = tmp_path / "out"
    out.mkdir()
    p = LogdProcess(config(out, clickhouse, buffer=DISK), tmp_path).start()
    try:
        gen = subprocess.Popen(
            [sys.executable, "tools/loadgen", "--target",
             f"http://127.0.0.1:{p.port('http')}/api/logs", "--rate", "5000",
             "--duration", "3", "--batch", "100", "--json"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_for_rows(clickhouse, 1)
        p.config_path.write_text(config(out, clickhouse, batch_timeout="50ms", buffer=DISK))
        p.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        done = p.wait_for(lambda e: e.get("msg") == "reloaded")
        assert "output clickhouse changed" in done["changes"]
        output, _ = gen.communicate(60)
        assert gen.returncode == 0
        sent = json.loads(output.decode().strip().splitlines()[-1])["sent"]
        assert p.stop() == 0
    finally:
        if p.alive():
            p.stop(signal.SIGKILL)
    total, distinct = clickhouse.query(
        "SELECT count(), uniqExact(metadata) FROM logs").split()
    assert int(distinct) == sent, "every accepted record is in ClickHouse"
    assert int(total) >= sent


def test_acknowledge_delivered_answers_after_the_insert(tmp_path: Path,
                                                        clickhouse: ClickHouseDatabase) -> None:
    out = tmp_path / "out"
    out.mkdir()
    # A batch waits 500 ms for more rows: an answer that came before the insert would find
    # the rows missing.
    cfg = config(out, clickhouse, batch_timeout="500ms").replace(
        '[listeners.http]\ntype = "http"\n',
        '[listeners.http]\ntype = "http"\nacknowledge = "delivered"\n')
    p = LogdProcess(cfg, tmp_path).start()
    try:
        for round_ in range(3):
            batch = [{"app_id": "acked", "message": f"{round_}-{i}"} for i in range(100)]
            assert post(p, batch) == {"accepted": 100}
            # The answer came after ClickHouse acknowledged the insert: the rows are there.
            assert clickhouse.count() == 100 * (round_ + 1)
    finally:
        assert p.stop() == 0


_FULL_SPOOL_DRIVER = """
import json, subprocess, sys, time, urllib.error, urllib.request
from pathlib import Path
from testkit.harness import LogdProcess, logctl

import atexit, signal
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", {mnt!r}], check=True)
logd = LogdProcess({config!r}, Path({work!r})).start()
# Whatever happens below, logd does not outlive this driver (it would hold the spool).
atexit.register(lambda: logd.alive() and logd.stop(signal.SIGKILL))
accepted = refused = 0
for b in range(400):
    body = json.dumps([{{"app_id": "a", "message": f"m{{b}}-{{i}}-" + "x" * 60}}
                      for i in range(500)]).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{{logd.port('http')}}/api/logs",
                                 data=body, method="POST",
                                 headers={{"Content-Type": "application/json"}})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            accepted += json.loads(r.read())["accepted"]
    except urllib.error.HTTPError as e:
        assert e.code == 503, e.code
        refused += 1
        if refused == 3:
            break
shown = logctl("--socket", {sock!r}, "stats", "--json")
out = json.loads(shown.stdout)["outputs"]["clickhouse"]
print(json.dumps({{"accepted": accepted, "refused": refused, "problem": out["problem"],
                  "held": out["held_records"], "spool_refused": out["refused"]}}),
      flush=True)
sys.stdin.readline()  # ClickHouse is up
healthy = False
for _ in range(300):  # the spool drains, the disk has room: /health says so
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{{logd.port('http')}}/health",
                                    timeout=10) as r:
            healthy = r.status == 200
            break
    except urllib.error.HTTPError:
        time.sleep(0.1)
code = logd.stop()
print(json.dumps({{"code": code, "healthy": healthy,
                  "started": [e.get("errno") for e in logd.entries("cannot write the spool;")],
                  "again": len(logd.entries("writing the spool works again")),
                  "lost": len(logd.entries("shutdown deadline passed"))}}), flush=True)
"""


def test_a_full_spool_disk_answers_503_and_loses_nothing(
        tmp_path: Path, private_clickhouse: ClickHouseDatabase) -> None:
    """The spool on a 1 MiB tmpfs (a private mount namespace), ClickHouse down: once the
    disk is full HTTP says 503 instead of accepting what it would drop; every record that
    was accepted reaches ClickHouse once it is back."""
    import os
    private_clickhouse.server.stop()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    cfg = config(out, private_clickhouse, buffer=f'{{ type = "disk", path = "{mnt}/spool", '
                 'max_bytes = "64MiB", when_full = "block" }').replace(
        '[listeners.http]\ntype = "http"\n', '[listeners.http]\ntype = "http"\n'
        'full_wait = "1s"\n')  # a request waits this long for room, then 503
    (tmp_path / "driver.py").write_text(_FULL_SPOOL_DRIVER.format(
        mnt=str(mnt), config=cfg,
        work=str(work), sock=str(out / "control.sock")))
    unshare = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        unshare.insert(1, "--map-root-user")
    driver = subprocess.Popen([*unshare, sys.executable, str(tmp_path / "driver.py")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, cwd=REPO, env=env_for_testkit())
    try:
        assert driver.stdout is not None and driver.stdin is not None
        line = driver.stdout.readline()
        assert line, driver.communicate(timeout=30)[1].decode()
        full = json.loads(line)
        print(f"spool on a full 1 MiB tmpfs: answered 202 {full['accepted']}, batches "
              f"refused {full['refused']}, records refused by the spool "
              f"{full['spool_refused']}")
        assert full["refused"] == 3 and full["accepted"] > 0
        assert full["problem"].startswith("cannot write the spool: No space left on device")
        # HTTP's batches are refused, not held in memory: its clients retry them.
        assert full["held"] == 0 and full["spool_refused"] >= 3 * 500
        private_clickhouse.server.start()
        stdout, stderr = driver.communicate(b"go\n", timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 0, stderr.decode()
    done = json.loads(stdout.decode().strip().splitlines()[-1])
    assert done == {"code": 0, "healthy": True, "started": ["ENOSPC"], "again": 1, "lost": 0}
    assert private_clickhouse.query("SELECT count(), uniqExact(message) FROM logs").split() \
        == [str(full["accepted"])] * 2


SMALL_SEGMENTS = '{ type = "disk", max_bytes = "8MiB", when_full = "block" }'  # 1 MiB segments


def _spool_with(tmp_path: Path, clickhouse: ClickHouseDatabase, batches: int
                ) -> tuple[Path, int]:
    """Records answered 202 into a spool while ClickHouse is down, then kill -9: (the output
    directory, records accepted)."""
    clickhouse.server.stop()
    out = tmp_path / "out"
    out.mkdir()
    p = LogdProcess(config(out, clickhouse, buffer=SMALL_SEGMENTS), tmp_path).start()
    accepted = 0
    try:
        for b in range(batches):
            accepted += post(p, [{"app_id": "a", "message": f"m{b}-{i}-" + "x" * 200}
                                 for i in range(500)])["accepted"]
    finally:
        p.stop(signal.SIGKILL)
    clickhouse.server.start()
    return out, accepted


def test_random_bytes_in_the_ack_file_replay_everything_and_lose_nothing(
        tmp_path: Path, private_clickhouse: ClickHouseDatabase) -> None:
    out, accepted = _spool_with(tmp_path, private_clickhouse, 40)
    spool = out / "state" / "spool" / "clickhouse"
    (spool / "ack").write_bytes(os.urandom(32))
    p = LogdProcess(config(out, private_clickhouse, buffer=SMALL_SEGMENTS), tmp_path).start()
    try:
        [said] = p.entries("spool ack file cannot be trusted")
        assert said["level"] == "error" and said["path"] == str(spool / "ack")
        wait_for_rows(private_clickhouse, accepted)
        assert p.stop() == 0
    finally:
        if p.alive():
            p.stop(signal.SIGKILL)
    total, distinct = private_clickhouse.query(
        "SELECT count(), uniqExact(message) FROM logs").split()
    assert (int(total), int(distinct)) == (accepted, accepted)
    print(f"damaged ack: 2xx {accepted}, stored {total}, distinct {distinct}")


def test_a_deleted_segment_is_reported_with_the_records_it_held(
        tmp_path: Path, private_clickhouse: ClickHouseDatabase) -> None:
    out, accepted = _spool_with(tmp_path, private_clickhouse, 40)
    spool = out / "state" / "spool" / "clickhouse"
    segments = sorted(spool.glob("*.seg"))
    assert len(segments) >= 4, [s.name for s in segments]
    victim = segments[1]
    victim.unlink()
    p = LogdProcess(config(out, private_clickhouse, buffer=SMALL_SEGMENTS), tmp_path).start()
    try:
        [said] = p.entries("spool segments are missing")
        assert said["level"] == "error" and said["segments"] == [victim.name]
        lost = said["records"]
        assert 0 < lost < accepted
        wait_for_rows(private_clickhouse, accepted - lost)
        assert p.stop() == 0
    finally:
        if p.alive():
            p.stop(signal.SIGKILL)
    stored = private_clickhouse.count()
    assert stored == accepted - lost, "exactly what the missing segment held is missing"
    print(f"deleted segment: 2xx {accepted}, stored {stored}, reported lost {lost}")
