"""The disk buffer: spooled batches come back in order, after a reopen too; acks free them."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import random
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest

from logd.buffers import codec, disk
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


def entries(seg: Path) -> list[tuple[int, int, int, int]]:
    """(offset, kind, records, bytes) of each entry in a segment written by this version."""
    data = seg.read_bytes()
    out = []
    off = 0
    while off < len(data):
        _magic, kind, _flags, length, count, _before, _crc, _hcrc = ENTRY.unpack_from(data, off)
        out.append((off, kind, count, ENTRY.size + length))
        off += ENTRY.size + length
    return out


def logged(caplog: pytest.LogCaptureFixture, text: str) -> list[Any]:
    return [r for r in caplog.records if text in r.getMessage()]


def segments(path: Path) -> list[Path]:
    return sorted(path.glob("*.seg"))


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
        f.write(disk._entry_head(1, 500, 7, 6, 0) + b"x" * 100)
    again = opened(tmp_path)
    assert seg.stat().st_size == size
    assert again.queued_records == 6
    assert again.corrupt_records == 7  # its header says what was lost
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
    meta, _first, second, _third = entries(seg)
    assert meta[1] == disk.META and meta[2] == 0
    data[second[0] + ENTRY.size + 5] ^= 0xFF  # inside the second entry's body
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


async def test_an_ack_past_the_data_is_not_trusted(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    # After a power loss the synced ack file can point past what reached the segment: what
    # is there is sent again rather than taken for sent.
    buf = opened(tmp_path)
    buf.put(batch("a"))
    lease = await buf.get(1 << 20, timeout=1)
    buf.ack(lease)  # type: ignore[arg-type]
    buf.release()
    for past in (struct.pack("<QQ", 1, 10_000), _ack(1, 10_000, 3), _ack(1, 44, 99)):
        (tmp_path / "ack").write_bytes(past)
        caplog.clear()
        again = opened(tmp_path, memory_bytes=0)
        assert again.queued_records == 3 and again.stats()["ack_damaged"] == 1
        (said,) = logged(caplog, "records may be sent twice")
        assert said.levelno == logging.ERROR and said.path == str(tmp_path / "ack")
        assert await drain(again, ack=False) == [b"a-0", b"a-1", b"a-2"]
        again.release()


def test_a_spool_that_fails_to_open_lets_go_of_its_lock(tmp_path: Path) -> None:
    (tmp_path / "ack").mkdir()  # opening the ack file fails
    with pytest.raises(SpoolError):
        opened(tmp_path)
    (tmp_path / "ack").rmdir()
    opened(tmp_path).release()  # not "in use by another process"


async def test_a_segment_that_cannot_be_made_holds_the_batch_until_it_can(
        tmp_path: Path) -> None:
    buf = opened(tmp_path, max_bytes=8 * 1024**2)  # 1 MiB segments
    buf.put(Batch([b"x" * 900_000], None, "e", 0.0, 900_000))
    (tmp_path / "0000000000000002.seg").mkdir()  # the next segment's name is taken
    assert buf.put(Batch([b"y" * 900_000], None, "e", 0.0, 900_000)) is True
    assert (buf.dropped_records, buf.write_errors, buf.queued_records) == (0, 1, 2)
    assert buf.volatile_records == 1 and buf.problem is not None
    (tmp_path / "0000000000000002.seg").rmdir()
    await asyncio.wait_for(buf.wait_writable(), 5)  # the retry wrote it
    assert buf.volatile_records == 0 and buf.problem is None
    assert (tmp_path / "0000000000000002.seg").stat().st_size > 900_000
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


async def test_a_damaged_header_while_running_skips_only_that_entry(tmp_path: Path) -> None:
    buf = opened(tmp_path, memory_bytes=0)
    for t in "abc":
        buf.put(batch(t))
    seg = next(tmp_path.glob("*.seg"))
    second = entries(seg)[2][0]
    with open(seg, "r+b") as f:
        f.seek(second)
        f.write(b"\x00\x00")  # the second entry's magic
    assert await drain(buf) == [f"{t}-{i}".encode() for t in "ac" for i in range(3)]
    assert buf.empty() and buf.corrupt_records == 3 and buf.queued_records == 0
    buf.put(batch("d"))
    assert await drain(buf) == [b"d-0", b"d-1", b"d-2"]
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
        out.buffer.put = lambda b, receipt=None: puts.append(b) or put(b, receipt)

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
    from logd.config import DatabaseBufferConfig
    pg = PostgresOutput(PostgresOutputConfig(  # a memory buffer: one put
        name="pg", buffer=DatabaseBufferConfig(type="memory")))
    counting(pg)
    pg.submit(Batch.from_objects(objs, bytes([6]) * 1000, "http", 1.0, 230_000))
    assert len(puts) == 1 and puts[0].count == 1000


def _ack(seq: int, off: int, total: int) -> bytes:
    head = struct.pack("<4sQQQ", b"LGA2", seq, off, total)
    return head + struct.pack("<I", zlib.crc32(head))


# -- damage --

def big(tag: str, n: int = 10, size: int = 10_000) -> Batch:
    """A batch of one entry of about n * size bytes: a few of them fill a 1 MiB segment."""
    return Batch([f"{tag}-{i}-".encode() + b"x" * size for i in range(n)], None, "e", 1.0,
                 n * size)


def tags(payloads: list[bytes]) -> list[str]:
    return [p.split(b"-x", 1)[0].rsplit(b"-", 1)[0].decode() for p in payloads[::10]]


async def spool_of_segments(path: Path, batches: int = 40) -> DiskBuffer:
    """A spool of several 1 MiB segments, of `big` batches t0, t1, ..."""
    buf = opened(path, max_bytes=8 * 1024**2, memory_bytes=0)
    for i in range(batches):
        buf.put(big(f"t{i}"))
    assert len(segments(path)) >= batches // 10
    return buf


def records_in(seg: Path) -> int:
    return sum(count for _, _, count, _ in entries(seg))


@pytest.mark.parametrize("damage", ["random 32 bytes", "random 16 bytes", "truncated",
                                    "wrong size", "not on an entry", "wrong count"])
async def test_a_damaged_ack_replays_from_the_oldest_segment_and_deletes_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str) -> None:
    buf = await spool_of_segments(tmp_path)
    for _ in range(12):  # past the first segment: it is deleted, the ack is in the second
        lease = await buf.get(1, timeout=1)
        buf.ack(lease)  # type: ignore[arg-type]
    buf.release()
    left = segments(tmp_path)
    assert left[0].name == "0000000000000002.seg"
    good = (tmp_path / "ack").read_bytes()
    _, seq, off, total, _ = disk.ACK.unpack(good)
    rng = random.Random(damage)
    (tmp_path / "ack").write_bytes({
        "random 32 bytes": rng.randbytes(32),
        "random 16 bytes": rng.randbytes(16),
        "truncated": good[:20],
        "wrong size": good + b"\0",
        "not on an entry": _ack(seq, off + 8, total),
        "wrong count": _ack(seq, off, total + 1),
    }[damage])
    again = opened(tmp_path, max_bytes=8 * 1024**2, memory_bytes=0)
    assert segments(tmp_path) == left, "no segment deleted on the word of a damaged ack"
    assert again.queued_records == sum(records_in(s) for s in left)
    assert again.stats()["ack_damaged"] == 1
    (said,) = logged(caplog, "ack file cannot be trusted")
    assert said.levelno == logging.ERROR and said.path == str(tmp_path / "ack")
    assert "records may be sent twice" in said.getMessage()
    got = tags(await drain(again))
    assert got == [f"t{i}" for i in range(40 - len(got), 40)]
    again.release()
    caplog.clear()
    opened(tmp_path).release()  # the ack is whole again: nothing more to say
    assert not logged(caplog, "ack file")


@pytest.mark.parametrize("which", ["oldest", "middle", "acked", "two"])
async def test_missing_segments_are_logged_and_counted_with_their_records(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, which: str) -> None:
    buf = await spool_of_segments(tmp_path)
    acked = 0
    if which == "acked":  # the ack is in segment 2, a few entries in
        for _ in range(12):
            lease = await buf.get(1, timeout=1)
            acked += lease.records  # type: ignore[union-attr]
            buf.ack(lease)  # type: ignore[arg-type]
    buf.release()
    segs = segments(tmp_path)
    gone = {"oldest": segs[:1], "middle": segs[2:3], "acked": segs[:1], "two": segs[1:3]}[which]
    lost = sum(records_in(s) for s in gone)
    if which == "acked":  # what of it was sent is not lost
        in_deleted_first = 400 - sum(records_in(s) for s in segs)
        lost -= acked - in_deleted_first
    waiting = 400 - acked
    for s in gone:
        s.unlink()
    again = opened(tmp_path, max_bytes=8 * 1024**2, memory_bytes=0)
    stats = again.stats()
    assert (stats["missing_segments"], stats["lost_records"]) == (len(gone), lost)
    (said,) = logged(caplog, "spool segments are missing")
    assert said.levelno == logging.ERROR
    assert said.segments == [s.name for s in gone] and said.records == lost
    assert again.queued_records == waiting - lost
    assert len(await drain(again)) == waiting - lost
    again.release()


@pytest.mark.parametrize("content", [b"\xff\xfe\x00\x9c\x80garbage\n", b"click house!\n",
                                     b"x" * 300])
def test_a_garbage_type_file_is_a_clear_start_error(tmp_path: Path, content: bytes) -> None:
    from logd.component import StartError
    from logd.outputs.clickhouse import ClickHouseOutput, ClickHouseOutputConfig

    spool = tmp_path / "spool" / "ch"
    spool.mkdir(parents=True)
    (spool / "type").write_bytes(content)
    buf = DiskBuffer(cfg(), "ch")
    with pytest.raises(SpoolError) as caught:
        buf.open(str(spool), "clickhouse")
    text = str(caught.value)
    assert str(spool / "type") in text and repr(content[:40]) in text
    assert "write the output type (clickhouse) into it, or move the spool away" in text
    out = ClickHouseOutput(ClickHouseOutputConfig(name="ch", buffer=cfg()))
    with pytest.raises(StartError, match=r"^output ch: spool .*type"):
        out.open_buffer(str(tmp_path))  # and the lock was let go
    (spool / "type").write_text("clickhouse\n")  # the fix the message gives
    out.open_buffer(str(tmp_path))
    out.buffer.release()


async def test_a_damaged_header_mid_segment_loses_only_that_entry_at_open(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    buf = opened(tmp_path, memory_bytes=0)
    for t in "abcde":
        buf.put(batch(t))
    buf.release()
    seg = next(tmp_path.glob("*.seg"))
    size = seg.stat().st_size
    _meta, _a, b, c, _d, _e = entries(seg)
    data = bytearray(seg.read_bytes())
    data[b[0] + 6:c[0] + 10] = os.urandom(c[0] + 10 - b[0] - 6)  # b's header on, c's header
    seg.write_bytes(bytes(data))
    again = opened(tmp_path, memory_bytes=0)
    assert seg.stat().st_size == size, "nothing cut off: valid entries follow"
    assert again.queued_records == 15
    assert await drain(again) == [f"{t}-{i}".encode() for t in "ade" for i in range(3)]
    assert again.corrupt_records == 6  # b's and c's, known from the counts around them
    assert again.queued_records == 0
    said = logged(caplog, "spool entry unreadable")
    assert said and said[0].records == 6 and said[0].path == str(seg)
    again.release()


async def test_a_segment_with_a_damaged_end_is_read_to_it_and_counted(tmp_path: Path) -> None:
    buf = await spool_of_segments(tmp_path, batches=15)
    buf.release()
    first = segments(tmp_path)[0]
    last = entries(first)[-1]
    with open(first, "r+b") as f:  # the last entry of a segment that is not the newest
        f.seek(last[0])
        f.write(b"\0" * 30)
    again = opened(tmp_path, max_bytes=8 * 1024**2, memory_bytes=0)
    assert again.queued_records == 150 and first.stat().st_size > last[0]
    got = tags(await drain(again))
    assert len(got) == 14 and again.corrupt_records == last[2] == 10
    again.release()


def legacy_spool(path: Path, segs: dict[int, list[Batch]], ack: tuple[int, int] | None) -> None:
    """A spool as logd wrote it before entry checksums and counts: 16-byte headers
    (magic "LG", kind, flags, length, records, crc32 of the body), a 16-byte ack."""
    path.mkdir(parents=True, exist_ok=True)
    for seq, batches in segs.items():
        with open(path / f"{seq:016d}.seg", "wb") as f:
            for b in batches:
                b.compact()
                kind, body = codec.encode(b)
                f.write(struct.pack("<HBBIII", 0x474C, kind, 0, len(body), b.count,
                                    zlib.crc32(body)) + body)
    if ack is not None:
        (path / "ack").write_bytes(struct.pack("<QQ", *ack))
    (path / "lock").touch()


async def test_an_old_format_spool_is_replayed_after_an_upgrade(tmp_path: Path) -> None:
    first_entry = 16 + len(codec.encode(batch("a"))[1])
    legacy_spool(tmp_path, {3: [batch("a"), batch("b"), batch("c")], 4: [batch("d")]},
                 ack=(3, first_entry))  # "a" was sent
    buf = opened(tmp_path, memory_bytes=0)
    assert buf.queued_records == 9 and buf.stats()["ack_damaged"] == 0
    buf.put(batch("e"))  # into a new segment, in the new format
    assert entries(tmp_path / "0000000000000005.seg")[1][2] == 3
    lease = await buf.get(1, timeout=1)  # "b"
    buf.ack(lease)  # type: ignore[arg-type]
    buf.release()
    again = opened(tmp_path, memory_bytes=0)  # the new ack in an old segment
    assert again.queued_records == 9 and again.stats()["ack_damaged"] == 0
    assert await drain(again) == [f"{t}-{i}".encode() for t in "cde" for i in range(3)]
    again.release()
    assert [s.name for s in segments(tmp_path)] == ["0000000000000005.seg"]
    assert opened(tmp_path).queued_records == 0


async def test_an_old_format_spool_with_damage_keeps_what_holds_up(tmp_path: Path) -> None:
    legacy_spool(tmp_path, {1: [batch("a"), batch("b"), batch("c"), batch("d")]}, ack=None)
    seg = tmp_path / "0000000000000001.seg"
    data = bytearray(seg.read_bytes())
    one = len(data) // 4
    data[one:one + 2] = b"\0\0"  # b's header
    data[3 * one + 20] ^= 0xFF  # d's body
    seg.write_bytes(bytes(data))
    buf = opened(tmp_path, memory_bytes=0)
    assert seg.stat().st_size == len(data), "an old segment is not cut"
    assert await drain(buf) == [f"{t}-{i}".encode() for t in "ac" for i in range(3)]
    assert buf.corrupt_records == 3  # d's; b's header is gone, and old entries have no counts
    assert buf.queued_records == 0
    buf.release()


# -- when the spool cannot be written --

class FullDisk:
    """The spool's write seam, failing with ENOSPC while `full`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.full = False
        self.failed = 0
        real = disk._write_all

        def write_all(fd: int, *parts: bytes) -> None:
            if self.full:
                self.failed += 1
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real(fd, *parts)
        monkeypatch.setattr(disk, "_write_all", write_all)


