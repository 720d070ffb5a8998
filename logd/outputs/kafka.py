"""The Kafka output (aiokafka): records produced to a topic in record batches.

Each write groups the block's records by partition (by the record's app, so one app's
records stay in order, or spread evenly with `key = "none"`), fills aiokafka batch builders
(C-built record batches, up to `max_batch_bytes` each) and waits for every partition's ACKs
(`acks`). A partition whose batches were acknowledged is not sent again when a retry is
needed for another. Batching, retries and dead letters are DatabaseOutput's; a record the
broker refuses for itself (too large, invalid) goes to the dead-letter file.

The value is the payload as received (`format = "raw"`), or a JSON object of the mapped
fields (`"json"`: time, app_id, level, message, source, metadata; see logd.fields).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import struct
import zlib
from array import array
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import orjson

from logd.buffers import codec
from logd.client_tls import ClientTlsConfig, client_context, reload_context
from logd.component import BuildContext
from logd.config import (
    nested,
    one_of,
    setting,
    to_bool,
    to_brokers,
    to_duration,
    to_int,
    to_nonempty_str,
    to_size,
)
from logd.fields import apps_of, record_rows, record_time, utc_datetime
from logd.outputs.database import DatabaseOutput, DatabaseOutputConfig
from logd.record import Batch
from logd.stats import DatabaseOutputStats

log = logging.getLogger("logd.kafka")

_ACKS: dict[str, Any] = {"all": "all", "leader": 1, "none": 0}
_TOPIC_ALREADY_EXISTS = 36


@dataclass(frozen=True)
class KafkaOutputConfig(DatabaseOutputConfig):
    type: str = setting("kafka", one_of("kafka"))
    brokers: tuple[str, ...] = setting(("127.0.0.1:9092",), to_brokers,
                                       "bootstrap brokers, host:port")
    topic: str = setting("logs", to_nonempty_str, "topic to produce to")
    key: str = setting("app", one_of("app", "none"),
                       "app: records keyed (and partitioned) by app, in order per app; "
                       "none: spread over the partitions")
    format: str = setting("raw", one_of("raw", "json"),
                          "raw: the payload as received; json: the mapped fields")
    acks: str = setting("all", one_of("all", "leader", "none"),
                        "all: every in-sync replica; leader: the leader only; none: no ACK")
    compression: str = setting("none", one_of("none", "gzip"), "record batch compression")
    create: bool = setting(True, to_bool, "create the topic if absent")
    partitions: int = setting(3, to_int(1), "partitions of a topic logd creates")
    replication: int = setting(1, to_int(1), "replication factor of a topic logd creates")
    max_batch_bytes: int = setting(1024**2, to_size(lo=1024),
                                   "largest record batch sent to one partition")
    max_record_bytes: int = setting(1000000, to_size(lo=16),
                                    "a larger record goes to the dead-letter file (Kafka's "
                                    "message.max.bytes is about 1 MB)")
    batch_timeout: float = setting(0.2, to_duration,
                                   "... or when the oldest waited this long")
    tls: ClientTlsConfig | None = nested(  # noqa: RUF009
        ClientTlsConfig, lambda: None,
        "{ ca, cert, key, verify_hostname }: TLS to the brokers (none: plaintext)")


Message = tuple[bytes | None, bytes, float]  # key, value, timestamp (epoch seconds)


class MessageBlock:
    """Messages for one write. Once written, `groups` holds them by partition and `acked`
    how many of each partition's the broker acknowledged, in order: a retry sends only the
    rest, so nothing acknowledged is sent again and one app's records stay in order."""

    __slots__ = ("acked", "count", "groups", "messages", "nbytes")

    def __init__(self, messages: list[Message]) -> None:
        self.messages = messages
        self.count = len(messages)
        self.nbytes = sum(len(m[1]) for m in messages)
        self.groups: dict[int, list[Message]] | None = None
        self.acked: dict[int, int] = {}

    def unacknowledged(self) -> list[Message]:
        if self.groups is None:
            return self.messages
        return [m for p, msgs in self.groups.items() for m in msgs[self.acked.get(p, 0):]]


def _json_time(ts: Any, received: float) -> float:
    t = record_time(ts)
    return received if t is None else t


def _apps(batch: Batch) -> list[str]:
    return apps_of(batch.fields(), batch.source)


