"""Kafka -> logd (a consumer group) -> outputs: sharing, kill -9, a dead output, the field
round trip agent -> Kafka -> aggregator -> ClickHouse."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testkit.clickhouse import ClickHouseDatabase
from testkit.harness import LogdProcess, post_records, read_all_lines
from testkit.kafka import KafkaTopic

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def started() -> Iterator[list[LogdProcess]]:
    procs: list[LogdProcess] = []
    yield procs
    for p in procs:
        if p.proc is not None:
            p.stop(signal.SIGKILL)


def produce(b: KafkaTopic, topic: str, values: list[bytes], partitions: int = 4,
            rate: float = 0) -> None:
    """Create `topic` with `partitions` and produce `values` round-robin over them (at
    `rate` records/s when set), each acknowledged."""
    async def run() -> None:
        from aiokafka import AIOKafkaProducer
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic
        admin = AIOKafkaAdminClient(bootstrap_servers=b.bootstrap)
        await admin.start()
        try:
            if topic not in await admin.list_topics():
                await admin.create_topics([NewTopic(topic, partitions, 1)])
        finally:
            await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=b.bootstrap, linger_ms=5)
        await producer.start()
        try:
            t0 = time.monotonic()
            futures = []
            for i, v in enumerate(values):
                futures.append(await producer.send(topic, v, partition=i % partitions))
                if rate and i % 500 == 499:
                    ahead = (i + 1) / rate - (time.monotonic() - t0)
                    if ahead > 0:
                        await asyncio.sleep(ahead)  # the load's own schedule
            await asyncio.gather(*futures)
        finally:
            await producer.stop()
    asyncio.run(run())


def record(i: int, app: str = "web") -> bytes:
    """A value as the Kafka output's json format writes it."""
    return json.dumps({"time": "2026-11-23T10:00:00.500000Z", "app_id": app, "level": "info",
                       "message": f"m{i}", "source": "agent", "metadata": {"i": i}}).encode()


def aggregator_config(out: Path, b: KafkaTopic, topic: str, outputs: str,
                      listener_extra: str = "") -> str:
    return f"""
[daemon]
state_dir = "{out}/state"
control_socket = "{out}/control.sock"
stats_interval = "0s"
shutdown_timeout = "30s"

[listeners.from_kafka]
type = "kafka"
brokers = ["{b.bootstrap}"]
topics = ["{topic}"]
group = "aggregators"
commit_interval = "200ms"
{listener_extra}
{outputs}
"""


def file_output(out: Path) -> str:
    return f"""
[outputs.files]
type = "file"
path = "{out}/{{app}}.log"
flush_interval = "100ms"
"""


def messages_in(out: Path) -> list[str]:
    return [json.loads(line)["message"] for line in read_all_lines(out, "web.log")] \
        if out.exists() else []


def wait_until(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)  # polling files written by other processes: no event to await


def start_aggregator(tmp_path: Path, name: str, config: str,
                     started: list[LogdProcess]) -> LogdProcess:
    work = tmp_path / name
    work.mkdir()
    p = LogdProcess(config, work)
    started.append(p)
    return p.start()


def test_two_aggregators_share_the_partitions_and_write_every_record_once(
        tmp_path: Path, kafka: KafkaTopic, started: list[LogdProcess]) -> None:
    n = 40_000
    topic = kafka.topic
    produce(kafka, topic, [], partitions=4)
    outs = [tmp_path / "a" / "out", tmp_path / "b" / "out"]
    aggs = []
    for out in outs:
        out.parent.mkdir()
        out.mkdir()
        p = LogdProcess(aggregator_config(out, kafka, topic, file_output(out)), out.parent)
        started.append(p)
        aggs.append(p.start())
        p.wait_for(lambda e: e.get("msg") == "partitions assigned")
    # Both in the group: the partitions are split between them before the records come.
    wait_until(lambda: all(_assigned(p) for p in aggs) and
               sum(len(_assigned(p)) for p in aggs) == 4, 30, "the group never settled")
    produce(kafka, topic, [record(i) for i in range(n)])
    wait_until(lambda: sum(len(messages_in(o)) for o in outs) >= n, 60,
               "not every record arrived")
    for p in aggs:
        assert p.stop() == 0
    got = [m for o in outs for m in messages_in(o)]
    assert Counter(got) == Counter(f"m{i}" for i in range(n))
    assert all(len(messages_in(o)) > 0 for o in outs), "one aggregator did all the work"