async def test_a_write_failure_holds_batches_in_order_and_blocks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="logd.spool")
    fs = FullDisk(monkeypatch)
    buf = opened(tmp_path)
    assert buf.put(batch("a")) is False
    fs.full = True
    assert buf.put(batch("b")) is True  # held, and the caller pauses
    assert buf.full and not buf._writable.is_set()
    assert buf.put(batch("c")) is True  # behind b, without trying the disk
    assert fs.failed == 1
    stats = buf.stats()
    assert (stats["held_records"], stats["spool_write_errors"], buf.dropped_records) == (6, 1, 0)
    assert buf.queued_records == 9 and buf.volatile_records == 6
    assert buf.problem == ("cannot write the spool: No space left on device (ENOSPC); "
                           "2 batches held in memory")
    assert stats["problem"] == buf.problem
    (said,) = logged(caplog, "cannot write the spool")
    assert said.levelno == logging.ERROR and said.errno == "ENOSPC"
    assert said.path == str(segments(tmp_path)[0])
    ack_before = (tmp_path / "ack").read_bytes()
    # A healthy writer keeps flowing: what is on disk, then what is held, from memory.
    assert await drain(buf) == [f"{t}-{i}".encode() for t in "abc" for i in range(3)]
    assert buf.empty() and buf.queued_records == 0 and buf.volatile_records == 0
    assert (tmp_path / "ack").read_bytes() != ack_before  # "a" was acknowledged on disk...
    acked = (tmp_path / "ack").read_bytes()
    fs.full = False
    assert buf.put(batch("d")) is False  # writing works again
    assert buf.problem is None and not buf.full
    (back,) = logged(caplog, "writing the spool works again")
    assert back.levelno == logging.INFO
    assert await drain(buf, ack=False) == [b"d-0", b"d-1", b"d-2"]
    buf.release()
    # ... and b and c, sent from memory, did not move it: d comes next after a restart.
    assert (tmp_path / "ack").read_bytes() == acked
    again = opened(tmp_path)
    assert await drain(again) == [b"d-0", b"d-1", b"d-2"]
    again.release()


