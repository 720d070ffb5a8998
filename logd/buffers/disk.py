"""The disk buffer: a spool of segment files that outlives restarts and kill -9.

Every batch is appended to the current segment as it is put (one write(2); the page cache
keeps it through a crash of the process, and `fsync_interval` after a write it is synced
for a crash of the machine). The writer reads in order and acknowledges what it wrote; the
acknowledged position is kept in the `ack` file, and segments wholly behind it are deleted.
At start everything past that position is replayed. Batches put while `memory_bytes` of them
wait are also kept in RAM, so a writer that keeps up never reads the disk back.

    DIR/lock                   flock: one process per spool
    DIR/type                   the output type the records are for
    DIR/ack                    ACK: segment, offset, records acknowledged, crc32
    DIR/0000000000000001.seg   a META entry, then entries: ENTRY header, body

Every entry header has its own checksum and the number of records put into the spool before
it, and a segment starts with a meta entry saying the same for the segment. So nothing is
lost without being said:
- a damaged entry (body checksum) is skipped and its records counted (`corrupt`); an entry
  holds at most about ENTRY_BYTES of payload (outputs put larger batches in slices);
- past a damaged header the reader looks for the next header whose checksums hold and goes
  on from there; the records in between are known from the counts and counted. At open only
  a torn tail at the end of the newest segment (a crash mid-write) is cut off;
- an ack file that fails its checksum or does not fit the segments is not believed: the
  spool is replayed from its oldest segment (records may be sent twice, never lost), and no
  segment is deleted on its word (`ack_damaged`);
- segments missing between the acknowledged position and the newest are reported with the
  number of records they held (`missing_segments`, `lost_records`).
Segments written before these counts existed (16-byte headers, no meta entry) are still
read; a new segment is started after them.

A write that fails (ENOSPC, EIO, EDQUOT ...): under `when_full = "drop_newest"` the batch is
dropped and counted. Under `"block"` it is held in memory, in order, and so is every batch
put while anything is held; meanwhile the buffer counts as full, so listeners pause and HTTP
answers 503. A writer that has read everything on disk takes the held batches from memory
(acknowledging them moves nothing on disk), so a healthy output keeps flowing while the
disk is full. A retry (every RETRY_S, and after each ack) writes them to the spool in order
once it can: first those a writer took and has not acknowledged (from then on their span
in the spool is part of its lease, so a rewind reads them back in order), then the rest; a
segment all acknowledged is let go first when the disk is full. Memory stays bounded:
producers are paused while anything is held, so the held queue grows only by the reads
already in flight when they paused. `problem` says what is wrong until a write works.

`max_bytes` bounds what the spool holds unacknowledged; `when_full` applies beyond it.
Delivery is at least once: a batch a writer sent but had not acknowledged when the process
died is sent again after the restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import re
import struct
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from logd.buffers import codec
from logd.buffers.base import Buffer
from logd.config import BufferConfig
from logd.delivery import Receipt
from logd.logsetup import RateLimitedLog
from logd.stats import BufferStats

log = logging.getLogger("logd.spool")

# magic, kind, flags, body length, records, records put into the spool before this entry,
# crc32 of the body, crc32 of the 24 bytes before it
ENTRY = struct.Struct("<HBBIIQII")
_ENTRY_HEAD = struct.Struct("<HBBIIQI")
_CRC = struct.Struct("<I")
MAGIC = 0x324C  # "L2"
MAGIC_BYTES = struct.pack("<H", MAGIC)
# A segment's first entry (no records): its number and the records put before it.
META = 0
META_BODY = struct.Struct("<QQ")
# Segments from before the counts: magic, kind, flags, body length, records, crc32 of the body.
LEGACY_ENTRY = struct.Struct("<HBBIII")
LEGACY_MAGIC = 0x474C  # "LG"
LEGACY_MAGIC_BYTES = struct.pack("<H", LEGACY_MAGIC)
# magic, segment, offset, records acknowledged (UNKNOWN in a segment from before the counts),
# crc32 of the 28 bytes before it: written with one pwrite.
ACK = struct.Struct("<4sQQQI")
_ACK_HEAD = struct.Struct("<4sQQQ")
ACK_MAGIC = b"LGA2"
LEGACY_ACK = struct.Struct("<QQ")  # segment, offset
UNKNOWN = 2**64 - 1
Position = tuple[int, int]  # (segment, offset)
# Payload bytes an output puts in one entry at most (a larger batch is put in slices): what one
# damaged entry can lose.
ENTRY_BYTES = 64 * 1024
RETRY_S = 0.5  # how often held batches are tried again while the spool cannot be written
_SCAN_CHUNK = 1 << 20
_KIND = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")

# kind, body length, records, records before (None in an old segment), crc32 of the body
Header = tuple[int, int, int, int | None, int]


class SpoolError(Exception):
    """The spool directory cannot be used (not writable, another process holds it, or its
    type file is not one logd wrote)."""


@dataclass
class DiskLease:
    batches: list[Any]
    cost: int
    records: int
    start: Position
    end: Position
    generation: int = field(default=0)
    end_total: int | None = None  # records put into the spool before `end`
    # Handed out from memory (see _lease_held): its entries not yet in the spool, and the
    # span of those written there since.
    held: list[Any] | None = None
    spooled: DiskLease | None = None


@dataclass
class _Scan:
    """What opening found in a segment."""

    size: int
    legacy: bool
    start_total: int | None  # records put before its first entry
    end_total: int | None    # ... before the end of its last readable entry
    records: int             # records from `start` (the offset asked for)
    records_all: int         # ... from the beginning
    at_start: bool           # `start` is where an entry begins, or the end
    start_at: int | None     # records put before `start`
    tail: int | None         # a damaged region from here to the end (kept)


def _entry_head(kind: int, length: int, count: int, before: int, crc: int) -> bytes:
    head = _ENTRY_HEAD.pack(MAGIC, kind, 0, length, count, before, crc)
    return head + _CRC.pack(zlib.crc32(head))


def _parse(head: bytes, legacy: bool, room: int) -> Header | None:
    """The header in `head` if it holds up and its entry fits in `room` bytes, else None."""
    if legacy:
        if len(head) < LEGACY_ENTRY.size:
            return None
        magic, kind, _flags, length, count, crc = LEGACY_ENTRY.unpack_from(head)
        if magic != LEGACY_MAGIC or LEGACY_ENTRY.size + length > room:
            return None
        return kind, length, count, None, crc
    if len(head) < ENTRY.size:
        return None
    magic, kind, _flags, length, count, before, crc, head_crc = ENTRY.unpack_from(head)
    if (magic != MAGIC or head_crc != zlib.crc32(memoryview(head)[:_ENTRY_HEAD.size])
            or ENTRY.size + length > room):
        return None
    return kind, length, count, before, crc


def _next_entry(fd: int, start: int, end: int, legacy: bool) -> tuple[int, Header] | None:
    """The first offset in [start, end) where an entry holds up (its header, and its body's
    checksum): where reading goes on past a damaged region."""
    magic = LEGACY_MAGIC_BYTES if legacy else MAGIC_BYTES
    hsize = LEGACY_ENTRY.size if legacy else ENTRY.size
    pos = start
    while pos < end:
        chunk = os.pread(fd, min(_SCAN_CHUNK + hsize, end - pos), pos)
        if not chunk:
            return None
        i = chunk.find(magic)
        while 0 <= i < _SCAN_CHUNK:
            head = chunk[i:i + hsize]
            found = _parse(head, legacy, end - pos - i)
            if found is not None:
                body = os.pread(fd, found[1], pos + i + hsize)
                if len(body) == found[1] and zlib.crc32(body) == found[4]:
                    return pos + i, found
            i = chunk.find(magic, i + 1)
        pos += _SCAN_CHUNK
    return None


def _legacy_segment(fd: int) -> bool:
    """Whether a segment is from before the counts: it starts with an old header, or (its
    start damaged) an old entry holds up in it and no new one does."""
    first = os.pread(fd, 2, 0)
    if first == LEGACY_MAGIC_BYTES:
        return True
    if first == MAGIC_BYTES or len(first) < 2:
        return False
    size = os.fstat(fd).st_size
    return (_next_entry(fd, 1, size, False) is None
            and _next_entry(fd, 1, size, True) is not None)


class DiskBuffer(Buffer):
    persistent = True
    entry_bytes = ENTRY_BYTES

    def __init__(self, cfg: BufferConfig, owner: str) -> None:
        super().__init__(cfg, owner)
        self.cfg = cfg
        self.segment_bytes = min(64 * 1024**2, max(1024**2, cfg.max_bytes // 8))
        self.directory = ""
        self._lock_fd = -1
        self._ack_fd = -1
        self._wfd = -1
        self._sizes: dict[int, int] = {}    # segment -> bytes in it
        self._starts: dict[int, int | None] = {}  # segment -> records put before it
        self._legacy: set[int] = set()      # segments from before the counts
        self._write: Position = (1, 0)
        self._read: Position = (1, 0)
        self._acked: Position = (1, 0)
        self._written_total = 0             # records put into the spool, ever
        self._read_total: int | None = 0    # ... before `_read`
        self._acked_total: int | None = 0   # ... before `_acked`
        self._cut_next = False              # the segment's end could not be cut back: rotate
        self._done_early: dict[Position, DiskLease] = {}  # acks that came out of order
        # start, end, batch, bytes, records, records before
        self._memory: deque[tuple[Position, Position, Any, int, int, int]] = deque()
        self._memory_bytes = 0
        self._generation = 0
        self._cost = 0              # unacknowledged bytes in the spool
        self._unread_records = 0
        self._leased_records = 0
        # Batches the spool could not take (kind, body, batch), in order, and those of them
        # the writer took from memory and has not acknowledged.
        self._held: deque[tuple[int, bytes, Any]] = deque()
        # Receipts of batches not yet in the spool (held, or on their way), by id(batch);
        # then of those in it, by where their entry ends: delivered once the acknowledged
        # position passes it.
        self._receipt_of: dict[int, Receipt] = {}
        self._receipts: deque[tuple[Position, Receipt, int]] = deque()
        self._held_out: dict[int, DiskLease] = {}
        self._held_records = 0
        self._out_records = 0
        self._held_bytes = 0
        self._failure: OSError | None = None  # the last write failed so
        self._failure_since = 0.0
        self._failure_dropped = 0
        self._from_memory = 0       # batches held, then written, during this failure
        self._ack_failure: OSError | None = None
        self._retry_handle: asyncio.TimerHandle | None = None
        self._data = asyncio.Event()
        self._closed = False
        self._sync_handle: asyncio.TimerHandle | None = None
        self.ratelog = RateLimitedLog(log, interval=10.0, burst=3)
        self.replayed_records = 0
        self.corrupt_records = 0
        self.write_errors = 0
        self.refused_records = 0  # not kept on a write failure: their callers said "retry"
        self.ack_damaged = 0
        self.lost_records = 0
        self.missing_segments = 0

    # -- opening --

    def open(self, directory: str, kind: str = "") -> None:
        """Take the spool at `directory` (made if absent) and find what waits in it. `kind`
        (the output's type) is kept in the spool: another type's records are refused."""
        self.directory = directory
        try:
            os.makedirs(directory, exist_ok=True)
            self._lock_fd = os.open(os.path.join(directory, "lock"), os.O_RDWR | os.O_CREAT,
                                    0o600)
        except OSError as e:
            raise SpoolError(f"spool {directory}: {e.strerror}") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise SpoolError(f"spool {directory} is in use by another process") from None
        try:
            held = self._read_kind(kind)
            self._recover()
            self._check_kind(kind, held)
        except OSError as e:
            self.release()
            raise SpoolError(f"spool {directory}: {e.strerror or e}") from None
        except SpoolError:
            self.release()
            raise

    def _read_kind(self, kind: str) -> str:
        """The output type the spool holds records for ("" if none yet)."""
        if not kind:
            return ""
        path = os.path.join(self.directory, "type")
        try:
            with open(path, "rb") as f:
                raw = f.read(256)
        except FileNotFoundError:
            return ""
        try:
            held = raw.decode().strip()
        except UnicodeDecodeError:
            held = None
        if held is None or (held and not _KIND.match(held)):
            raise SpoolError(f"spool {self.directory}: the type file {path} holds {raw[:40]!r}, "
                             "not an output type: write the output type "
                             f"({kind}) into it, or move the spool away")
        return held

    def _check_kind(self, kind: str, held: str) -> None:
        if not kind or held == kind:
            return
        if held and self._unread_records:
            raise SpoolError(f"spool {self.directory} holds records of a {held} output, not "
                             f"{kind}: let a {held} output send them, or give this one "
                             "another buffer path")
        # Empty, new, or a type file a crash left unwritten: this output's from now on.
        path = os.path.join(self.directory, "type")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(kind + "\n")
        os.replace(tmp, path)

    def _recover(self) -> None:
        directory = self.directory
        ack_path = os.path.join(directory, "ack")
        self._ack_fd = os.open(ack_path, os.O_RDWR | os.O_CREAT, 0o600)
        ack_seq, ack_off, ack_total, doubt = _read_ack(os.pread(self._ack_fd, 64, 0))
        present = sorted(int(n[:-4]) for n in os.listdir(directory)
                         if n.endswith(".seg") and n[:-4].isdigit())
        newest = present[-1] if present else 0
        scans: dict[int, _Scan] = {}

        def scan(seq: int, start: int = 0) -> _Scan:
            if seq not in scans:
                scans[seq] = self._scan(seq, start, seq == newest)
            return scans[seq]

        # Where reading starts, and whether the ack file's word is taken for it.
        start: Position | None = None
        start_total: int | None = None
        trusted = False
        missing_from = 0  # the acknowledged segment, when it is gone
        if doubt is None and ack_seq:
            if ack_seq in present:
                s = scan(ack_seq, ack_off)
                if ack_total is None and ack_seq != present[0]:
                    doubt = (f"it names segment {ack_seq}, but older ones are there and its "
                             "format cannot say they were sent")
                elif not s.at_start:
                    doubt = (f"offset {ack_off} of segment {ack_seq} is not where an entry "
                             f"begins (the segment has {s.size} readable bytes)")
                elif (ack_total is not None and not s.legacy and s.start_at is not None
                      and ack_total not in (UNKNOWN, s.start_at)):
                    doubt = (f"it counts {ack_total} records acknowledged where segment "
                             f"{ack_seq} counts {s.start_at}")
                else:
                    trusted = True
                    start = (ack_seq, ack_off)
                    start_total = s.start_at if not s.legacy else None
            elif ack_total is None:
                if present:
                    doubt = f"it names segment {ack_seq}, which does not exist"
            else:
                later = [s for s in present if s > ack_seq]
                first = scan(later[0]).start_total if later else None
                if not present:
                    trusted = True
                    missing_from = ack_seq
                elif not later:
                    doubt = (f"it names segment {ack_seq}, past the newest one "
                             f"({present[-1]})")
                elif (ack_total != UNKNOWN and first is not None and ack_total > first):
                    doubt = (f"it counts {ack_total} records acknowledged, more than were put "
                             f"before segment {later[0]} ({first})")
                else:
                    trusted = True
                    missing_from = ack_seq
                    start = (later[0], 0)
                    start_total = first
        if doubt is not None:
            self.ack_damaged += 1
            log.error("spool ack file cannot be trusted; replaying from the oldest segment: "
                      "records may be sent twice", extra={
                          "output": self.owner, "path": ack_path, "error": doubt,
                          "segment": present[0] if present else None})
        if trusted:
            # Behind a verified position: sent and acknowledged.
            for seq in present:
                if start is None or seq < start[0]:
                    os.unlink(self._path(seq))
            present = [s for s in present if start is not None and s >= start[0]]
        if start is None and present:
            start = (present[0], 0)
            start_total = scan(present[0]).start_total
        # The segments read from here on, their starting counts, what is missing among them.
        prev_end = ack_total if missing_from and ack_total != UNKNOWN else None
        prev_seq = missing_from - 1 if missing_from else None
        records = waiting = 0
        for seq in present:
            s = scan(seq)
            if s.legacy:
                self._legacy.add(seq)
            first = s.start_total
            if first is None and prev_seq == seq - 1 and not s.legacy:
                first = prev_end
            self._starts[seq] = None if s.legacy else first
            if prev_seq is not None and seq > prev_seq + 1:
                self._report_missing(prev_seq + 1, seq - 1, prev_end, first)
            if start is not None and seq == start[0]:
                records += s.records if (trusted and start[1]) else s.records_all
                waiting += s.size - start[1]
            else:
                records += s.records_all
                waiting += s.size
            self._sizes[seq] = s.size
            prev_seq, prev_end = seq, s.end_total
        if missing_from and not present:
            self._report_missing(missing_from, missing_from, None, None)
        # A damaged region running to the end of a segment: its records are known from the
        # count the next segment starts with.
        for seq in present:
            s = scans[seq]
            nxt = self._starts.get(seq + 1)
            if (s.tail is not None and nxt is not None and s.end_total is not None
                    and (seq, s.tail) >= start):  # type: ignore[operator]
                records += max(0, nxt - s.end_total)
        base = ack_total if ack_total not in (None, UNKNOWN) else 0
        if present and not scans[present[-1]].legacy:
            last = present[-1]
            self._write = (last, self._sizes[last])
            end_total = scans[last].end_total
            if end_total is None:  # nothing readable in it yet
                end_total = self._starts[last]
            self._written_total = end_total if end_total is not None else base + records
        else:
            # Nothing yet, or only old-format segments: writing goes on in a new segment.
            last = max(newest, ack_seq) + 1 if (present or missing_from) else max(ack_seq, 1)
            self._written_total = base + records
            os.close(os.open(self._path(last), os.O_WRONLY | os.O_CREAT, 0o600))
            self._sizes[last] = 0
            self._starts[last] = self._written_total
            self._write = (last, 0)
            if start is None:
                start, start_total = (last, 0), self._written_total
        assert start is not None
        self._acked = self._read = start
        self._acked_total = self._read_total = start_total
        self._wfd = os.open(self._path(last), os.O_WRONLY | os.O_APPEND)
        self._cost = waiting
        self._unread_records = records
        self.replayed_records = records
        # What this start decided, in the current format: a restart does not report the
        # same damage again.
        if (not trusted or missing_from or ack_total is None) and \
                self._write_ack(start, start_total):
            with contextlib.suppress(OSError):
                os.ftruncate(self._ack_fd, ACK.size)
        if records:
            self._data.set()
            log.info("spool has records from before; sending them first", extra={
                "output": self.owner, "records": records, "bytes": waiting,
                "path": directory})
        if self._cost >= self.max_bytes and self.block:
            self._writable.clear()

    def _report_missing(self, first: int, last: int, before: int | None,
                        after: int | None) -> None:
        count = after - before if before is not None and after is not None else None
        names = [os.path.basename(self._path(s)) for s in range(first, last + 1)]
        self.missing_segments += len(names)
        if count is not None and count >= 0:
            self.lost_records += count
        log.error("spool segments are missing; their records are lost", extra={
            "output": self.owner, "path": self.directory,
            "segments": names if len(names) <= 10 else [*names[:5], "...", *names[-5:]],
            "records": count if count is not None and count >= 0 else "unknown"})

    def _path(self, seq: int) -> str:
        return os.path.join(self.directory, f"{seq:016d}.seg")

    def _scan(self, seq: int, start: int, newest: bool) -> _Scan:
        """Walk a segment's headers (and, past a damaged region, find where entries begin
        again). A torn tail of the newest segment (a crash mid-write) is cut off; anything
        else is kept for the reader to skip and count."""
        path = self._path(seq)
        fd = os.open(path, os.O_RDWR if newest else os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            legacy = _legacy_segment(fd)
            hsize = LEGACY_ENTRY.size if legacy else ENTRY.size
            first_total: int | None = None
            total: int | None = None
            records = records_all = 0
            at_start = False
            start_at: int | None = None
            tail: int | None = None
            off = 0
            while off < size:
                if off == start:
                    at_start, start_at = True, total
                head = os.pread(fd, hsize, off)
                found = _parse(head, legacy, size - off)
                nxt = off
                if found is None:
                    resumed = _next_entry(fd, off + 1, size, legacy)
                    if resumed is None:
                        tail = off
                        break
                    nxt, found = resumed
                    if first_total is None and found[3] is not None:
                        first_total = found[3]
                        total = first_total
                    if found[3] is not None and total is not None and off >= start:
                        records += max(0, found[3] - total)  # the damaged region's
                    if found[3] is not None and total is not None:
                        records_all += max(0, found[3] - total)
                    if nxt == start:
                        at_start, start_at = True, found[3]
                kind, length, count, before, _crc = found
                if before is not None:
                    if first_total is None:
                        first_total = before
                    total = before
                if kind != META:
                    records_all += count
                    if nxt >= start:
                        records += count
                if total is not None:
                    total += count
                off = nxt + hsize + length
            if not at_start and start == size:
                # The end, or past a damaged end (where a reader that skipped it stops).
                at_start, start_at = True, total if tail is None else None
            if tail is not None and newest and not legacy:
                torn = _parse(os.pread(fd, hsize, tail), legacy, 1 << 62)
                lost = torn[2] if torn is not None else None
                if lost:
                    self.corrupt_records += lost
                log.warning("spool segment has a torn tail (a write cut short); cut off",
                            extra={"output": self.owner, "path": path, "offset": tail,
                                   "bytes": size - tail,
                                   "records": lost if lost is not None else "unknown"})
                os.ftruncate(fd, tail)
                size, tail = tail, None
                if start == size:
                    at_start, start_at = True, total
            if start == 0:
                start_at = first_total
            if legacy:
                first_total = total = start_at = None
            return _Scan(size, legacy, first_total, total, records, records_all, at_start,
                         start_at, tail)
        finally:
            os.close(fd)

    # -- producer side --

    @property
    def cost(self) -> int:
        return self._cost

    @property
    def full(self) -> bool:
        return self._cost >= self.max_bytes or bool(self._held)

    def put(self, batch: Any, receipt: Receipt | None = None) -> bool:
        """Append a batch to the spool. With a receipt, the records are reported accepted and
        secured once they are in the spool (or held in memory until they are), delivered
        once the writer acknowledges them."""
        batch.compact()
        kind, body = codec.encode(batch)
        if receipt is not None:
            self._receipt_of[id(batch)] = receipt
        if self._held or self._held_out:
            # Behind what is held, in order: it is written (or sent) first.
            return self._not_written(kind, body, batch, receipt)
        if not self.block and self._cost + ENTRY.size + len(body) > self.max_bytes:
            self._drop(batch)
            return False
        try:
            start, end, before = self._append(kind, body, batch.count)
        except OSError as e:
            self._write_failed(e)
            if not self.block:
                self._failure_dropped += batch.count
            return self._not_written(kind, body, batch, receipt)
        if self._failure is not None:
            self._writing_works()
        self.accepted_records += batch.count
        self._spooled(start, end, batch, before)
        if self._cost >= self.max_bytes and self.block:
            self._writable.clear()
            return True
        return False

    def _not_written(self, kind: int, body: bytes, batch: Any, receipt: Receipt | None
                     ) -> bool:
        """A batch that cannot go to the spool now: dropped (drop_newest), refused to a
        caller that can retry, or held in memory in order (the caller pauses: True)."""
        if not self.block:
            self._drop(batch)
            return False
        if receipt is not None and receipt.refusable:
            self._refuse(batch)
            return False
        self._hold(kind, body, batch)
        return True

    def _drop(self, batch: Any) -> None:
        self.dropped_records += batch.count
        self.dropped_bytes += batch.nbytes
        receipt = self._receipt_of.pop(id(batch), None)
        if receipt is not None:
            receipt.drop(batch.count)

    def _refuse(self, batch: Any) -> None:
        """Not kept: its caller answers "retry later" (HTTP's 503) rather than have it held
        in memory."""
        self.refused_records += batch.count
        self._schedule_retry()  # to see when writing works again
        receipt = self._receipt_of.pop(id(batch))
        receipt.refuse(batch.count)

    def _in_spool(self, batch: Any, end: Position) -> None:
        """A batch reached the spool, ending at `end`: its receipt (if any) hears it is
        accepted and secured now, and delivered when the acknowledged position passes."""
        receipt = self._receipt_of.pop(id(batch), None)
        if receipt is not None:
            receipt.accepted(batch.count)
            receipt.secured(batch.count)
            self._receipts.append((end, receipt, batch.count))

    def _delivered_from_memory(self, entries: list[tuple[int, bytes, Any]]) -> None:
        """Held batches a writer took from memory and acknowledged before they reached the
        spool: done with, all at once."""
        for _, _, batch in entries:
            receipt = self._receipt_of.pop(id(batch), None)
            if receipt is not None:
                receipt.accepted(batch.count)
                receipt.written(batch.count)

    def _append(self, kind: int, body: bytes, count: int) -> tuple[Position, Position, int]:
        """Write one entry (after the segment's meta entry if it is the first); raises
        OSError with nothing of it left in the segment."""
        seq, off = self._write
        if self._cut_next or (off and (off + ENTRY.size + len(body) > self.segment_bytes or (
                self._failure is not None and self._acked == self._write))):
            # The last case: the disk is full, and what fills the current segment is all
            # acknowledged; a new one lets it go.
            seq, off = self._next_segment()
        before = self._written_total
        head = _entry_head(kind, len(body), count, before, zlib.crc32(body))
        try:
            if off:
                _write_all(self._wfd, head, body)
                size = len(head) + len(body)
            else:
                meta = META_BODY.pack(seq, before)
                meta = _entry_head(META, len(meta), 0, before, zlib.crc32(meta)) + meta
                _write_all(self._wfd, meta, head, body)
                size = len(meta) + len(head) + len(body)
        except OSError:
            try:
                os.ftruncate(self._wfd, off)
            except OSError:
                # What is past `off` stays: the next entry goes to a new segment, so none
                # follows it (a reader stops at the size kept here).
                self._cut_next = True
            raise
        end = (seq, off + size)
        self._write = end
        self._sizes[seq] = end[1]
        self._written_total = before + count
        self._schedule_sync()
        return (seq, off), end, before

    def _spooled(self, start: Position, end: Position, batch: Any, before: int) -> None:
        size = end[1] - start[1]
        count = batch.count
        self._in_spool(batch, end)
        if self._memory_bytes + size <= self.cfg.memory_bytes:
            self._memory.append((start, end, batch, size, count, before))
            self._memory_bytes += size
        self._cost += size
        self._unread_records += count
        self.peak_cost = max(self.peak_cost, self._cost + self._held_bytes)
        self._data.set()

    def _next_segment(self) -> Position:
        old_fd, old_seq = self._wfd, self._write[0]
        seq = old_seq + 1
        self._wfd = os.open(self._path(seq), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._sizes[seq] = 0
        self._starts[seq] = self._written_total
        self._write = (seq, 0)
        self._cut_next = False
        if self._acked == self._read == (old_seq, self._sizes[old_seq]):
            # All of the old one is acknowledged: it goes now, not at the next ack (closed
            # first: on a full disk its space is what the next entry needs).
            self._acked = self._read = self._write
            if self._write_ack(self._acked, self._acked_total):
                os.close(old_fd)
                self._forget_before(seq)
                return self._write
        sync = self.cfg.fsync_interval > 0

        def finish() -> None:
            with contextlib.suppress(OSError):
                if sync:
                    os.fdatasync(old_fd)
            os.close(old_fd)
        _in_thread(finish)
        return self._write

    def _schedule_sync(self) -> None:
        if self.cfg.fsync_interval <= 0 or self._sync_handle is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # at release, outside the loop: release syncs
        self._sync_handle = loop.call_later(self.cfg.fsync_interval, self._sync)

    def _sync(self) -> None:
        self._sync_handle = None
        fds = [self._wfd, self._ack_fd]

        def sync() -> None:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.fdatasync(fd)
        _in_thread(sync)

    # -- when the spool cannot be written --

    def _hold(self, kind: int, body: bytes, batch: Any) -> None:
        self._held.append((kind, body, batch))
        self._held_records += batch.count
        self._held_bytes += ENTRY.size + len(body)
        self.accepted_records += batch.count
        self.peak_cost = max(self.peak_cost, self._cost + self._held_bytes)
        self._writable.clear()
        self._data.set()
        self._schedule_retry()

    def _write_failed(self, e: OSError) -> None:
        self.write_errors += 1
        fields = {"output": self.owner, "path": self._path(self._write[0]),
                  "error": e.strerror or str(e), "errno": _errno_name(e),
                  "held_batches": self._held_batches()}
        if self._failure is None:
            self._failure_since = time.monotonic()
            self._failure_dropped = 0
            self._from_memory = 0
            log.error("cannot write the spool" + ("; batches held in memory until it can"
                                                  if self.block else "; batches dropped"),
                      extra=fields)
        else:
            self.ratelog.error("spool_write", "still cannot write the spool", **fields)
        self._failure = e

    def _writing_works(self) -> None:
        log.info("writing the spool works again", extra={
            "output": self.owner, "path": self.directory,
            "written_from_memory": self._from_memory, "dropped_records": self._failure_dropped,
            "failed_for_s": round(time.monotonic() - self._failure_since, 1)})
        self._failure = None

    def _schedule_retry(self) -> None:
        if self._retry_handle is not None:
            return
        with contextlib.suppress(RuntimeError):  # no loop: release writes them
            self._retry_handle = asyncio.get_running_loop().call_later(RETRY_S, self._retry)

    def _retry(self) -> None:
        self._retry_handle = None
        if self._held or self._held_out:
            self._write_held()
        elif self._failure is not None and self._room_again():
            # Nothing held (what failed was refused): the space is back, so say so now
            # rather than at the next batch (/health would show it degraded meanwhile).
            self._writing_works()
            self._update_writable()
        if self._held or self._held_out or self._failure is not None:
            self._schedule_retry()

    def _room_again(self) -> bool:
        """Whether the spool's filesystem has room again after ENOSPC/EDQUOT (other
        failures clear only when a write works)."""
        e = self._failure
        if e is None or e.errno not in (errno.ENOSPC, errno.EDQUOT):
            return False
        try:
            if self._acked == self._write and self._write[1]:
                # All of the current segment is acknowledged: a new one lets it go, and its
                # space is what the next write needs.
                self._next_segment()
            st = os.statvfs(self.directory)
        except OSError:
            return False
        return st.f_bavail * st.f_frsize >= 4 * (ENTRY_BYTES + ENTRY.size)

    def _write_held(self) -> None:
        """Held batches into the spool, in order, until one fails: first those the writer
        took from memory (so that a rewind reads them back before the rest), then the
        others."""
        wrote = False
        try:
            for lease in list(self._held_out.values()):
                while lease.held:
                    self._spool_taken(lease)
                    wrote = True
                del self._held_out[id(lease)]
            while self._held:
                kind, body, batch = self._held[0]
                start, end, before = self._append(kind, body, batch.count)
                self._held.popleft()
                self._held_records -= batch.count
                self._held_bytes -= ENTRY.size + len(body)
                self._from_memory += 1
                wrote = True
                self._spooled(start, end, batch, before)
        except OSError as e:
            self._write_failed(e)
        if wrote and self._failure is not None:
            self._writing_works()
        self._update_writable()

    def _spool_taken(self, lease: DiskLease) -> None:
        """Write the next entry of a lease handed out from memory; it is part of the lease's
        span in the spool from then on (read, not acknowledged)."""
        assert lease.held
        kind, body, batch = lease.held[0]
        start, end, before = self._append(kind, body, batch.count)
        at = self._read  # after: a new segment may have moved it past an old one let go
        del lease.held[0]
        self._in_spool(batch, end)
        size = end[1] - start[1]
        count = batch.count
        lease.records -= count
        lease.cost -= ENTRY.size + len(body)
        self._out_records -= count
        self._held_bytes -= ENTRY.size + len(body)
        self._from_memory += 1
        span = lease.spooled
        if span is None:
            span = lease.spooled = DiskLease([], 0, 0, at, end, self._generation)
        span.end, span.end_total = end, before + count
        span.cost += size
        span.records += count
        self._cost += size
        self._leased_records += count
        self._read, self._read_total = end, before + count
        self.peak_cost = max(self.peak_cost, self._cost + self._held_bytes)

    def _held_batches(self) -> int:
        return len(self._held) + sum(len(lease.held or ()) for lease in self._held_out.values())

    @property
    def problem(self) -> str | None:
        """What keeps the spool from keeping its promises now, for /health and logctl."""
        e = self._failure
        if e is not None:
            text = f"cannot write the spool: {e.strerror or e} ({_errno_name(e)})"
            if self.block:
                held = self._held_batches()
                return text + f"; {held} batch{'' if held == 1 else 'es'} held in memory"
            return text + f"; {self._failure_dropped} records dropped"
        e = self._ack_failure
        if e is not None:
            return (f"cannot write the spool's ack file: {e.strerror or e} ({_errno_name(e)}); "
                    "records may be sent twice after a restart")
        return None

    # -- consumer side --

    @property
    def queued_records(self) -> int:
        return (self._unread_records + self._leased_records + self._held_records
                + self._out_records)

    @property
    def volatile_records(self) -> int:
        """Records a stop would lose: those held in memory (the spool has the rest)."""
        return self._held_records + self._out_records

    @property
    def queued_bytes(self) -> int:
        return self._cost + self._held_bytes

    def empty(self) -> bool:
        return self._read == self._write and not self._held

    async def get(self, max_cost: int, timeout: float | None) -> DiskLease | None:
        if self.empty():
            if self._closed:
                return None
            self._data.clear()
            try:
                await asyncio.wait_for(self._data.wait(), timeout)
            except TimeoutError:
                return None
            if self.empty():
                return None
        if self._read == self._write:
            return self._lease_held(max_cost)  # after everything on disk
        start = self._read
        batches: list[Any] = []
        cost = records = 0
        mem = self._memory
        while self._read != self._write and (not batches or cost < max_cost):
            while mem and mem[0][0] < self._read:
                self._forget_oldest_in_memory()
            if mem and mem[0][0] == self._read:
                _, end, batch, size, count, before = mem[0]
                self._forget_oldest_in_memory()
                batches.append(batch)
                cost += size
                records += count
                self._read = end
                self._read_total = before + count
                continue
            stop, stop_total = (mem[0][0], mem[0][5]) if mem else (self._write,
                                                                   self._written_total)
            before_pos = self._read
            entries, self._read, self._read_total = await asyncio.to_thread(
                self._read_disk, self._read, self._read_total, stop, stop_total,
                max_cost - cost)
            if not entries and self._read == before_pos:
                break  # nothing readable before `stop` (cannot happen; never spin on it)
            for batch, size, count in entries:
                if batch is not None:  # an unreadable entry is skipped (and counted)
                    batches.append(batch)
                cost += size
                records += count
        self._unread_records -= records
        self._leased_records += records
        lease = DiskLease(batches, cost, records, start, self._read, self._generation,
                          self._read_total)
        if not batches:  # nothing readable: done with at once
            self.ack(lease)
            return None
        return lease

    def _lease_held(self, max_cost: int) -> DiskLease:
        """Held batches straight from memory, for a writer that has read the whole spool."""
        taken: list[tuple[int, bytes, Any]] = []
        cost = records = 0
        held = self._held
        while held and (not taken or cost < max_cost):
            entry = held.popleft()
            taken.append(entry)
            cost += ENTRY.size + len(entry[1])
            records += entry[2].count
        self._held_records -= records
        self._out_records += records
        lease = DiskLease([e[2] for e in taken], cost, records, self._read, self._read,
                          self._generation, held=taken)
        self._held_out[id(lease)] = lease
        self._update_writable()
        return lease

    def _forget_oldest_in_memory(self) -> None:
        size = self._memory.popleft()[3]
        self._memory_bytes -= size

    def _read_disk(self, pos: Position, total: int | None, stop: Position,
                   stop_total: int | None, budget: int
                   ) -> tuple[list[tuple[Any, int, int]], Position, int | None]:
        """Entries from `pos` up to `stop` (at least one, then up to `budget` bytes), as
        (batch or None, bytes, records); where that ends; the records put before there."""
        out: list[tuple[Any, int, int]] = []
        spent = 0
        seq, off = pos
        fd = -1
        try:
            while (seq, off) < stop and (not out or spent < budget):
                end = self._sizes.get(seq, 0) if seq < stop[0] else stop[1]
                if off >= end:
                    seq, off = seq + 1, 0
                    total = self._starts.get(seq, total)
                    if fd >= 0:
                        os.close(fd)
                        fd = -1
                    continue
                legacy = seq in self._legacy
                if fd < 0:
                    try:
                        fd = os.open(self._path(seq), os.O_RDONLY)
                    except FileNotFoundError:
                        # Deleted under a running logd: what it held is gone.
                        after = stop_total if seq == stop[0] else self._starts.get(seq + 1)
                        count = _between(total, after)
                        self._report_missing(seq, seq, total, after)
                        out.append((None, end - off, count or 0))
                        spent += end - off
                        off, total = end, after
                        continue
                hsize = LEGACY_ENTRY.size if legacy else ENTRY.size
                found = _parse(os.pread(fd, hsize, off), legacy, end - off)
                if found is None:
                    resumed = _next_entry(fd, off + 1, end, legacy)
                    if resumed is not None:
                        nxt, after = resumed[0], resumed[1][3]
                    else:
                        nxt = end
                        after = stop_total if (seq, end) == stop else self._starts.get(seq + 1)
                    count = _between(total, after)
                    self._corrupt(seq, off, count, "damaged entry header; read on from the "
                                  "next entry that holds up", nxt - off)
                    out.append((None, nxt - off, count or 0))
                    spent += nxt - off
                    off, total = nxt, after
                    continue
                kind, length, count, before, crc = found
                if before is not None:
                    total = before
                size = hsize + length
                body = os.pread(fd, length, off + hsize)
                if kind == META:
                    out.append((None, size, 0))
                elif len(body) != length or zlib.crc32(body) != crc:
                    self._corrupt(seq, off, count, "checksum mismatch", size)
                    out.append((None, size, count))
                else:
                    try:
                        out.append((codec.decode(kind, body), size, count))
                    except (ValueError, struct.error) as e:  # UnicodeDecodeError is one
                        self._corrupt(seq, off, count, str(e), size)
                        out.append((None, size, count))
                if total is not None:
                    total += count
                spent += size
                off += size
        finally:
            if fd >= 0:
                os.close(fd)
        return out, (seq, off), total

    def _corrupt(self, seq: int, off: int, count: int | None, why: str, nbytes: int) -> None:
        if count:
            self.corrupt_records += count
        self.ratelog.error("corrupt", "spool entry unreadable; skipped", output=self.owner,
                           path=self._path(seq), offset=off, bytes=nbytes,
                           records="unknown" if count is None else count, error=why)

    def ack(self, lease: DiskLease) -> None:
        if lease.generation != self._generation:
            return  # a lease from before a rewind: read again since
        if lease.held is not None:
            # Taken from memory: the position moves only over what of it reached the spool.
            self._held_out.pop(id(lease), None)
            self._out_records -= lease.records
            self._held_bytes -= lease.cost
            self._delivered_from_memory(lease.held)
            lease.held = []
            if lease.spooled is not None:
                self.ack(lease.spooled)
            self._update_writable()
            return
        self._leased_records -= lease.records
        self._cost -= lease.cost
        if lease.start != self._acked:
            self._done_early[lease.start] = lease
            return
        end, total = lease.end, lease.end_total
        while end in self._done_early:
            later = self._done_early.pop(end)
            end, total = later.end, later.end_total
        self._acked, self._acked_total = end, total
        receipts = self._receipts
        while receipts and receipts[0][0] <= end:
            _, receipt, n = receipts.popleft()
            receipt.delivered(n)
        if self._write_ack(end, total):
            self._forget_before(end[0])
        if self._held or self._held_out:
            self._write_held()  # space may have been freed
        if not self._held and self._cost <= self.resume_below:
            self._writable.set()

    def _forget_before(self, seq: int) -> None:
        """Delete the segments before `seq` (the ack file says they were sent)."""
        for old in [s for s in self._sizes if s < seq]:
            del self._sizes[old]
            self._starts.pop(old, None)
            self._legacy.discard(old)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path(old))

    def _write_ack(self, pos: Position, total: int | None) -> bool:
        head = _ACK_HEAD.pack(ACK_MAGIC, pos[0], pos[1], UNKNOWN if total is None else total)
        try:
            os.pwrite(self._ack_fd, head + _CRC.pack(zlib.crc32(head)), 0)
        except OSError as e:
            # Segments stay until it can be written: a restart sends them again, and loses
            # nothing.
            self.ratelog.error("ack_write", "cannot write the spool's ack file; records may "
                               "be sent twice after a restart", output=self.owner,
                               path=os.path.join(self.directory, "ack"),
                               error=e.strerror or str(e), errno=_errno_name(e))
            self._ack_failure = e
            return False
        self._ack_failure = None
        return True

    def rewind(self) -> None:
        """Read again from the last acknowledged position (a new writer takes over; what the
        previous one held unacknowledged is sent again)."""
        self._generation += 1
        early = sum(lease.records for lease in self._done_early.values())
        self._done_early.clear()
        self._memory.clear()
        self._memory_bytes = 0
        self._unread_records += self._leased_records + early
        self._leased_records = 0
        self._cost = self._spooled_bytes(self._acked)
        self._read = self._acked
        self._read_total = self._acked_total
        if self._held_out:
            # Taken from memory and not acknowledged: first among the held again.
            taken = [e for lease in self._held_out.values() for e in lease.held or ()]
            self._held.extendleft(reversed(taken))
            self._held_records += self._out_records
            self._out_records = 0
            self._held_out.clear()
        if not self.empty():
            self._data.set()
        self._update_writable()

    def reconfigure(self, cfg: BufferConfig) -> None:
        """New settings for the same spool (a reload changed them)."""
        self.cfg = cfg
        self.segment_bytes = min(64 * 1024**2, max(1024**2, cfg.max_bytes // 8))
        super().reconfigure(cfg)

    def _update_writable(self) -> None:
        if self._held:  # producers wait for the spool to take what it holds in memory
            self._writable.clear()
        else:
            super()._update_writable()

    def _spooled_bytes(self, pos: Position) -> int:
        return sum(size - (pos[1] if seq == pos[0] else 0)
                   for seq, size in self._sizes.items() if seq >= pos[0])

    def close(self) -> None:
        """Nothing more is put (shutdown): wake paused producers and a waiting writer."""
        self._closed = True
        self._writable.set()
        self._data.set()

    def keep_held(self) -> None:
        """At a stop: batches held in memory go to the spool if it can take them now, so
        the next start sends them (what cannot be written is lost, counted and logged)."""
        if not (self._held or self._held_out) or self._wfd < 0:
            return
        self.rewind()  # what the writer took from memory goes first
        batches = len(self._held)
        self._write_held()
        if self._held:
            self.dropped_records += self._held_records
            self.dropped_bytes += sum(entry[2].nbytes for entry in self._held)
            for _, _, batch in self._held:
                receipt = self._receipt_of.pop(id(batch), None)
                if receipt is not None:
                    receipt.lose(batch.count)
            log.error("cannot write batches held in memory to the spool at stop; their "
                      "records are lost", extra={
                          "output": self.owner, "path": self.directory,
                          "records": self._held_records, "batches": len(self._held)})
        else:
            log.info("batches held in memory written to the spool at stop; they are sent "
                     "after the next start", extra={"output": self.owner,
                                                    "batches": batches})


    def release(self) -> None:
        """Sync and let go of the spool's files (the process stops, or the output is gone).
        Batches still held in memory are tried once more, so the next start sends them."""
        if self._sync_handle is not None:
            self._sync_handle.cancel()
            self._sync_handle = None
        if self._retry_handle is not None:
            self._retry_handle.cancel()
            self._retry_handle = None
        self.keep_held()
        for fd in (self._wfd, self._ack_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    if self.cfg.fsync_interval > 0:
                        os.fdatasync(fd)
                    os.close(fd)
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
        self._wfd = self._ack_fd = self._lock_fd = -1

    def stats(self) -> BufferStats:
        return {"buffer": "disk", "spool_bytes": self._cost,
                "spool_segments": len(self._sizes), "replayed": self.replayed_records,
                "corrupt": self.corrupt_records, "spool_write_errors": self.write_errors,
                "refused": self.refused_records,
                "held_records": self._held_records + self._out_records,
                "ack_damaged": self.ack_damaged, "lost_records": self.lost_records,
                "missing_segments": self.missing_segments, "problem": self.problem}


def _read_ack(raw: bytes) -> tuple[int, int, int | None, str | None]:
    """(segment, offset, records acknowledged (None in the old format), why it cannot be
    believed (None if it can)) of an ack file's bytes; segment 0 when there is none."""
    if not raw:
        return 0, 0, None, None
    if len(raw) == ACK.size:
        magic, seq, off, total, crc = ACK.unpack(raw)
        if magic == ACK_MAGIC and crc == zlib.crc32(raw[:_ACK_HEAD.size]):
            return seq, off, total, None
        return 0, 0, None, "its checksum does not hold"
    if len(raw) == LEGACY_ACK.size:
        seq, off = LEGACY_ACK.unpack(raw)
        return seq, off, None, None
    return 0, 0, None, f"it has {len(raw)} bytes, not {ACK.size} (or {LEGACY_ACK.size})"


def _between(before: int | None, after: int | None) -> int | None:
    if before is None or after is None or after < before:
        return None
    return after - before


def _errno_name(e: OSError) -> str:
    return errno.errorcode.get(e.errno or 0, str(e.errno))


def _write_all(fd: int, *parts: bytes) -> None:
    """One writev of the parts (no copy to join them); the rest if it fell short."""
    n = os.writev(fd, parts)
    total = sum(map(len, parts))
    if n < total:
        rest = memoryview(b"".join(parts))[n:]
        while rest:
            rest = rest[os.write(fd, rest):]


def _in_thread(fn: Callable[[], None]) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        fn()  # at release, outside the loop
        return
    loop.run_in_executor(None, fn)


class HandedOver(Buffer):
    """What an output a reload replaced sees of the spool it handed to its replacement:
    nothing more to read, while its acknowledgements of what it holds still count."""

    persistent = True
    entry_bytes = ENTRY_BYTES

    def __init__(self, spool: Buffer) -> None:
        # Not Buffer.__init__: the bound and the counters are the spool's, read through.
        self._spool = spool
        self._closed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._spool, name)

    @property
    def cost(self) -> int:
        return self._spool.cost

    @property
    def full(self) -> bool:
        return self._spool.full

    @property
    def queued_records(self) -> int:
        return self._spool.queued_records

    @property
    def queued_bytes(self) -> int:
        return self._spool.queued_bytes

    @property
    def volatile_records(self) -> int:
        return self._spool.volatile_records

    @property
    def problem(self) -> str | None:
        return self._spool.problem

    async def wait_writable(self) -> None:
        await self._spool.wait_writable()

    def empty(self) -> bool:
        return True

    async def get(self, max_cost: int, timeout: float | None) -> None:
        if not self._closed:
            await asyncio.sleep(min(timeout or 0.05, 0.05))

    def ack(self, lease: DiskLease) -> None:
        self._spool.ack(lease)

    def put(self, batch: Any, receipt: Receipt | None = None) -> bool:
        raise RuntimeError("a handed-over spool takes no more batches")

    def close(self) -> None:
        self._closed = True

    def keep_held(self) -> None:
        pass  # the replacement's spool

    def stats(self) -> BufferStats:
        return self._spool.stats()
