"""The disk buffer: a spool of segment files that outlives restarts and kill -9.

Every batch is appended to the current segment as it is put (one write(2); the page cache
keeps it through a crash of the process, and `fsync_interval` after a write it is synced
for a crash of the machine). The writer reads in order and acknowledges what it wrote; the
acknowledged position is kept in the `ack` file, and segments wholly behind it are deleted.
At start everything past that position is replayed. Batches put while `memory_bytes` of them
wait are also kept in RAM, so a writer that keeps up never reads the disk back.

    DIR/lock                   flock: one process per spool
    DIR/ack                    segment number, offset: what is written
    DIR/0000000000000001.seg   entries: 16-byte header, body (see ENTRY)

`max_bytes` bounds what the spool holds unacknowledged; `when_full` applies beyond it.
Delivery is at least once: a batch a writer sent but had not acknowledged when the process
died is sent again after the restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import struct
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from logd.buffers import codec
from logd.config import BufferConfig

log = logging.getLogger("logd.spool")

# magic, kind, flags, body length, records, crc32 of the body
ENTRY = struct.Struct("<HBBIII")
MAGIC = 0x474C  # "LG"
ACK = struct.Struct("<QQ")
Position = tuple[int, int]  # (segment, offset)
# Payload bytes an output puts in one entry at most (a larger batch is put in slices): what one
# damaged entry can lose.
ENTRY_BYTES = 64 * 1024


class SpoolError(Exception):
    """The spool directory cannot be used (not writable, or another process holds it)."""


@dataclass
class DiskLease:
    batches: list[Any]
    cost: int
    records: int
    start: Position
    end: Position
    generation: int = field(default=0)


class DiskBuffer:
    persistent = True
    entry_bytes = ENTRY_BYTES

    def __init__(self, cfg: BufferConfig, owner: str) -> None:
        self.owner = owner
        self.cfg = cfg
        self.max_bytes = cfg.max_bytes
        self.block = cfg.when_full == "block"
        self.resume_below = cfg.max_bytes * 3 // 4
        self.segment_bytes = min(64 * 1024**2, max(1024**2, cfg.max_bytes // 8))
        self.directory = ""
        self._lock_fd = -1
        self._ack_fd = -1
        self._wfd = -1
        self._sizes: dict[int, int] = {}    # segment -> bytes in it
        self._write: Position = (1, 0)
        self._read: Position = (1, 0)
        self._acked: Position = (1, 0)
        self._done_early: dict[Position, DiskLease] = {}  # acks that came out of order
        self._memory: deque[tuple[Position, Position, Any, int, int]] = deque()
        self._memory_bytes = 0
        self._generation = 0
        self._cost = 0              # unacknowledged bytes in the spool
        self._unread_records = 0
        self._leased_records = 0
        self._data = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._closed = False
        self._sync_handle: asyncio.TimerHandle | None = None
        self.accepted_records = 0
        self.dropped_records = 0
        self.dropped_bytes = 0
        self.peak_cost = 0
        self.replayed_records = 0
        self.corrupt_records = 0
        self.write_errors = 0

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
            self._recover()
            self._check_kind(kind)
        except OSError as e:
            self.release()
            raise SpoolError(f"spool {directory}: {e.strerror or e}") from None
        except SpoolError:
            self.release()
            raise

    def _check_kind(self, kind: str) -> None:
        if not kind:
            return
        path = os.path.join(self.directory, "type")
        try:
            with open(path) as f:
                held = f.read().strip()
        except FileNotFoundError:
            held = ""
        if held == kind:
            return
        if held and self._unread_records:
            raise SpoolError(f"spool {self.directory} holds records of a {held} output, not "
                             f"{kind}: let a {held} output send them, or give this one "
                             "another buffer path")
        # Empty, new, or a type file a crash left unwritten: this output's from now on.
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(kind + "\n")
        os.replace(tmp, path)

    def _recover(self) -> None:
        directory = self.directory
        self._ack_fd = os.open(os.path.join(directory, "ack"), os.O_RDWR | os.O_CREAT, 0o600)
        raw = os.pread(self._ack_fd, ACK.size, 0)
        acked: Position = ACK.unpack(raw) if len(raw) == ACK.size else (0, 0)
        segments = sorted(int(n[:-4]) for n in os.listdir(directory)
                          if n.endswith(".seg") and n[:-4].isdigit())
        for seq in segments:
            if seq < acked[0]:
                os.unlink(self._path(seq))
        segments = [s for s in segments if s >= acked[0]]
        if not segments:
            seq = max(acked[0], 1)
            acked = (seq, 0)
            segments = [seq]
            os.close(os.open(self._path(seq), os.O_WRONLY | os.O_CREAT, 0o600))
        elif acked[0] < segments[0]:
            acked = (segments[0], 0)
        # The ack file can be ahead of a segment's data after a power loss (it was synced,
        # the data was not): what is gone is gone, and reading starts at the real end.
        acked = (acked[0], min(acked[1], os.path.getsize(self._path(acked[0]))))
        records = waiting = 0
        for seq in segments:
            start = acked[1] if seq == acked[0] else 0
            size, n, nbytes = self._scan(seq, start)
            self._sizes[seq] = size
            records += n
            waiting += nbytes
        self._acked = self._read = acked
        last = segments[-1]
        self._write = (last, self._sizes[last])
        self._wfd = os.open(self._path(last), os.O_WRONLY | os.O_APPEND)
        self._cost = waiting
        self._unread_records = records
        self.replayed_records = records
        if records:
            self._data.set()
            log.info("spool has records from before; sending them first", extra={
                "output": self.owner, "records": records, "bytes": waiting,
                "path": directory})
        if self._cost >= self.max_bytes and self.block:
            self._writable.clear()

    def _path(self, seq: int) -> str:
        return os.path.join(self.directory, f"{seq:016d}.seg")

    def _scan(self, seq: int, start: int) -> tuple[int, int, int]:
        """(valid size, records, bytes) of a segment from `start`; a torn or damaged tail
        (a crash mid-write) is cut off."""
        path = self._path(seq)
        size = os.path.getsize(path)
        records = 0
        off = start
        with open(path, "rb") as f:
            while off < size:
                f.seek(off)
                head = f.read(ENTRY.size)
                if len(head) < ENTRY.size:
                    break
                magic, _kind, _flags, length, count, _crc = ENTRY.unpack(head)
                if magic != MAGIC or off + ENTRY.size + length > size:
                    break
                records += count
                off += ENTRY.size + length
        if off < size:
            log.warning("spool segment has a damaged tail; cut off", extra={
                "output": self.owner, "path": path, "offset": off, "bytes": size - off})
            os.truncate(path, off)
        return off, records, off - start

    # -- producer side --

    @property
    def full(self) -> bool:
        return self._cost >= self.max_bytes

    def put(self, batch: Any) -> bool:
        batch.compact()
        kind, body = codec.encode(batch)
        head = ENTRY.pack(MAGIC, kind, 0, len(body), batch.count, zlib.crc32(body))
        size = len(head) + len(body)
        if not self.block and self._cost + size > self.max_bytes:
            self.dropped_records += batch.count
            self.dropped_bytes += batch.nbytes
            return False
        seq, off = self._write
        try:
            if off and off + size > self.segment_bytes:
                seq, off = self._next_segment()
            _write_all(self._wfd, head, body)
        except OSError as e:
            # Not on disk, so not taken: counted as dropped, and said.
            with contextlib.suppress(OSError):
                os.ftruncate(self._wfd, off)
            self.write_errors += 1
            self.dropped_records += batch.count
            self.dropped_bytes += batch.nbytes
            log.error("cannot write to the spool; batch dropped", extra={
                "output": self.owner, "path": self._path(seq), "error": e.strerror,
                "records": batch.count})
            return False
        end = (seq, off + size)
        self._write = end
        self._sizes[seq] = end[1]
        if self._memory_bytes + size <= self.cfg.memory_bytes:
            self._memory.append(((seq, off), end, batch, size, batch.count))
            self._memory_bytes += size
        self._cost += size
        self._unread_records += batch.count
        self.accepted_records += batch.count
        self.peak_cost = max(self.peak_cost, self._cost)
        self._data.set()
        self._schedule_sync()
        if self._cost >= self.max_bytes and self.block:
            self._writable.clear()
            return True
        return False

    def _next_segment(self) -> Position:
        old_fd, old_seq = self._wfd, self._write[0]
        seq = old_seq + 1
        self._wfd = os.open(self._path(seq), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._sizes[seq] = 0
        self._write = (seq, 0)
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
        loop = asyncio.get_running_loop()
        self._sync_handle = loop.call_later(self.cfg.fsync_interval, self._sync)

    def _sync(self) -> None:
        self._sync_handle = None
        fds = [self._wfd, self._ack_fd]

        def sync() -> None:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.fdatasync(fd)
        _in_thread(sync)

    async def wait_writable(self) -> None:
        await self._writable.wait()

    # -- consumer side --

    @property
    def queued_records(self) -> int:
        return self._unread_records + self._leased_records

    @property
    def volatile_records(self) -> int:
        """Records a stop would lose: none, they are in the spool."""
        return 0

    @property
    def queued_bytes(self) -> int:
        return self._cost

    def empty(self) -> bool:
        return self._read == self._write

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
        start = self._read
        batches: list[Any] = []
        cost = records = 0
        mem = self._memory
        while self._read != self._write and (not batches or cost < max_cost):
            while mem and mem[0][0] < self._read:
                self._forget_oldest_in_memory()
            if mem and mem[0][0] == self._read:
                _, end, batch, size, count = mem[0]
                self._forget_oldest_in_memory()
                batches.append(batch)
                cost += size
                records += count
                self._read = end
                continue
            stop = mem[0][0] if mem else self._write
            before = self._read
            entries, self._read = await asyncio.to_thread(self._read_disk, self._read, stop,
                                                          max_cost - cost)
            if not entries and self._read == before:
                break  # nothing readable before `stop` (cannot happen; never spin on it)
            for batch, size, count in entries:
                if batch is not None:  # an unreadable entry is skipped (and counted)
                    batches.append(batch)
                cost += size
                records += count
        self._unread_records -= records
        self._leased_records += records
        lease = DiskLease(batches, cost, records, start, self._read, self._generation)
        if not batches:  # nothing readable: done with at once
            self.ack(lease)
            return None
        return lease

    def _forget_oldest_in_memory(self) -> None:
        _, _, _, size, _ = self._memory.popleft()
        self._memory_bytes -= size

    def _read_disk(self, pos: Position, stop: Position, budget: int
                   ) -> tuple[list[tuple[Any, int, int]], Position]:
        """Entries from `pos` up to `stop` (at least one, then up to `budget` bytes)."""
        out: list[tuple[Any, int, int]] = []
        spent = 0
        seq, off = pos
        fd = -1
        try:
            while (seq, off) < stop and (not out or spent < budget):
                if off >= self._sizes.get(seq, 0):
                    seq, off = seq + 1, 0
                    if fd >= 0:
                        os.close(fd)
                        fd = -1
                    continue
                if fd < 0:
                    fd = os.open(self._path(seq), os.O_RDONLY)
                head = os.pread(fd, ENTRY.size, off)
                end = self._sizes.get(seq, 0) if seq < stop[0] else stop[1]
                magic, kind, _flags, length, count, crc = ENTRY.unpack(head) \
                    if len(head) == ENTRY.size else (0, 0, 0, 0, 0, 0)
                if magic != MAGIC or off + ENTRY.size + length > end:
                    # A header that cannot be trusted: the rest of the segment is skipped.
                    self._corrupt(seq, off, 0, "damaged entry header; rest of the segment "
                                  "skipped")
                    out.append((None, end - off, 0))
                    spent += end - off
                    off = end
                    continue
                body = os.pread(fd, length, off + ENTRY.size)
                size = ENTRY.size + length
                if len(body) != length or zlib.crc32(body) != crc:
                    self._corrupt(seq, off, count, "checksum mismatch")
                    out.append((None, size, count))
                else:
                    try:
                        out.append((codec.decode(kind, body), size, count))
                    except (ValueError, struct.error) as e:  # UnicodeDecodeError is one
                        self._corrupt(seq, off, count, str(e))
                        out.append((None, size, count))
                spent += size
                off += size
        finally:
            if fd >= 0:
                os.close(fd)
        return out, (seq, off)

    def _corrupt(self, seq: int, off: int, count: int, why: str) -> None:
        self.corrupt_records += count
        log.error("spool entry unreadable; skipped", extra={
            "output": self.owner, "path": self._path(seq), "offset": off, "records": count,
            "error": why})

    def ack(self, lease: DiskLease) -> None:
        if lease.generation != self._generation:
            return  # a lease from before a rewind: read again since
        self._leased_records -= lease.records
        self._cost -= lease.cost
        if lease.start != self._acked:
            self._done_early[lease.start] = lease
            return
        end = lease.end
        while end in self._done_early:
            end = self._done_early.pop(end).end
        self._acked = end
        os.pwrite(self._ack_fd, ACK.pack(*end), 0)
        for seq in [s for s in self._sizes if s < end[0]]:
            del self._sizes[seq]
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path(seq))
        if self._cost <= self.resume_below:
            self._writable.set()

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
        if not self.empty():
            self._data.set()
        self._update_writable()

    def reconfigure(self, cfg: BufferConfig) -> None:
        """New settings for the same spool (a reload changed them)."""
        self.cfg = cfg
        self.max_bytes = cfg.max_bytes
        self.block = cfg.when_full == "block"
        self.resume_below = cfg.max_bytes * 3 // 4
        self.segment_bytes = min(64 * 1024**2, max(1024**2, cfg.max_bytes // 8))
        self._update_writable()

    def _update_writable(self) -> None:
        if self.block and self._cost >= self.max_bytes:
            self._writable.clear()
        elif self._cost <= self.resume_below or not self.block:
            self._writable.set()

    def _spooled_bytes(self, pos: Position) -> int:
        return sum(size - (pos[1] if seq == pos[0] else 0)
                   for seq, size in self._sizes.items() if seq >= pos[0])

    def close(self) -> None:
        """Nothing more is put (shutdown): wake paused producers and a waiting writer."""
        self._closed = True
        self._writable.set()
        self._data.set()

    def release(self) -> None:
        """Sync and let go of the spool's files (the process stops, or the output is gone)."""
        if self._sync_handle is not None:
            self._sync_handle.cancel()
            self._sync_handle = None
        for fd in (self._wfd, self._ack_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    if self.cfg.fsync_interval > 0:
                        os.fdatasync(fd)
                    os.close(fd)
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
        self._wfd = self._ack_fd = self._lock_fd = -1

    def stats(self) -> dict[str, Any]:
        return {"buffer": "disk", "spool_bytes": self._cost,
                "spool_segments": len(self._sizes), "replayed": self.replayed_records,
                "corrupt": self.corrupt_records, "spool_write_errors": self.write_errors}


def _write_all(fd: int, head: bytes, body: bytes) -> None:
    """One writev of header and body (no copy to join them); the rest if it fell short."""
    n = os.writev(fd, (head, body))
    if n < len(head) + len(body):
        rest = memoryview(head + body)[n:]
        while rest:
            rest = rest[os.write(fd, rest):]


def _in_thread(fn: Any) -> None:
    asyncio.get_running_loop().run_in_executor(None, fn)


class HandedOver:
    """What an output a reload replaced sees of the spool it handed to its replacement:
    nothing more to read, while its acknowledgements of what it holds still count."""

    persistent = True

    def __init__(self, spool: DiskBuffer) -> None:
        self._spool = spool
        self._closed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._spool, name)

    def empty(self) -> bool:
        return True

    async def get(self, max_cost: int, timeout: float | None) -> None:
        if not self._closed:
            await asyncio.sleep(min(timeout or 0.05, 0.05))

    def ack(self, lease: DiskLease) -> None:
        self._spool.ack(lease)

    def put(self, batch: Any) -> bool:
        raise RuntimeError("a handed-over spool takes no more batches")

    def close(self) -> None:
        self._closed = True

    def rewind(self) -> None:
        pass

    def release(self) -> None:
        pass