def _assigned(p: LogdProcess) -> list[str]:
    """The partitions the last assignment gave this aggregator."""
    entries = p.entries("partitions assigned")
    return entries[-1]["partitions"] if entries else []


def test_kill_9_of_one_aggregator_moves_its_partitions_and_loses_nothing(
        tmp_path: Path, kafka: KafkaTopic, started: list[LogdProcess]) -> None:
    n = 60_000
    topic = kafka.topic
    produce(kafka, topic, [], partitions=4)
    outs = [tmp_path / "a" / "out", tmp_path / "b" / "out"]
    aggs = []
    for out in outs:
        out.parent.mkdir()
        out.mkdir()
        # A short session: the group notices the killed member within seconds.
        extra = 'max_uncommitted = 5000\nsession_timeout = "3s"'
        p = LogdProcess(aggregator_config(out, kafka, topic, file_output(out), extra),
                        out.parent)
        started.append(p)
        aggs.append(p.start())
    wait_until(lambda: sum(len(_assigned(p)) for p in aggs) == 4, 30,
               "the group never settled")
    producer = threading.Thread(target=produce, args=(kafka, topic,
                                                      [record(i) for i in range(n)]),
                                kwargs={"rate": 10_000})
    producer.start()
    try:
        wait_until(lambda: len(messages_in(outs[0])) > 2_000, 60, "a got nothing")
        aggs[0].proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        aggs[0].proc.wait(10)  # type: ignore[union-attr]
    finally:
        producer.join(120)
    # The survivor is given every partition once the group notices (session timeout).
    wait_until(lambda: len(_assigned(aggs[1])) == 4, 60, "b never took a's partitions")
    wait_until(lambda: set(messages_in(outs[0])) | set(messages_in(outs[1]))
               >= {f"m{i}" for i in range(n)}, 90, "records were lost")
    assert aggs[1].stop() == 0
    got = messages_in(outs[0]) + messages_in(outs[1])
    twice = len(got) - n
    # What a had taken and not committed is read again by b: no more than max_uncommitted.
    assert 0 <= twice <= 5000, twice
    print(f"kill -9 of one aggregator: {n} produced, {len(got)} written, {twice} twice")


def test_a_dead_output_pauses_the_consumer_and_everything_arrives_after(
        tmp_path: Path, kafka: KafkaTopic, started: list[LogdProcess],
        private_clickhouse: ClickHouseDatabase) -> None:
    ch = private_clickhouse
    n = 50_000
    topic = kafka.topic
    produce(kafka, topic, [record(i) for i in range(n)], partitions=2)
    ch.server.stop()
    out = tmp_path / "out"
    out.mkdir()
    outputs = f"""
[outputs.clickhouse]
type = "clickhouse"
url = "{ch.url}"
batch_timeout = "100ms"
retry_max = "1s"
buffer = {{ type = "memory", max_bytes = "1MiB", when_full = "block" }}
"""
    p = LogdProcess(aggregator_config(out, kafka, topic, outputs), tmp_path)
    started.append(p)
    p.start()
    p.wait_for(lambda e: e.get("msg") == "partitions assigned")
    began = time.monotonic()
    wait_until(lambda: _listener(p)["pauses"] > 0, 30, "the consumer never paused")
    rss_paused = _rss(p)
    taken = _listener(p)["records"]
    time.sleep(max(0.0, 20 - (time.monotonic() - began)))  # the outage under test
    paused = _listener(p)
    grew = _rss(p) - rss_paused
    # Flat: once paused, nothing more is taken and memory stays where it was.
    assert paused["records"] == taken < n, "read on while the output was down"
    assert grew < 4 * 1024**2, f"RSS grew {grew / 1024**2:.1f} MiB while paused"
    print(f"output down 20 s: {paused['records']} of {n} taken, {paused['pauses']} pauses, "
          f"RSS {rss_paused / 1024**2:.0f} MiB, +{grew / 1024**2:.1f} MiB while paused")
    ch.server.start()
    wait_until(lambda: ch.count() >= n, 90, "not everything arrived")
    assert p.stop() == 0
    assert ch.count() == n