class KafkaBatch:
    """A batch as Kafka messages (key, value, timestamp): what the output's buffer holds,
    made as the batch arrives, while an HTTP batch's parsed objects are at hand."""

    __slots__ = ("count", "messages", "nbytes")

    def __init__(self, messages: list[Message]) -> None:
        self.messages = messages
        self.count = len(messages)
        self.nbytes = sum(len(m[1]) for m in messages)

    @property
    def held_bytes(self) -> int:
        return self.nbytes + 64 * self.count  # the tuples and keys beside the values

    def compact(self) -> None:
        """Already as small as it gets (see Batch.compact)."""

    @classmethod
    def of_batch(cls, batch: Batch, key: bool, fmt: str) -> KafkaBatch:
        # The Kafka timestamp is when logd received the record; its own time is in the value.
        received = batch.received
        if fmt == "raw":
            values = batch.payloads
            if not key:
                return cls([(None, v, received) for v in values])
            apps = _apps(batch)
            encoded = {a: a.encode() for a in set(apps)}
            return cls(list(zip(map(encoded.__getitem__, apps), values, repeat(received))))
        out: list[Message] = []
        for app, level, message, source, when, metadata in record_rows(batch, _json_time):
            value = orjson.dumps({
                "time": utc_datetime(when, received).isoformat().replace("+00:00", "Z"),
                "app_id": app, "level": level, "message": message, "source": source,
                "metadata": orjson.Fragment(metadata)})
            out.append((app.encode() if key else None, value, received))
        return cls(out)


# In a disk spool: count, then per message a key length (u32, 0xFFFFFFFF: none), a value
# length (u32) and a timestamp (f64), then the keys and values.
_SPOOL_COUNT = struct.Struct("<I")
_NO_KEY = 0xFFFFFFFF


def _spool_encode(batch: KafkaBatch) -> bytes:
    heads = array("I")
    stamps = array("d")
    parts: list[bytes] = []
    for k, v, t in batch.messages:
        heads.append(_NO_KEY if k is None else len(k))
        heads.append(len(v))
        stamps.append(t)
        if k is not None:
            parts.append(k)
        parts.append(v)
    return b"".join((_SPOOL_COUNT.pack(batch.count), heads.tobytes(), stamps.tobytes(),
                     *parts))


def _spool_decode(body: bytes) -> KafkaBatch:
    (count,) = _SPOOL_COUNT.unpack_from(body)
    off = _SPOOL_COUNT.size
    heads = array("I")
    heads.frombytes(body[off:off + 8 * count])
    off += 8 * count
    stamps = array("d")
    stamps.frombytes(body[off:off + 8 * count])
    off += 8 * count
    messages: list[Message] = []
    for i in range(count):
        klen, vlen = heads[2 * i], heads[2 * i + 1]
        key = None
        if klen != _NO_KEY:
            key = body[off:off + klen]
            off += klen
        messages.append((key, body[off:off + vlen], stamps[i]))
        off += vlen
    if off != len(body):
        raise ValueError("message lengths do not add up to the entry")
    return KafkaBatch(messages)


codec.register(KafkaBatch, 3, _spool_encode, _spool_decode)


