"""What outputs make of a syslog batch: the parsed fields, read as every output reads a
record (logd.fields), without a server."""

from __future__ import annotations

import json

from logd.outputs.kafka import KafkaBatch
from logd.record import Batch

MESSAGES = [b'<38>1 2026-11-23T10:00:00.250Z db1 sshd 4242 LOGIN [auth@32473 user="ann"] '
            b"failed password", b"<78>Nov 23 10:00:01 web2 cron[77]: job started"]


def syslog_batch() -> Batch:
    return Batch.from_lines(b"\n".join(MESSAGES) + b"\n", 2, "syslog", 1.8e9, "syslog")


def test_kafka_json_values_carry_the_fields_keyed_by_app() -> None:
    kb = KafkaBatch.of_batch(syslog_batch(), key=True, fmt="json")
    (k1, v1, _), (k2, v2, _) = kb.messages
    assert (k1, k2) == (b"sshd", b"cron")
    first, second = json.loads(v1), json.loads(v2)
    assert first["time"] == "2026-11-23T10:00:00.250000Z"
    assert (first["app_id"], first["level"], first["message"], first["source"]) == (
        "sshd", "info", "failed password", "syslog")
    assert first["metadata"] == {"host": "db1", "facility": "auth", "procid": "4242",
                                 "msgid": "LOGIN", "sd": {"auth@32473": {"user": "ann"}}}
    assert second["metadata"] == {"host": "web2", "facility": "cron", "procid": "77"}


def test_kafka_raw_values_are_the_messages_keyed_by_app() -> None:
    kb = KafkaBatch.of_batch(syslog_batch(), key=True, fmt="raw")
    assert [(k, v) for k, v, _ in kb.messages] == [(b"sshd", MESSAGES[0]),
                                                   (b"cron", MESSAGES[1])]