async def test_held_batches_are_written_once_space_returns_and_nothing_is_lost(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="logd.spool")
    fs = FullDisk(monkeypatch)
    buf = opened(tmp_path)
    buf.put(batch("a"))
    fs.full = True
    for t in "bcd":
        assert buf.put(batch(t)) is True
    lease = await buf.get(1 << 20, timeout=1)  # "a", from disk
    assert lease is not None and lease.records == 3 and buf.full
    fs.full = False
    buf.ack(lease)  # an ack that frees space: the held batches are written at once
    assert buf._writable.is_set() and not buf.full
    assert buf.volatile_records == 0 and buf.problem is None and buf.queued_records == 9
    (back,) = logged(caplog, "writing the spool works again")
    assert back.written_from_memory == 3
    buf.release()
    again = opened(tmp_path)
    assert await drain(again) == [f"{t}-{i}".encode() for t in "bcd" for i in range(3)]
    again.release()


async def test_a_retry_writes_held_batches_without_an_ack(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fs = FullDisk(monkeypatch)
    buf = opened(tmp_path)
    fs.full = True
    assert buf.put(batch("a")) is True
    assert buf.put(batch("b")) is True
    fs.full = False
    await asyncio.wait_for(buf.wait_writable(), 5)  # the retry timer wrote them
    assert fs.failed == 1 and buf.volatile_records == 0 and buf.problem is None
    buf.release()
    again = opened(tmp_path)
    assert await drain(again) == [f"{t}-{i}".encode() for t in "ab" for i in range(3)]
    again.release()


async def test_drop_newest_drops_and_counts_on_a_write_failure_with_few_log_lines(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="logd.spool")
    fs = FullDisk(monkeypatch)
    buf = opened(tmp_path, when_full="drop_newest")
    fs.full = True
    for i in range(50):
        assert buf.put(batch(f"x{i}")) is False  # never held, never pausing
    stats = buf.stats()
    assert (buf.dropped_records, stats["spool_write_errors"], stats["held_records"]) == \
        (150, 50, 0)
    assert buf.volatile_records == 0 and not buf.full and buf.queued_records == 0
    assert buf.problem == ("cannot write the spool: No space left on device (ENOSPC); "
                           "150 records dropped")
    assert len(logged(caplog, "cannot write the spool;")) == 1  # when it started
    assert 1 <= len(logged(caplog, "still cannot write the spool")) <= 5  # while it lasts
    fs.full = False
    assert buf.put(batch("y")) is False
    assert buf.problem is None and len(logged(caplog, "works again")) == 1
    assert await drain(buf) == [b"y-0", b"y-1", b"y-2"]
    buf.release()


async def test_release_writes_what_is_held_and_what_the_writer_took_from_memory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fs = FullDisk(monkeypatch)
    buf = opened(tmp_path)
    fs.full = True
    for t in "abc":
        buf.put(batch(t))
    taken = await buf.get(1, timeout=1)  # "a" from memory, never acknowledged
    assert taken is not None and taken.held is not None and buf.volatile_records == 9
    fs.full = False
    buf.release()  # the stop: written to the spool, in order
    assert buf.dropped_records == 0
    again = opened(tmp_path)
    assert await drain(again) == [f"{t}-{i}".encode() for t in "abc" for i in range(3)]
    fs.full = True
    again.put(batch("d"))
    again.release()  # still full: lost, and said
    assert again.dropped_records == 3
    last = opened(tmp_path)
    assert last.queued_records == 0
    last.release()


async def test_rewind_hands_out_again_what_was_taken_from_memory_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fs = FullDisk(monkeypatch)
    buf = opened(tmp_path)
    buf.put(batch("a"))
    fs.full = True
    for t in "bc":
        buf.put(batch(t))
    on_disk = await buf.get(1, timeout=1)
    from_memory = await buf.get(1, timeout=1)
    assert on_disk is not None and from_memory is not None and from_memory.held is not None
    fs.full = False
    buf.rewind()  # a new writer: what the old one held comes again, in order
    buf.ack(from_memory)  # the old writer's late ack: ignored
    assert buf.queued_records == 9
    assert await drain(buf) == [f"{t}-{i}".encode() for t in "abc" for i in range(3)]
    assert buf.queued_records == 0 and buf.volatile_records == 0
    buf.release()


async def test_batches_a_writer_took_from_memory_reach_the_spool_once_it_can_be_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The writer took b and c from memory, then its server went down: it holds them for a
    # long time. Space comes back: they are written (behind what was on disk, in order), and
    # new batches go to the spool again instead of waiting behind them in memory.
    fs = FullDisk(monkeypatch)
    buf = opened(tmp_path, memory_bytes=0)
    buf.put(batch("a"))
    assert await buf.get(1, timeout=1) is not None  # "a", from disk, not acknowledged
    fs.full = True
    for t in "bc":
        buf.put(batch(t))
    taken = await buf.get(1 << 20, timeout=1)
    assert taken is not None and taken.held is not None and len(taken.batches) == 2
    assert buf.put(batch("d")) is True  # held behind them
    fs.full = False
    await asyncio.wait_for(buf.wait_writable(), 5)
    assert buf.volatile_records == 0 and buf.problem is None
    assert buf.put(batch("e")) is False  # straight into the spool
    buf.rewind()  # the writer restarts: everything comes back in order, from the spool
    assert buf.queued_records == 15
    assert await drain(buf) == [f"{t}-{i}".encode() for t in "abcde" for i in range(3)]
    buf.release()
    # The same, with the writer finishing instead: its acks cover what reached the spool.
    fs.full = True
    buf = opened(tmp_path / "2", memory_bytes=0)
    for t in "ab":
        buf.put(batch(t))
    taken = await buf.get(1 << 20, timeout=1)
    assert taken is not None and taken.held is not None
    fs.full = False
    await asyncio.wait_for(buf.wait_writable(), 5)
    buf.put(batch("c"))
    buf.ack(taken)
    assert buf.queued_records == 3
    assert await drain(buf, ack=False) == [b"c-0", b"c-1", b"c-2"]
    buf.release()
    again = opened(tmp_path / "2")
    assert again.queued_records == 3  # a and b were acknowledged, c was not
    again.release()


_FULL_DISK_DRIVER = """
import asyncio, json, os, subprocess, sys
from logd.buffers.disk import DiskBuffer
from logd.config import BufferConfig
from logd.record import Batch

mnt = {mnt!r}
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt], check=True)
cfg = BufferConfig(type="disk", max_bytes=64 * 1024**2, memory_bytes=0, fsync_interval=0.0)


def make(n):
    return Batch([b"r%d-%d-" % (n, i) + b"x" * 1000 for i in range(20)], None, "e", 0.0,
                 20_000)


def records(lease):
    return [p[:p.rindex(b"-")].decode() for b in lease.batches for p in b.payloads]


async def fill(buf, put):
    # Until the filesystem refuses (10 MiB would be past it); then two more reads that were
    # in flight.
    for _ in range(500):
        if buf.put(make(len(put))):
            break
        put.append(len(put))
    else:
        sys.exit("the spool never paused its producers: batches were dropped")
    put.append(len(put))
    for _ in range(2):
        assert buf.put(make(len(put))) is True
        put.append(len(put))


async def main():
    out = {{}}
    # 1. Something else fills the disk; the output cannot send (its server is down).
    with open(os.path.join(mnt, "filler"), "wb") as f:
        f.write(b"f" * 400_000)
    buf = DiskBuffer(cfg, "out")
    buf.open(os.path.join(mnt, "one"))
    put = []
    await fill(buf, put)
    out["problem"] = buf.problem
    out["full"] = buf.full
    out["held"] = buf.stats()["held_records"]
    os.unlink(os.path.join(mnt, "filler"))  # space comes back
    await asyncio.wait_for(buf.wait_writable(), 5)
    out["problem_after"] = buf.problem
    out["held_after"] = buf.stats()["held_records"]
    buf.release()
    again = DiskBuffer(cfg, "out")
    again.open(os.path.join(mnt, "one"))
    got = []
    while not again.empty():
        lease = await again.get(1 << 30, timeout=1)
        got.extend(records(lease))
        again.ack(lease)
    again.release()
    out["one_lost"] = sorted(set(f"r{{n}}-{{i}}" for n in put for i in range(20)) - set(got))
    out["one_in_order"] = got == [f"r{{n}}-{{i}}" for n in put for i in range(20)]
    subprocess.run(["rm", "-rf", os.path.join(mnt, "one")], check=True)
    # 2. The spool fills the disk itself; the output keeps up: it drains the spool, then
    # what is held from memory, and the spool frees its own space.
    buf = DiskBuffer(cfg, "out")
    buf.open(os.path.join(mnt, "two"))
    put = []
    await fill(buf, put)
    out["two_held"] = buf.stats()["held_records"]
    got = []
    while not buf.empty():
        lease = await buf.get(1 << 30, timeout=1)
        got.extend(records(lease))
        buf.ack(lease)
    put.append(len(put))
    out["two_put_after"] = buf.put(make(put[-1]))  # into the spool again
    out["two_problem_after"] = buf.problem
    lease = await buf.get(1 << 30, timeout=1)
    got.extend(records(lease))
    buf.ack(lease)
    out["two_in_order"] = got == [f"r{{n}}-{{i}}" for n in put for i in range(20)]
    out["two_segments"] = len([n for n in os.listdir(os.path.join(mnt, "two"))
                               if n.endswith(".seg")])
    buf.release()
    print(json.dumps(out))


asyncio.run(main())
"""


def test_a_full_filesystem_holds_batches_and_loses_nothing(tmp_path: Path) -> None:
    """A real tmpfs of 1 MiB, mounted in a private mount namespace (nothing outlives it)."""
    import shutil
    import subprocess
    import sys
    if shutil.which("unshare") is None:
        pytest.skip("unshare(1) is needed to mount a small filesystem privately")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    (tmp_path / "driver.py").write_text(_FULL_DISK_DRIVER.format(mnt=str(mnt)))
    unshare = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        unshare.insert(1, "--map-root-user")
    proc = subprocess.run([*unshare, sys.executable, str(tmp_path / "driver.py")],
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    import json
    result = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    assert result["problem"].startswith("cannot write the spool: No space left on device "
                                        "(ENOSPC); ")
    assert result["full"] and result["held"] >= 60
    assert (result["problem_after"], result["held_after"]) == (None, 0)
    assert result["one_lost"] == [] and result["one_in_order"]
    assert result["two_held"] >= 60
    assert result["two_put_after"] is False and result["two_problem_after"] is None
    assert result["two_in_order"] and result["two_segments"] == 1


async def test_on_a_full_disk_a_segment_all_sent_is_let_go_to_make_room(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fs = FullDisk(monkeypatch)
    buf = opened(tmp_path)
    buf.put(batch("a"))
    assert await drain(buf) == [b"a-0", b"a-1", b"a-2"]  # all of segment 1 acknowledged
    fs.full = True
    assert buf.put(batch("b")) is True
    taken = await buf.get(1 << 20, timeout=1)  # from memory; the writer is slow to ack
    assert taken is not None and taken.held is not None
    fs.full = False
    assert buf.put(batch("c")) is True  # behind b, until the retry writes both
    await asyncio.wait_for(buf.wait_writable(), 5)
    assert [s.name for s in segments(tmp_path)] == ["0000000000000002.seg"]
    buf.ack(taken)  # covers b's copy in the new segment
    assert await drain(buf) == [b"c-0", b"c-1", b"c-2"]
    buf.release()
    again = opened(tmp_path)
    assert again.queued_records == 0  # nothing sent twice
    again.release()


# -- receipts --

def receipt_for(n: int) -> Any:
    from logd.delivery import Receipt
    r = Receipt()
    r.expect(n)
    return r


async def test_receipts_are_accepted_and_secured_in_the_spool_delivered_at_the_ack(
        tmp_path: Path) -> None:
    buf = opened(tmp_path)
    first, second = receipt_for(3), receipt_for(3)
    buf.put(batch("a"), first)
    buf.put(batch("b"), second)
    assert first.is_accepted and first.is_secured and not first.is_delivered
    lease = await buf.get(1, timeout=1)  # one batch
    assert lease is not None and len(lease.batches) == 1
    buf.ack(lease)
    assert first.is_delivered and not second.is_delivered
    await drain(buf)
    assert second.is_delivered
    buf.release()


async def test_receipts_of_held_batches_wait_for_the_spool_or_the_writer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fs = FullDisk(monkeypatch)
    buf = opened(tmp_path)
    fs.full = True
    held, taken = receipt_for(3), receipt_for(3)
    buf.put(batch("a"), held)
    assert not held.is_accepted and not held.is_secured  # only in memory
    buf.put(batch("b"), taken)
    fs.full = False
    buf._write_held()  # the retry: both reach the spool
    assert held.is_secured and taken.is_secured and not held.is_delivered
    await drain(buf)
    assert held.is_delivered and taken.is_delivered
    # Held, then sent from memory and acknowledged before the disk had room: done.
    fs.full = True
    direct = receipt_for(3)
    buf.put(batch("c"), direct)
    await drain(buf)
    assert direct.is_accepted and direct.is_secured and direct.is_delivered
    assert direct.dropped == direct.lost == 0
    fs.full = False
    buf.release()


async def test_receipts_of_dropped_batches_say_so(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    fs = FullDisk(monkeypatch)
    buf = opened(tmp_path, when_full="drop_newest")
    fs.full = True
    r = receipt_for(3)
    buf.put(batch("a"), r)
    assert r.is_delivered and r.dropped == 3
    fs.full = False
    buf.release()


async def test_a_refusable_batch_is_refused_not_held_and_the_problem_clears_with_room(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from logd.delivery import Receipt
    fs = FullDisk(monkeypatch)
    buf = opened(tmp_path)
    fs.full = True
    r = Receipt(refusable=True)
    r.expect(3)
    assert buf.put(batch("a"), r) is False  # refused: nothing to pause for
    assert r.refused == 3 and r.is_delivered
    assert buf.stats()["refused"] == 3 and buf.stats()["held_records"] == 0
    assert buf.problem is not None and buf.queued_records == 0
    fs.full = False
    # Nothing is held, so no write says the disk has room again: the retry looks at it.
    for _ in range(100):
        if buf.problem is None:
            break
        await asyncio.sleep(0.05)  # the retry timer runs every RETRY_S: polled, bounded
    assert buf.problem is None
    buf.release()
