"""The Kafka input: a consumer in a group (aiokafka); Kafka assigns the partitions and keeps
the offsets.

Each fetch of one partition becomes one batch, routed like any listener's. An offset is
committed only once every destination its records went to has secured them (a disk spool
holds them, or the writer of a memory buffer wrote them: the file flushed, the database
acknowledged, the analyzers ACKed), so a crash re-reads, and never skips: at least once.
Records that cannot be read (`format = "json"` and not a JSON object) go to the dead-letter
file, counted, and their offsets advance.

Backpressure: while a destination that blocks when full is full, every assigned partition
is paused, so nothing more is fetched; the group membership is kept alive meanwhile. Lag
grows in Kafka, not memory in logd. `max_uncommitted` bounds what is read and not yet
committed (what a crash or a rebalance may send twice).

Rebalances: partitions taken away wait (up to `revoke_timeout`) for their records in flight
to be secured, commit them, and go; what was not secured by then is read again by the new
owner (counted as `reread`).

`format = "json"` reads what the Kafka output's json format writes (`time`, `app_id`,
`level`, `message`, `source`, `metadata`): a record that went agent -> Kafka -> aggregator
lands with the fields it would have had from the agent directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import ssl
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from logd import dead_letter
from logd.client_tls import ClientTlsConfig, client_context, reload_context
from logd.component import BuildContext, Listener
from logd.config import (
    component_name,
    nested,
    one_of,
    setting,
    to_brokers,
    to_duration,
    to_int,
    to_nonempty_str,
    to_size,
    to_str_list,
)
from logd.delivery import Receipt
from logd.fields import severities_of
from logd.logsetup import RateLimitedLog
from logd.record import Batch
from logd.stats import KafkaListenerStats, KafkaPartitionStats

if TYPE_CHECKING:
    from logd.router import Plan

log = logging.getLogger("logd.kafka_input")


def _to_topics(v: Any) -> tuple[str, ...]:
    topics = to_str_list(v)
    if not topics or not all(topics):
        raise ValueError("expected one or more topic names")
    return topics


def _to_session_timeout(v: Any) -> float:
    seconds = to_duration(v)
    if seconds < 1.0:
        raise ValueError(f"expected at least 1s (heartbeats go every third of it), got {v!r}")
    return seconds


@dataclass(frozen=True)
class KafkaListenerConfig:
    type: str = setting("kafka", one_of("kafka"))
    brokers: tuple[str, ...] = setting(("127.0.0.1:9092",), to_brokers,
                                       "bootstrap brokers, host:port")
    topics: tuple[str, ...] = setting(("logs",), _to_topics, "topics to consume")
    group: str = setting("logd", to_nonempty_str,
                         "consumer group: instances in one group share the partitions")
    format: str = setting("json", one_of("json", "raw"),
                          "json: what the Kafka output's json format writes; raw: the value "
                          "is the payload")
    start: str = setting("earliest", one_of("earliest", "latest"),
                         "where a group with no committed offset starts")
    commit_interval: float = setting(1.0, to_duration, "how often secured offsets are "
                                     "committed")
    max_uncommitted: int = setting(100_000, to_int(1),
                                   "records read and not yet committed; beyond it reading "
                                   "waits (what a crash may send twice)")
    max_fetch_bytes: int = setting(16 * 1024**2, to_size(lo=1024),
                                   "bytes fetched ahead of what is taken, at most")
    max_batch_records: int = setting(5000, to_int(1), "records taken per fetch, at most")
    revoke_timeout: float = setting(10.0, to_duration,
                                    "on a rebalance, how long records in flight may take to "
                                    "be secured before their partitions go")
    dead_letter: str = setting("", lambda v: v if v == "" else to_nonempty_str(v),
                               "file for records that cannot be read, with the reason "
                               "(default: STATE_DIR/NAME.dead-letter.ndjson)")
    client_id: str = setting("logd", to_nonempty_str, "the client id brokers see")
    session_timeout: float = setting(10.0, _to_session_timeout,
                                     "how long the group waits for a silent member (a "
                                     "crashed aggregator) before its partitions move; the "
                                     "brokers' group.min/max.session.timeout.ms bound it")
    tls: ClientTlsConfig | None = nested(  # noqa: RUF009
        ClientTlsConfig, lambda: None,
        "{ ca, cert, key, verify_hostname }: TLS to the brokers (none: plaintext)")
    name: str = component_name()


@dataclass
class _Partition:
    """What is known of one assigned partition."""

    topic: str
    partition: int
    # Taken and not committed, in offset order: (offset after, receipt or None, records).
    pending: deque[tuple[int, Receipt | None, int]] = field(default_factory=deque)
    committed: int | None = None   # the committed offset (the next one to read)
    read_to: int | None = None     # the offset after the last record taken
    records: int = 0

    @property
    def key(self) -> str:
        return f"{self.topic}-{self.partition}"

    def secured_to(self) -> int | None:
        """The offset everything before which is secured (None: nothing new)."""
        offset = None
        for end, receipt, _ in self.pending:
            if receipt is not None and not receipt.is_secured:
                break
            offset = end
        return offset

    def forget_to(self, offset: int) -> int:
        """Drop what is committed up to `offset`; returns the records dropped."""
        n = 0
        while self.pending and self.pending[0][0] <= offset:
            n += self.pending.popleft()[2]
        return n

    def uncommitted(self) -> int:
        return sum(n for _, _, n in self.pending)


_DICT = {dict}


def _objects_one_by_one(records: list[Any], values: list[bytes]
                        ) -> tuple[list[dict[str, Any]], list[tuple[Any, str]]]:
    """The values that are JSON objects, and (record, why) of the others."""
    objs: list[dict[str, Any]] = []
    bad: list[tuple[Any, str]] = []
    for r, value in zip(records, values, strict=True):
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError as e:
            bad.append((r, f"not JSON: {e}"))
            continue
        if not isinstance(obj, dict):
            bad.append((r, "not a JSON object"))
            continue
        objs.append(obj)
    return objs, bad


def _rebalance_listener(listener: KafkaListener) -> Any:
    """aiokafka's rebalance callbacks (awaited before the group goes on), for `listener`;
    aiokafka is imported here, when a consumer starts, not when a config is checked."""
    from aiokafka.abc import ConsumerRebalanceListener

    class Rebalance(ConsumerRebalanceListener):
        async def on_partitions_revoked(self, revoked: Any) -> None:
            await listener._revoked(revoked)

        async def on_partitions_assigned(self, assigned: Any) -> None:
            await listener._assigned(assigned)

    return Rebalance()


class KafkaListener(Listener):
    def __init__(self, cfg: KafkaListenerConfig, ctx: BuildContext | None = None) -> None:
        super().__init__(cfg.name)
        self.cfg = cfg
        ctx = ctx or BuildContext()
        self.router = ctx.the_router()
        self.state_dir = ctx.state_dir
        self._consumer: Any = None
        self._ssl: ssl.SSLContext | None = None
        self._parts: dict[Any, _Partition] = {}  # TopicPartition -> state
        self._paused = False
        self._stopping = False
        self._done = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self.records = 0
        self.bytes_in = 0
        self.pauses = 0
        self.rebalances = 0
        self.dead_lettered = 0
        self.reread = 0         # taken, not committed when a partition went: read again
        self.uncommitted = 0
        self.commits = 0
        self.errors: Counter[str] = Counter()
        self.ratelog = RateLimitedLog(log)
        self.connected = False

    def dead_letter_path(self) -> str:
        return self.cfg.dead_letter or os.path.join(self.state_dir,
                                                    f"{self.name}.dead-letter.ndjson")

    # -- lifecycle --

    async def start(self) -> None:
        import aiokafka  # noqa: F401  (fail at start, with the reason, if it is missing)
        if self.cfg.tls is not None:
            self._ssl = client_context(self.cfg.tls, f"listeners.{self.name}")

    def reload_tls(self) -> bool:
        if self._ssl is None or self.cfg.tls is None:
            return False
        reload_context(self._ssl, self.cfg.tls, f"listeners.{self.name}")
        return True

    async def run(self) -> None:
        """Consume until drained; a broker that cannot be reached is retried with backoff."""
        delay = 0.5
        try:
            while not self._stopping:
                try:
                    await self._consume()
                    delay = 0.5
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    self.errors["consumer"] += 1
                    self.connected = False
                    self.ratelog.error("consumer", "Kafka consumer failed; starting again",
                                       listener=self.name, error=f"{type(e).__name__}: {e}",
                                       retry_in_s=round(delay, 2))
                    await self._close_consumer()
                    if self._stopping:
                        break
                    await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                    delay = min(delay * 2, 30.0)
        finally:
            self._done.set()

    async def _consume(self) -> None:
        from aiokafka import AIOKafkaConsumer
        consumer = AIOKafkaConsumer(
            bootstrap_servers=list(self.cfg.brokers), group_id=self.cfg.group,
            client_id=self.cfg.client_id, enable_auto_commit=False,
            auto_offset_reset=self.cfg.start, fetch_max_bytes=self.cfg.max_fetch_bytes,
            max_partition_fetch_bytes=min(self.cfg.max_fetch_bytes, 1024**2),
            session_timeout_ms=int(self.cfg.session_timeout * 1000),
            # Three heartbeats per session, as Kafka's own defaults have it.
            heartbeat_interval_ms=max(100, int(self.cfg.session_timeout * 1000 / 3)),
            **({} if self._ssl is None
               else {"security_protocol": "SSL", "ssl_context": self._ssl}))
        self._consumer = consumer
        consumer.subscribe(topics=list(self.cfg.topics), listener=_rebalance_listener(self))
        await consumer.start()
        self.connected = True
        log.info("consuming", extra={"listener": self.name, "group": self.cfg.group,
                                     "topics": list(self.cfg.topics),
                                     "brokers": list(self.cfg.brokers)})
        committer = asyncio.get_running_loop().create_task(self._commit_every())
        try:
            while not self._stopping:
                if self.uncommitted >= self.cfg.max_uncommitted:
                    await self._wait_for_commits(consumer)
                    continue
                got = await consumer.getmany(timeout_ms=500,
                                             max_records=self.cfg.max_batch_records)
                for tp, records in got.items():
                    if records and not self._stopping:
                        await self._take(consumer, tp, records)
        finally:
            committer.cancel()

    async def drain(self, deadline: float) -> None:
        """Stop reading; let what was taken be secured (within the deadline, and at most
        `revoke_timeout`), commit it, and leave the group."""
        self._stopping = True
        loop = asyncio.get_running_loop()
        limit = min(deadline, loop.time() + self.cfg.revoke_timeout)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._done.wait(), max(0.0, limit - loop.time()))
        consumer = self._consumer
        if consumer is not None and self._parts:
            await self._wait_secured(list(self._parts), limit)
            await self._commit(list(self._parts))
            left = sum(p.uncommitted() for p in self._parts.values())
            if left:
                log.warning("stopping with records not yet secured; they are read again "
                            "after the next start", extra={"listener": self.name,
                                                           "records": left})
        # Leaving the group revokes the partitions: nothing is left to wait for then.
        self._parts.clear()
        await self._close_consumer()

    async def close(self) -> None:
        self._stopping = True
        await self._close_consumer()

    async def _close_consumer(self) -> None:
        consumer, self._consumer = self._consumer, None
        self.connected = False
        if consumer is None:
            return
        try:
            await asyncio.wait_for(consumer.stop(), 10)
        except Exception as e:  # closing: nothing more to do about it than say so
            log.warning("Kafka consumer did not stop cleanly", extra={
                "listener": self.name, "error": f"{type(e).__name__}: {e}"})
        self._parts.clear()
        self.uncommitted = 0

    # -- taking records --

    async def _take(self, consumer: Any, tp: Any, records: list[Any]) -> None:
        part = self._parts.get(tp)
        if part is None:
            return  # revoked while in flight: its new owner reads them
        batch, bad = self._batch_of(records)
        count = len(records)
        if bad:
            self._dead_letter(tp, bad)
        receipt = None
        if batch is not None:
            plan = self.router.plan(batch)
            if plan.blocking_full():
                room = await self._room_for(consumer, batch, plan)
                if room is None or self._parts.get(tp) is not part:
                    return  # stopping, or revoked meanwhile: read again, nothing lost
                plan = room
            receipt = Receipt()
            self.router.submit(plan, receipt)
            self.records += batch.count
        part.pending.append((records[-1].offset + 1, receipt, count))
        part.read_to = records[-1].offset + 1
        part.records += count
        self.uncommitted += count

    def _batch_of(self, records: list[Any]) -> tuple[Batch | None, list[tuple[Any, str]]]:
        """The batch of the records that can be read, and (record, why) of the others."""
        values = [r.value if r.value is not None else b"" for r in records]
        nbytes = sum(map(len, values))
        self.bytes_in += nbytes
        received = time.time()
        if self.cfg.format == "raw":
            return Batch(values, None, self.name, received, nbytes), []
        try:
            # Nearly every value is a JSON object: one C loop, and one look at the types.
            parsed = list(map(orjson.loads, values))
        except orjson.JSONDecodeError:
            parsed = None
        if parsed is not None and set(map(type, parsed)) == _DICT:
            objs: list[dict[str, Any]] = parsed
            bad: list[tuple[Any, str]] = []
        else:
            objs, bad = _objects_one_by_one(records, values)
        for obj in objs:
            # The Kafka output's json format calls the record's time `time`.
            if "time" in obj and "timestamp" not in obj:
                obj["timestamp"] = obj.pop("time")
        if not objs:
            return None, bad
        return Batch.from_objects(objs, severities_of(objs), self.name, received, nbytes), bad

    def _dead_letter(self, tp: Any, bad: list[tuple[Any, str]]) -> None:
        self.dead_lettered += len(bad)
        self.errors["unreadable"] += len(bad)
        path = self.dead_letter_path()
        try:
            dead_letter.append(path, (
                {"reason": why, "topic": r.topic, "partition": r.partition,
                 "offset": r.offset, "key": None if r.key is None else
                 r.key.decode("utf-8", "replace"),
                 "value": (r.value or b"").decode("utf-8", "replace")}
                for r, why in bad))
        except OSError as e:
            self.ratelog.error("dead_letter", "cannot write the dead-letter file; unreadable "
                               "records lost", listener=self.name, path=path, error=str(e),
                               records=len(bad))
            return
        self.ratelog.warning("unreadable", "records that cannot be read went to the "
                             "dead-letter file", listener=self.name, path=path,
                             topic=tp.topic, partition=tp.partition, records=len(bad),
                             first_offset=bad[0][0].offset, reason=bad[0][1])

    async def _room_for(self, consumer: Any, batch: Batch, plan: Plan) -> Plan | None:
        """Pause every partition until each full destination of the plan has room; the
        plan (made again if a reload came), or None when stopping."""
        self._pause(consumer)
        try:
            while full := plan.blocking_full():
                for buffer in full:
                    await self._wait_or_poll(consumer, buffer.wait_writable())
                    if self._stopping:
                        return None
                if plan.generation != self.router.generation:
                    plan = self.router.plan(batch, tap=False)
            return plan
        finally:
            self._resume(consumer)

    async def _wait_for_commits(self, consumer: Any) -> None:
        """Too much read and not committed: wait for the oldest to be secured, commit."""
        oldest = [r for p in self._parts.values() for _, r, _ in list(p.pending)[:1]
                  if r is not None]
        self._pause(consumer)
        try:
            if oldest:
                await self._wait_or_poll(consumer, oldest[0].wait_secured(1.0))
            await self._commit(list(self._parts))
        finally:
            self._resume(consumer)

    async def _wait_or_poll(self, consumer: Any, waiting: Any) -> None:
        """Await `waiting`, polling the (paused) consumer every second meanwhile: a member
        that does not poll within max.poll.interval is put out of its group."""
        task = asyncio.ensure_future(waiting)
        try:
            while not task.done() and not self._stopping:
                await asyncio.wait({task}, timeout=1.0)
                if not task.done():
                    await consumer.getmany(timeout_ms=0)
        finally:
            task.cancel()

    def _pause(self, consumer: Any) -> None:
        if not self._paused:
            self._paused = True
            self.pauses += 1
            consumer.pause(*consumer.assignment())

    def _resume(self, consumer: Any) -> None:
        if self._paused:
            self._paused = False
            consumer.resume(*consumer.assignment())

    # -- commits --

    async def _commit_every(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.commit_interval)
            await self._commit(list(self._parts))

    async def _commit(self, tps: list[Any]) -> None:
        """Commit, for each partition, the offset up to which everything is secured."""
        consumer = self._consumer
        if consumer is None:
            return
        async with self._commit_lock:
            offsets = {}
            for tp in tps:
                part = self._parts.get(tp)
                if part is None:
                    continue
                offset = part.secured_to()
                if offset is not None and (part.committed is None or offset > part.committed):
                    offsets[tp] = offset
            if not offsets:
                return
            try:
                await consumer.commit(offsets)
            except Exception as e:  # a rebalance under way, the coordinator moved: next time
                self.errors["commit"] += 1
                self.ratelog.warning("commit", "offset commit failed; tried again",
                                     listener=self.name, error=f"{type(e).__name__}: {e}")
                return
            self.commits += 1
            for tp, offset in offsets.items():
                part = self._parts.get(tp)
                if part is not None:
                    part.committed = offset
                    self.uncommitted -= part.forget_to(offset)

    async def _wait_secured(self, tps: list[Any], deadline: float) -> None:
        loop = asyncio.get_running_loop()
        for tp in tps:
            part = self._parts.get(tp)
            for _, receipt, _ in list(part.pending if part else ()):
                if receipt is not None and not receipt.is_secured \
                        and not await receipt.wait_secured(deadline - loop.time()):
                    return

    # -- rebalances --

    async def _revoked(self, revoked: Any) -> None:
        mine = [tp for tp in revoked if tp in self._parts]
        if not mine:
            return
        loop = asyncio.get_running_loop()
        await self._wait_secured(mine, loop.time() + self.cfg.revoke_timeout)
        await self._commit(mine)
        left = 0
        for tp in mine:
            part = self._parts.pop(tp)
            n = part.uncommitted()
            left += n
            self.uncommitted -= n
        self.reread += left
        log.info("partitions revoked", extra={
            "listener": self.name, "partitions": sorted(f"{tp.topic}-{tp.partition}"
                                                        for tp in mine),
            "read_again_by_the_next_owner": left})

    async def _assigned(self, assigned: Any) -> None:
        self.rebalances += 1
        consumer = self._consumer
        for tp in assigned:
            part = _Partition(tp.topic, tp.partition)
            if consumer is not None:
                try:
                    part.committed = await consumer.committed(tp)
                except Exception:  # only for the stats: read at the next commit anyway
                    part.committed = None
            self._parts[tp] = part
        if self._paused and consumer is not None and assigned:
            consumer.pause(*assigned)
        log.info("partitions assigned", extra={
            "listener": self.name,
            "partitions": sorted(f"{tp.topic}-{tp.partition}" for tp in assigned)})

    # -- figures --

    def stats(self) -> KafkaListenerStats:
        consumer = self._consumer
        partitions: dict[str, KafkaPartitionStats] = {}
        total_lag = 0
        for tp, part in sorted(self._parts.items(), key=lambda kv: kv[1].key):
            highwater = consumer.highwater(tp) if consumer is not None else None
            base = part.committed if part.committed is not None else part.read_to
            lag = highwater - base if highwater is not None and base is not None else None
            total_lag += lag or 0
            partitions[part.key] = {"topic": part.topic, "partition": part.partition,
                                    "committed": part.committed, "read_to": part.read_to,
                                    "highwater": highwater, "lag": lag,
                                    "uncommitted": part.uncommitted(),
                                    "records": part.records}
        return {"type": "kafka", "connections": len(self._parts),
                "accepted": self.records, "records": self.records, "bytes": self.bytes_in,
                "pauses": self.pauses, "errors": dict(self.errors),
                "group": self.cfg.group, "connected": self.connected,
                "partitions": partitions, "lag": total_lag, "backlog": {"records": total_lag},
                "rebalances": self.rebalances,
                "commits": self.commits, "uncommitted": self.uncommitted,
                "dead_lettered": self.dead_lettered, "reread": self.reread}
