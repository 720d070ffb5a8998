"""logd.buffers.memory.MemoryBuffer: bound, block / drop_newest, leases and acks."""

from __future__ import annotations

import asyncio
from typing import Any

from logd.buffers.memory import RECORD_OVERHEAD, MemoryBuffer, batch_cost
from logd.config import BufferConfig
from logd.record import Batch

MAX = 10_000


def batch(records: int = 1, size: int = 959, tag: str = "x") -> Batch:
    """A batch of `records` payloads of `size` bytes; cost is records * (size + overhead)."""
    payloads = [tag.encode() * size for _ in range(records)]
    return Batch(payloads, None, "emitters", 0.0, records * size)


def make(when_full: str = "block", max_bytes: int = MAX) -> MemoryBuffer:
    return MemoryBuffer(BufferConfig(max_bytes=max_bytes, when_full=when_full), "out")


async def still_pending(task: asyncio.Task[Any]) -> bool:
    """Whether `task` is still waiting after the loop has run everything that was ready."""
    done, _ = await asyncio.wait({task}, timeout=0.02)
    return not done


def test_batch_cost_counts_payload_bytes_and_per_record_overhead() -> None:
    assert batch_cost(batch(3, 100)) == 300 + 3 * RECORD_OVERHEAD
    assert batch_cost(batch(1, 959)) == 1000


def test_block_put_returns_true_once_full_but_keeps_the_batch() -> None:
    buf = make("block")
    results = [buf.put(batch()) for _ in range(10)]
    assert results == [False] * 9 + [True]
    assert buf.full
    assert buf.put(batch()) is True         # still taken: it was already read
    assert buf.queued_bytes == 11_000
    assert buf.queued_records == 11
    assert buf.accepted_records == 11
    assert buf.dropped_records == 0
    assert buf.peak_cost == 11_000


async def test_wait_writable_blocks_until_acks_bring_cost_to_three_quarters() -> None:
    buf = make("block")
    for _ in range(10):
        buf.put(batch())
    waiter = asyncio.create_task(buf.wait_writable())
    assert await still_pending(waiter)

    lease = await buf.get(max_cost=2000, timeout=1.0)
    assert lease is not None and lease.cost == 2000
    buf.ack(lease)                           # 8000 > 7500: still paused
    assert await still_pending(waiter)

    lease = await buf.get(max_cost=500, timeout=1.0)   # at least one batch even if over
    assert lease is not None and lease.cost == 1000
    buf.ack(lease)                           # 7000 <= 7500: resume
    await asyncio.wait_for(waiter, timeout=2.0)
    assert buf.queued_bytes == 7000
    assert not buf.full


async def test_wait_writable_returns_at_once_when_not_full() -> None:
    buf = make("block")
    buf.put(batch())
    await asyncio.wait_for(buf.wait_writable(), timeout=2.0)
    assert buf.queued_records == 1


def test_drop_newest_drops_whole_batches_that_do_not_fit() -> None:
    buf = make("drop_newest")
    assert buf.put(batch(records=9)) is False           # 9000
    assert buf.put(batch(records=2)) is False           # 11000 > 10000: dropped whole
    assert buf.dropped_records == 2
    assert buf.dropped_bytes == 2 * 959
    assert buf.put(batch(records=1)) is False           # exactly 10000 fits
    assert buf.put(batch(records=1, size=1)) is False   # dropped
    assert buf.dropped_records == 3
    assert buf.accepted_records == 10
    assert buf.queued_records == 10
    assert buf.queued_bytes == MAX


async def test_get_returns_none_on_timeout() -> None:
    buf = make()
    assert await buf.get(max_cost=1000, timeout=0.01) is None
    assert buf.empty()


async def test_get_returns_lease_of_batches_in_order_within_max_cost() -> None:
    buf = make()
    batches = [batch(tag=t) for t in "abcd"]
    for b in batches:
        buf.put(b)
    lease = await buf.get(max_cost=2500, timeout=1.0)
    assert lease is not None
    assert lease.batches == batches[:2]
    assert lease.cost == 2000
    assert lease.records == 2
    rest = await buf.get(max_cost=10_000, timeout=None)
    assert rest is not None and rest.batches == batches[2:]


async def test_get_waiting_for_data_wakes_on_put() -> None:
    buf = make()
    getter = asyncio.create_task(buf.get(max_cost=10_000, timeout=None))
    assert await still_pending(getter)
    b = batch(records=3)
    buf.put(b)
    lease = await asyncio.wait_for(getter, timeout=2.0)
    assert lease is not None and lease.batches == [b]


async def test_queued_records_count_until_acked() -> None:
    buf = make()
    buf.put(batch(records=2))
    buf.put(batch(records=3))
    assert buf.queued_records == 5
    lease = await buf.get(max_cost=2000, timeout=1.0)
    assert lease is not None and lease.records == 2
    assert buf.queued_records == 5          # leased records still count
    buf.ack(lease)
    assert buf.queued_records == 3
    assert buf.queued_bytes == 3000
    lease = await buf.get(max_cost=10_000, timeout=1.0)
    assert lease is not None
    buf.ack(lease)
    assert buf.queued_records == 0
    assert buf.queued_bytes == 0
    assert buf.empty()


async def test_close_wakes_a_waiting_consumer_and_paused_producers() -> None:
    buf = make("block")
    getter = asyncio.create_task(buf.get(max_cost=1000, timeout=None))
    assert await still_pending(getter)
    buf.close()
    assert await asyncio.wait_for(getter, timeout=2.0) is None

    full = make("block", max_bytes=4096)
    assert full.put(batch(records=5)) is True
    waiter = asyncio.create_task(full.wait_writable())
    assert await still_pending(waiter)
    full.close()
    await asyncio.wait_for(waiter, timeout=2.0)
    assert full.queued_records == 5


def test_a_batch_is_compacted_as_it_enters_the_buffer() -> None:
    buf = make()
    b = Batch.from_objects([{"message": "x" * 100}], bytes([6]), "http", 0.0, nbytes=10_000)
    buf.put(b)
    assert b._fields is None, "parsed objects are not kept while the batch waits"
    assert buf.queued_bytes == batch_cost(b) == 114 + RECORD_OVERHEAD
