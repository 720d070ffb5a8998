"""The disk buffer: spooled batches come back in order, after a reopen too; acks free them."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import pytest

from logd.buffers import codec
from logd.buffers.disk import ENTRY, ENTRY_BYTES, DiskBuffer, SpoolError
from logd.config import BufferConfig
from logd.outputs.clickhouse_columns import ColumnBatch
from logd.record import Batch

pytestmark = pytest.mark.timeout(30)


def cfg(**kw: Any) -> BufferConfig:
    kw.setdefault("max_bytes", 1024**2)
    kw.setdefault("fsync_interval", 0.0)
    return BufferConfig(type="disk", **kw)


def opened(path: Path, **kw: Any) -> DiskBuffer:
    buf = DiskBuffer(cfg(**kw), "out")
    buf.open(str(path))
    return buf


def batch(tag: str, n: int = 3) -> Batch:
    return Batch([f"{tag}-{i}".encode() for i in range(n)], None, "emitters", 1.5, 4 * n)


async def drain(buf: DiskBuffer, ack: bool = True) -> list[bytes]:
    out: list[bytes] = []
    while not buf.empty():
        lease = await buf.get(1 << 20, timeout=1)
        assert lease is not None
        for b in lease.batches:
            out.extend(b.payloads)
        if ack:
            buf.ack(lease)
    return out


def test_batches_survive_the_codec() -> None:
    lines = Batch.from_lines(b"a\nbb\n\n", 3, "lines", 2.0)
    framed = Batch([b"x", b"yz"], bytes([3, 7]), "frames", 3.0, 3)
    objs = Batch.from_objects([{"message": "m"}], bytes([4]), "http", 4.0, 0)
    for b in (lines, framed, objs):
        b.compact()
        kind, body = codec.encode(b)
        back = codec.decode(kind, body)
        assert back.payloads == b.payloads
        assert back.severity_bytes() == b.severity_bytes()
        assert (back.source, back.received, back.count) == (b.source, b.received, b.count)
    cols = ColumnBatch.of_batch(Batch.from_objects([{"message": "m", "app_id": "a"}],
                                                   bytes([6]), "http", 5.0, 0))
    kind, body = codec.encode(cols)
    assert codec.decode(kind, body).rows() == cols.rows()
    with pytest.raises(ValueError):
        codec.decode(99, body)
    from logd.outputs.kafka import KafkaBatch
    msgs = KafkaBatch.of_batch(Batch.from_objects([{"message": "m", "app_id": "a"},
                                                   {"message": "n"}], bytes([6, 6]), "http",
                                                  5.0, 0), key=True, fmt="raw")
    assert [m[0] for m in msgs.messages] == [b"a", b"http"]
    kind, body = codec.encode(msgs)
    assert codec.decode(kind, body).messages == msgs.messages
    unkeyed = KafkaBatch.of_batch(lines, key=False, fmt="raw")
    kind, body = codec.encode(unkeyed)
    assert codec.decode(kind, body).messages == [(None, b"a", 2.0), (None, b"bb", 2.0),
                                                 (None, b"", 2.0)]


async def test_in_order_and_acked(tmp_path: Path) -> None:
    buf = opened(tmp_path)
    for t in "abc":
        assert buf.put(batch(t)) is False
    assert buf.queued_records == 9 and buf.accepted_records == 9
    assert await drain(buf) == [f"{t}-{i}".encode() for t in "abc" for i in range(3)]
    assert buf.queued_records == 0 and buf.queued_bytes == 0
    buf.release()


@pytest.mark.parametrize("memory_bytes", [0, 16 * 1024**2])
async def test_what_was_not_acked_comes_back_after_a_reopen(tmp_path: Path,
                                                            memory_bytes: int) -> None:
    buf = opened(tmp_path, memory_bytes=memory_bytes)
    for t in "abcd":
        buf.put(batch(t))
    first = await buf.get(1, timeout=1)  # one batch
    assert first is not None and first.batches[0].payloads[0] == b"a-0"
    buf.ack(first)
    second = await buf.get(1, timeout=1)
    assert second is not None  # taken, never acked: the process "dies" here
    buf.release()
    again = opened(tmp_path, memory_bytes=memory_bytes)
    assert again.replayed_records == 9 and again.queued_records == 9
    assert await drain(again) == [f"{t}-{i}".encode() for t in "bcd" for i in range(3)]
    again.release()
    again = opened(tmp_path)
    assert again.queued_records == 0
    again.release()


async def test_segments_rotate_and_are_deleted_once_acked(tmp_path: Path) -> None:
    buf = opened(tmp_path, max_bytes=8 * 1024**2)  # 1 MiB segments
    big = [Batch([bytes([65 + i % 26]) * 100_000], None, "e", 0.0, 100_000) for i in range(30)]
    for b in big:
        buf.put(b)
    assert len(list(tmp_path.glob("*.seg"))) >= 3
    got = await drain(buf)
    assert got == [b.payloads[0] for b in big]
    assert len(list(tmp_path.glob("*.seg"))) == 1
    buf.release()


async def test_a_torn_tail_is_cut_off(tmp_path: Path) -> None:
    buf = opened(tmp_path)
    buf.put(batch("a"))
    buf.put(batch("b"))
    buf.release()
    seg = next(tmp_path.glob("*.seg"))
    size = seg.stat().st_size
    with open(seg, "ab") as f:  # half an entry, as a crash mid-write would leave
        f.write(ENTRY.pack(0x474C, 1, 0, 500, 7, 0) + b"x" * 100)
    again = opened(tmp_path)
    assert seg.stat().st_size == size
    assert again.queued_records == 6
    again.put(batch("c"))
    assert await drain(again) == [f"{t}-{i}".encode() for t in "abc" for i in range(3)]
    again.release()


async def test_a_damaged_entry_is_skipped_and_counted(tmp_path: Path) -> None:
    buf = opened(tmp_path, memory_bytes=0)
    for t in "abc":
        buf.put(batch(t))
    buf.release()
    seg = next(tmp_path.glob("*.seg"))
    data = bytearray(seg.read_bytes())
    entry = len(data) // 3
    data[entry + ENTRY.size + 5] ^= 0xFF  # inside the second entry's body
    seg.write_bytes(bytes(data))
    again = opened(tmp_path, memory_bytes=0)
    assert await drain(again) == [f"{t}-{i}".encode() for t in "ac" for i in range(3)]
    assert again.corrupt_records == 3
    assert again.queued_records == 0 and again.queued_bytes == 0
    again.release()


async def test_when_full_block_and_drop_newest(tmp_path: Path) -> None:
    payload = [b"x" * 2100]  # entries of ~2.1 KiB: two fill 4 KiB
    blocking = opened(tmp_path / "block", max_bytes=4096)
    assert blocking.put(Batch(list(payload), None, "e", 0.0, 2000)) is False
    assert blocking.put(Batch(list(payload), None, "e", 0.0, 2000)) is True  # taken, pause
    assert blocking.full and blocking.queued_records == 2
    lease = await blocking.get(1 << 20, timeout=1)
    assert lease is not None
    blocking.ack(lease)
    await blocking.wait_writable()
    dropping = opened(tmp_path / "drop", max_bytes=4096, when_full="drop_newest")
    assert dropping.put(Batch(list(payload), None, "e", 0.0, 2000)) is False
    assert dropping.put(Batch(list(payload), None, "e", 0.0, 2000)) is False
    assert (dropping.accepted_records, dropping.dropped_records) == (1, 1)
    blocking.release()
    dropping.release()


def test_one_process_per_spool(tmp_path: Path) -> None:
    first = opened(tmp_path)
    with pytest.raises(SpoolError, match="in use"):
        opened(tmp_path)
    first.release()
    opened(tmp_path).release()


def test_an_unwritable_directory_is_a_spool_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SpoolError):
        opened(blocker / "spool")


async def test_rewind_reads_unacked_again_and_ignores_old_acks(tmp_path: Path) -> None:
    buf = opened(tmp_path)
    for t in "ab":
        buf.put(batch(t))
    held = await buf.get(1 << 20, timeout=1)
    assert held is not None and buf.empty()
    buf.rewind()
    buf.ack(held)  # the previous writer's late ack: ignored
    assert buf.queued_records == 6
    assert await drain(buf) == [f"{t}-{i}".encode() for t in "ab" for i in range(3)]
    buf.release()


async def test_acks_out_of_order_advance_once_contiguous(tmp_path: Path) -> None:
    buf = opened(tmp_path)
    for t in "abc":
        buf.put(batch(t))
    leases = [await buf.get(1, timeout=1) for _ in range(3)]
    assert all(lease is not None for lease in leases)
    buf.ack(leases[2])  # type: ignore[arg-type]
    buf.ack(leases[1])  # type: ignore[arg-type]
    buf.release()
    buf = opened(tmp_path)
    assert buf.queued_records == 9  # nothing before them was acked
    leases = [await buf.get(1, timeout=1) for _ in range(3)]
    buf.ack(leases[1])  # type: ignore[arg-type]
    buf.ack(leases[0])  # type: ignore[arg-type]
    buf.release()
    buf = opened(tmp_path)
    assert buf.queued_records == 3
    buf.release()


async def test_fsync_interval_syncs_after_a_write(tmp_path: Path) -> None:
    buf = opened(tmp_path, fsync_interval=0.01)
    buf.put(batch("a"))
    assert buf._sync_handle is not None  # a sync is due
    buf.release()
    assert buf._sync_handle is None
    assert os.listdir(tmp_path)


async def test_an_ack_ahead_of_the_data_starts_at_the_real_end(tmp_path: Path) -> None:
    # After a power loss the synced ack file can point past what reached the segment.
    buf = opened(tmp_path)
    buf.put(batch("a"))
    buf.release()
    (tmp_path / "ack").write_bytes(struct.pack("<QQ", 1, 10_000))
    again = opened(tmp_path, memory_bytes=0)
    assert again.queued_records == 0
    again.put(batch("b"))
    assert await drain(again) == [b"b-0", b"b-1", b"b-2"]
    again.release()


def test_a_spool_that_fails_to_open_lets_go_of_its_lock(tmp_path: Path) -> None:
    (tmp_path / "ack").mkdir()  # opening the ack file fails
    with pytest.raises(SpoolError):
        opened(tmp_path)
    (tmp_path / "ack").rmdir()
    opened(tmp_path).release()  # not "in use by another process"


async def test_a_segment_that_cannot_be_made_drops_the_batch_and_counts_it(
        tmp_path: Path) -> None:
    buf = opened(tmp_path, max_bytes=8 * 1024**2)  # 1 MiB segments
    buf.put(Batch([b"x" * 900_000], None, "e", 0.0, 900_000))
    (tmp_path / "0000000000000002.seg").mkdir()  # the next segment's name is taken
    assert buf.put(Batch([b"y" * 900_000], None, "e", 0.0, 900_000)) is False
    assert (buf.dropped_records, buf.write_errors, buf.queued_records) == (1, 1, 1)
    buf.release()


async def test_rewind_counts_acks_that_came_early(tmp_path: Path) -> None:
    buf = opened(tmp_path)
    for t in "abc":
        buf.put(batch(t))
    leases = [await buf.get(1, timeout=1) for _ in range(3)]
    buf.ack(leases[2])  # type: ignore[arg-type]
    buf.rewind()
    assert buf.queued_records == 9
    assert len(await drain(buf)) == 9 and buf.queued_records == 0
    buf.release()


async def test_reconfigure_changes_the_bound_of_the_same_spool(tmp_path: Path) -> None:
    buf = opened(tmp_path, max_bytes=1024**2)
    buf.put(Batch([b"x" * 5000], None, "e", 0.0, 5000))
    assert not buf.full
    buf.reconfigure(cfg(max_bytes=4096))
    assert buf.full and buf.max_bytes == 4096
    buf.release()


async def test_a_damaged_header_while_running_skips_the_rest_of_the_segment(
        tmp_path: Path) -> None:
    buf = opened(tmp_path, memory_bytes=0)
    for t in "ab":
        buf.put(batch(t))
    seg = next(tmp_path.glob("*.seg"))
    with open(seg, "r+b") as f:
        f.write(b"\x00\x00")  # the first entry's magic
    assert await buf.get(1 << 20, timeout=1) is None  # nothing readable, and no spinning
    assert buf.empty() and buf.corrupt_records == 0
    buf.put(batch("c"))  # written after the damaged region: read as usual
    assert await drain(buf) == [b"c-0", b"c-1", b"c-2"]
    buf.release()


async def test_a_spool_refuses_another_output_types_records(tmp_path: Path) -> None:
    empty = DiskBuffer(cfg(), "out")
    empty.open(str(tmp_path), "postgres")
    empty.release()
    buf = DiskBuffer(cfg(), "out")
    buf.open(str(tmp_path), "clickhouse")  # an empty spool takes the new type
    buf.put(batch("a"))
    buf.release()
    other = DiskBuffer(cfg(), "out")
    with pytest.raises(SpoolError, match="holds records of a clickhouse output"):
        other.open(str(tmp_path), "kafka")
    same = DiskBuffer(cfg(), "out")
    same.open(str(tmp_path), "clickhouse")  # and the lock was let go
    same.release()


async def test_an_output_puts_a_large_batch_in_slices_only_into_a_spool(tmp_path: Path) -> None:
    from logd.outputs.clickhouse import ClickHouseOutput, ClickHouseOutputConfig
    from logd.outputs.postgres import PostgresOutput, PostgresOutputConfig

    objs = [{"message": f"m{i}" + "x" * 200, "app_id": "a"} for i in range(1000)]
    puts: list[Any] = []

    def counting(out: Any) -> None:
        put = out.buffer.put
        out.buffer.put = lambda b: puts.append(b) or put(b)

    ch = ClickHouseOutput(ClickHouseOutputConfig(name="ch", buffer=cfg()))
    ch.open_buffer(str(tmp_path))
    counting(ch)
    ch.submit(Batch.from_objects(objs, bytes([6]) * 1000, "http", 1.0, 230_000))
    assert len(puts) >= 3 and all(isinstance(p, ColumnBatch) for p in puts)
    assert all(p.nbytes < 2 * ENTRY_BYTES for p in puts)
    got = []
    while not ch.buffer.empty():
        lease = await ch.buffer.get(1 << 30, timeout=1)
        got.extend(row for b in lease.batches for row in b.rows())
        ch.buffer.ack(lease)
    assert [r[2] for r in got] == [o["message"] for o in objs]
    ch.buffer.release()
    puts.clear()
    pg = PostgresOutput(PostgresOutputConfig(name="pg"))  # a memory buffer: one put
    counting(pg)
    pg.submit(Batch.from_objects(objs, bytes([6]) * 1000, "http", 1.0, 230_000))
    assert len(puts) == 1 and puts[0].count == 1000
