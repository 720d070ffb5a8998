"""The Kafka input's reading of values and its offset bookkeeping (no broker needed)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from logd.component import BuildContext
from logd.delivery import Receipt
from logd.listeners.kafka import KafkaListener, KafkaListenerConfig, _Partition
from logd.router import Router


@dataclass
class Rec:
    """What aiokafka's ConsumerRecord carries that the input reads."""

    value: bytes | None
    offset: int = 0
    topic: str = "logs"
    partition: int = 0
    key: bytes | None = None


def listener(**kw: str) -> KafkaListener:
    return KafkaListener(KafkaListenerConfig(name="k", **kw), BuildContext(router=Router({}, {})))


def test_json_values_read_back_what_the_kafka_output_wrote() -> None:
    written = {"time": "2026-11-23T10:00:00.5Z", "app_id": "web", "level": "fatal",
               "message": "m", "source": "http", "metadata": {"k": 1}}
    batch, bad = listener()._batch_of([Rec(json.dumps(written).encode()),
                                       Rec(b"{broken", 1), Rec(b"[1, 2]", 2), Rec(None, 3)])
    assert batch is not None and batch.count == 1
    [obj] = batch.fields()
    assert obj["timestamp"] == "2026-11-23T10:00:00.5Z" and "time" not in obj
    assert batch.severity_bytes() == bytes([2])  # fatal
    assert [(r.offset, why.split(":")[0]) for r, why in bad] == [
        (1, "not JSON"), (2, "not a JSON object"), (3, "not JSON")]


def test_raw_values_are_payloads() -> None:
    batch, bad = listener(format="raw")._batch_of([Rec(b"<11>x"), Rec(None, 1)])
    assert batch is not None and batch.payloads == [b"<11>x", b""] and not bad
    assert batch.severity_bytes() == bytes([3, 6])


def test_only_secured_offsets_are_committed_in_order() -> None:
    part = _Partition("logs", 0)
    first, second = Receipt(), Receipt()
    for r in (first, second):
        r.expect(10)
        r.accepted(10)
    part.pending.extend([(10, first, 10), (12, None, 2), (22, second, 10)])
    assert part.secured_to() is None          # the oldest is not secured yet
    second.written(10)
    assert part.secured_to() is None          # ... and nothing may pass it
    first.written(10)
    assert part.secured_to() == 22
    assert part.forget_to(12) == 12 and part.uncommitted() == 10
