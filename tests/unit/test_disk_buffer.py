"""The disk buffer: spooled batches come back in order, after a reopen too; acks free them."""

from __future__ import annotations

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