def _rss(p: LogdProcess) -> int:
    for line in Path(f"/proc/{p.proc.pid}/status").read_text().splitlines():  # type: ignore[union-attr]
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _listener(p: LogdProcess) -> dict[str, Any]:
    from logd.ctl import request
    return request(str(p.workdir / "out" / "control.sock"), "listeners")["from_kafka"]


def test_agent_to_kafka_to_aggregator_lands_as_if_written_directly(
        tmp_path: Path, kafka: KafkaTopic, started: list[LogdProcess],
        clickhouse: ClickHouseDatabase) -> None:
    ch = clickhouse
    topic = kafka.topic
    agent_out = tmp_path / "agent" / "out"
    agent_out.mkdir(parents=True)
    agent = LogdProcess(f"""
[daemon]
state_dir = "{agent_out}/state"
control_socket = "{agent_out}/control.sock"
stats_interval = "0s"

[listeners.http]
type = "http"
address = "127.0.0.1:0"

[outputs.kafka]
type = "kafka"
brokers = ["{kafka.bootstrap}"]
topic = "{topic}"
format = "json"
partitions = 2
batch_timeout = "50ms"

[outputs.direct]
type = "clickhouse"
url = "{ch.url}"
table = "direct"
batch_timeout = "100ms"
""", agent_out.parent)
    started.append(agent)
    agent.start()
    agg_out = tmp_path / "agg" / "out"
    agg_out.mkdir(parents=True)
    aggregator = LogdProcess(aggregator_config(agg_out, kafka, topic, f"""
[outputs.clickhouse]
type = "clickhouse"
url = "{ch.url}"
table = "via_kafka"
batch_timeout = "100ms"
"""), agg_out.parent)
    started.append(aggregator)
    aggregator.start()
    sent = [
        {"app_id": "payment-service", "level": "fatal", "message": "card declined",
         "source": "api", "timestamp": "2026-11-23T10:00:00.250Z",
         "metadata": {"order": 17}, "user": "u1"},
        {"app": "auth-service", "level": "WARNING", "message": "slow login",
         "timestamp": 1795426800},
        {"app_id": "web", "severity": "err", "message": "no level, a severity",
         "metadata": {"nested": {"a": [1, 2]}}},
        {"message": "plain, nothing else"},
    ]
    assert post_records(agent, sent, "http") == {"accepted": len(sent)}
    # A value that is not JSON: the aggregator's dead-letter file, and on past it.
    produce(kafka, topic, [b"not json at all {"], partitions=2)
    columns = "app_id, level, message, source, toString(created_at) AS t, metadata"
    wait_until(lambda: ch.count("via_kafka") >= len(sent) and
               ch.count("direct") >= len(sent), 60, "records did not arrive")
    wait_until(lambda: _listener(aggregator)["dead_lettered"] == 1, 30,
               "the bad value was not dead-lettered")
    assert agent.stop() == 0
    assert aggregator.stop() == 0

    def rows(table: str) -> list[tuple[Any, ...]]:
        text = ch.query(f"SELECT {columns} FROM {table} FORMAT JSONEachRow")
        return sorted((r["app_id"], r["level"], r["message"], r["source"], r["t"],
                       json.loads(r["metadata"]))
                      for r in map(json.loads, text.splitlines()))

    direct, via = rows("direct"), rows("via_kafka")
    assert len(direct) == len(sent)
    # Source: the agent's listener (http) both ways; the time of a record without one is
    # when the agent received it, carried in the value.
    assert via == direct
    [bad] = [json.loads(line) for line in
             (agg_out / "state" / "from_kafka.dead-letter.ndjson").read_text().splitlines()]
    assert bad["value"] == "not json at all {" and bad["reason"].startswith("not JSON")
    assert bad["topic"] == topic