class KafkaOutput(DatabaseOutput):
    server = "Kafka"

    def __init__(self, cfg: KafkaOutputConfig, ctx: BuildContext | None = None) -> None:
        super().__init__(cfg, ctx)
        self._producer: Any = None
        self._ssl: ssl.SSLContext | None = None
        self._stopping: set[asyncio.Future[Any]] = set()
        self._round_robin = itertools.count()

    async def start(self) -> None:
        import aiokafka  # noqa: F401  (fail at start, with the reason, if it is missing)
        if self.cfg.tls is not None:
            self._ssl = client_context(self.cfg.tls, f"outputs.{self.name}")

    def reload_tls(self) -> bool:
        if self._ssl is None or self.cfg.tls is None:
            return False
        reload_context(self._ssl, self.cfg.tls, f"outputs.{self.name}")
        return True

    def _security(self) -> dict[str, Any]:
        """aiokafka's arguments for TLS, when the output has a `tls` table."""
        if self._ssl is None:
            return {}
        return {"security_protocol": "SSL", "ssl_context": self._ssl}

    async def connect(self) -> str:
        from aiokafka import AIOKafkaProducer
        servers = list(self.cfg.brokers)
        if self.cfg.create:
            await self._create_topic(servers)
        producer = AIOKafkaProducer(
            bootstrap_servers=servers, acks=_ACKS[self.cfg.acks],
            compression_type=None if self.cfg.compression == "none" else self.cfg.compression,
            max_batch_size=self.cfg.max_batch_bytes,
            max_request_size=max(self.cfg.max_batch_bytes, self.cfg.max_record_bytes) + 65536,
            request_timeout_ms=15000, linger_ms=0, **self._security())
        self._producer = producer
        await producer.start()
        partitions = await producer.partitions_for(self.cfg.topic)
        if not partitions:
            raise RuntimeError(f"topic {self.cfg.topic!r} has no partitions (does it exist?)")
        return f"{','.join(servers)} topic {self.cfg.topic} ({len(partitions)} partitions)"

    async def _create_topic(self, servers: list[str]) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic
        admin = AIOKafkaAdminClient(bootstrap_servers=servers, request_timeout_ms=10000,
                                    **self._security())
        await admin.start()
        try:
            if self.cfg.topic in await admin.list_topics():
                return
            response = await admin.create_topics([NewTopic(
                self.cfg.topic, self.cfg.partitions,
                replication_factor=self.cfg.replication)])
            for topic_error in getattr(response, "topic_errors", ()):
                code = topic_error[1]
                if code not in (0, _TOPIC_ALREADY_EXISTS):
                    raise RuntimeError(f"cannot create topic {self.cfg.topic!r}: broker "
                                       f"error {code} {topic_error[2:] or ''}")
            log.info("topic created", extra={"output": self.name, "topic": self.cfg.topic,
                                             "partitions": self.cfg.partitions,
                                             "replication": self.cfg.replication})
        finally:
            await admin.close()

    async def disconnect(self) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return
        # stop() waits for what the producer still holds (up to its request timeout when
        # the broker is gone); cancelling it would leave its sender and connections behind,
        # so it finishes in the background and is only waited for briefly here.
        stopping = asyncio.ensure_future(producer.stop())
        self._stopping.add(stopping)
        stopping.add_done_callback(self._stopping.discard)
        stopping.add_done_callback(lambda t: t.cancelled() or t.exception())
        if not self._giving_up:
            await asyncio.wait([stopping], timeout=5)

    async def write(self, block: MessageBlock) -> int:
        if not block.count:
            return 0
        limit = self.cfg.max_record_bytes
        size = max(len(m[1]) for m in block.messages)
        if size > limit:
            from aiokafka.errors import MessageSizeTooLargeError
            raise MessageSizeTooLargeError(f"a record of {size} bytes is over "
                                           f"max_record_bytes ({limit})")
        partitions = sorted(await self._producer.partitions_for(self.cfg.topic))
        if block.groups is None or not set(block.groups) <= set(partitions):
            block.groups = self._by_partition(block.unacknowledged(), partitions)
            block.acked = {}
        results = await asyncio.gather(*(self._send_partition(block, p)
                                         for p in block.groups), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return sum(results)  # type: ignore[arg-type]

    async def _send_partition(self, block: MessageBlock, partition: int) -> int:
        """One partition's messages, a record batch at a time, each acknowledged before the
        next goes (so a retry never reorders them)."""
        assert block.groups is not None
        producer = self._producer
        messages = block.groups[partition]
        i = block.acked.get(partition, 0)
        sent = 0
        while i < len(messages):
            builder = producer.create_batch()
            j = i
            nbytes = 0
            while j < len(messages):
                key, value, ts = messages[j]
                if builder.append(key=key, value=value, timestamp=int(ts * 1000)) is None:
                    break  # full; an empty batch takes any record, so j > i here
                nbytes += len(value)
                j += 1
            future = await producer.send_batch(builder, self.cfg.topic, partition=partition)
            await future
            block.acked[partition] = i = j
            sent += nbytes
        return sent

    def _by_partition(self, messages: list[Message], partitions: list[int]
                      ) -> dict[int, list[Message]]:
        groups: dict[int, list[Message]] = {}
        n = len(partitions)
        if self.cfg.key == "app":
            for m in messages:
                groups.setdefault(partitions[zlib.crc32(m[0] or b"") % n], []).append(m)
            return groups
        # Contiguous runs, one per partition, starting where the last write stopped.
        start = next(self._round_robin)
        step = -(-len(messages) // n)
        for i in range(n):
            run = messages[i * step:(i + 1) * step]
            if run:
                groups[partitions[(start + i) % n]] = run
        return groups

    def encode(self, batch: Batch) -> KafkaBatch:
        return KafkaBatch.of_batch(batch, self.cfg.key == "app", self.cfg.format)

    def combine(self, batches: list[Any]) -> MessageBlock:
        if len(batches) == 1:
            return MessageBlock(batches[0].messages)
        return MessageBlock(list(itertools.chain.from_iterable(b.messages for b in batches)))

    def split(self, block: MessageBlock) -> tuple[MessageBlock, MessageBlock]:
        rest = block.unacknowledged()  # what the broker took is not sent again
        self.written += block.count - len(rest)
        mid = len(rest) // 2
        return MessageBlock(rest[:mid]), MessageBlock(rest[mid:])

    def row_dicts(self, block: MessageBlock) -> list[dict[str, Any]]:
        return [{"key": k.decode("utf-8", "replace") if k is not None else None,
                 "value": v.decode("utf-8", "replace"), "time": t}
                for k, v, t in block.messages]

    def is_data_error(self, e: Exception) -> bool:
        from aiokafka import errors
        return isinstance(e, (errors.MessageSizeTooLargeError, errors.RecordTooLargeError,
                              errors.CorruptRecordException, errors.InvalidTimestampError,
                              errors.UnsupportedForMessageFormatError,
                              errors.PolicyViolationError))

    def stats(self) -> DatabaseOutputStats:
        return {**super().stats(), "type": "kafka"}
