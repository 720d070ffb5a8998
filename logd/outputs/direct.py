"""Appending to a file with O_DIRECT from the event loop without waiting on the disk.

The loop copies records into page-aligned buffers (mmap); a full buffer is handed to a worker
thread that `pwrite`s it at its aligned offset while the loop fills the next one. Up to
`shards` buffers are in flight at once (parallel writes at distinct offsets keep the device
queue busy). A flush writes the unaligned tail padded to the block size, then `ftruncate`s the
file to its true length so readers never see padding; the tail block is kept and rewritten by
the next write. Where the filesystem refuses O_DIRECT the same code runs with buffered I/O.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import mmap
import os
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

log = logging.getLogger("logd.file")


def alignment_for(directory: str) -> int:
    """The write alignment for files in `directory`: its block size, at least 4096."""
    try:
        bs = os.statvfs(directory).f_bsize
    except OSError:
        return 4096
    if bs <= 0 or bs & (bs - 1) or bs > 1 << 20:
        return 4096
    return max(4096, bs)


@dataclass
class WriteStats:
    """Seed-000 counters: flushes are disk writes done, swaps full buffers handed off."""

    flushes: int = 0
    swaps: int = 0
    errors: int = 0
    flush_s_total: float = 0.0
    flush_s_max: float = 0.0
    write_s_total: float = 0.0
    write_s_max: float = 0.0
    recent_flush_s: list[float] = field(default_factory=list)

    def record(self, write_s: float, flush_s: float) -> None:
        self.flushes += 1
        self.write_s_total += write_s
        self.flush_s_total += flush_s
        if write_s > self.write_s_max:
            self.write_s_max = write_s
        if flush_s > self.flush_s_max:
            self.flush_s_max = flush_s


class BufferPool:
    """Aligned buffers shared by the files of one output; bounds what is in flight."""

    def __init__(self, size: int, in_flight: int) -> None:
        self.size = size
        self._free: list[mmap.mmap] = []
        self._slots = asyncio.Semaphore(in_flight)

    def take(self) -> mmap.mmap:
        """A buffer for a file to fill (not counted against the in-flight bound)."""
        return self._free.pop() if self._free else mmap.mmap(-1, self.size)

    def give_back(self, buf: mmap.mmap) -> None:
        if len(self._free) < 8:
            self._free.append(buf)

    async def acquire_slot(self) -> None:
        await self._slots.acquire()

    def release_slot(self) -> None:
        self._slots.release()


class DirectIO:
    """What all files of one output share: thread pool, buffer pool, alignment, stats."""

    def __init__(self, buffer_size: int, shards: int, direct: bool, sync_on_flush: bool,
                 file_mode: int) -> None:
        self.requested_size = buffer_size
        self.shards = shards
        self.direct = direct
        self.sync_on_flush = sync_on_flush
        self.file_mode = file_mode
        self.executor = ThreadPoolExecutor(max_workers=shards + 1,
                                           thread_name_prefix="logd-file")
        self.stats = WriteStats()
        self._pools: dict[int, BufferPool] = {}
        self.fallback_warned = False

    def pool(self, block: int) -> BufferPool:
        size = -(-self.requested_size // block) * block
        p = self._pools.get(size)
        if p is None:
            p = self._pools[size] = BufferPool(size, self.shards)
        return p

    async def call(self, fn, *args):  # type: ignore[no-untyped-def]
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True)


def _open(path: str, direct: bool, mode: int) -> tuple[int, bool, int, bytes, int]:
    """Open for appending: (fd, direct?, size, tail bytes of the last partial block, block)."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    block = alignment_for(directory)
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
    fd = -1
    used_direct = False
    if direct:
        try:
            fd = os.open(path, flags | os.O_DIRECT, mode)
            used_direct = True
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
    if fd < 0:
        fd = os.open(path, flags, mode)
    size = os.fstat(fd).st_size
    tail_len = size % block
    tail = b""
    if tail_len:
        with open(path, "rb") as f:
            f.seek(size - tail_len)
            tail = f.read(tail_len)
    return fd, used_direct, size, tail, block


def _write(fd: int, buf: mmap.mmap, length: int, offset: int, truncate_to: int | None,
           sync: bool) -> tuple[float, bool]:
    """Runs in a worker thread: write, then truncate/sync. Returns (write seconds, fell back)."""
    fell_back = False
    view = memoryview(buf)
    try:
        t0 = time.perf_counter()
        done = 0
        while done < length:
            try:
                n = os.pwrite(fd, view[done:length], offset + done)
            except OSError as e:
                flags = _fcntl_getfl(fd)
                if e.errno != errno.EINVAL or not flags & os.O_DIRECT:
                    raise
                # The filesystem took O_DIRECT at open but refuses the write: go buffered.
                _fcntl_setfl(fd, flags & ~os.O_DIRECT)
                fell_back = True
                continue
            if n <= 0:
                raise OSError(errno.EIO, "pwrite wrote nothing")
            done += n
        write_s = time.perf_counter() - t0
    finally:
        view.release()
    if truncate_to is not None:
        os.ftruncate(fd, truncate_to)
    if sync:
        os.fdatasync(fd)
    return write_s, fell_back


def _fcntl_getfl(fd: int) -> int:
    import fcntl
    return fcntl.fcntl(fd, fcntl.F_GETFL)


def _fcntl_setfl(fd: int, flags: int) -> None:
    import fcntl
    fcntl.fcntl(fd, fcntl.F_SETFL, flags)


class DirectFile:
    """One open file being appended to. Only the output's writer task calls its methods."""

    def __init__(self, path: str, io: DirectIO) -> None:
        self.path = path
        self.io = io
        self.fd = -1
        self.direct = False
        self.block = 4096
        self.size = 0            # true length once everything handed over is written
        self.opened_at = 0.0
        self._pool: BufferPool | None = None
        self._buf: mmap.mmap | None = None
        self._fill = 0
        self._base = 0           # file offset of _buf[0]; always block-aligned
        self._dirty = False      # bytes in _buf not yet on disk
        self._inflight: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        fd, direct, size, tail, block = await self.io.call(
            _open, self.path, self.io.direct, self.io.file_mode)
        self.fd, self.direct, self.size, self.block = fd, direct, size, block
        if self.io.direct and not direct:
            self._warn_fallback("open refused O_DIRECT")
        self._pool = self.io.pool(block)
        self._base = size - len(tail)
        self._buf = self._pool.take()
        self._buf[:len(tail)] = tail
        self._fill = len(tail)
        self.opened_at = time.time()

    def _warn_fallback(self, why: str) -> None:
        if not self.io.fallback_warned:
            self.io.fallback_warned = True
            log.warning("filesystem refuses O_DIRECT; using buffered writes",
                        extra={"path": self.path, "reason": why})

    async def append(self, pieces: Iterable[bytes]) -> None:
        """Append bytes; awaits only when every in-flight slot is busy (the disk is behind)."""
        assert self._buf is not None and self._pool is not None
        size = self._pool.size
        for data in pieces:
            n = len(data)
            if not n:
                continue
            self.size += n
            view = memoryview(data)
            pos = 0
            while pos < n:
                k = min(n - pos, size - self._fill)
                self._buf[self._fill:self._fill + k] = view[pos:pos + k]
                self._fill += k
                self._dirty = True
                pos += k
                if self._fill == size:
                    await self._hand_off_full()

    async def _hand_off_full(self) -> None:
        assert self._buf is not None and self._pool is not None
        pool = self._pool
        await pool.acquire_slot()
        buf, base = self._buf, self._base
        self._base += pool.size
        self._buf = pool.take()
        self._fill = 0
        self._dirty = False
        self.io.stats.swaps += 1
        task = asyncio.get_running_loop().create_task(
            self._write_with_retry(buf, pool.size, base, None, False, release=True))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _write_with_retry(self, buf: mmap.mmap, length: int, offset: int,
                                truncate_to: int | None, sync: bool, release: bool) -> None:
        """Write until it succeeds: what was accepted is never given up on a disk error."""
        started = time.perf_counter()
        delay = 0.05
        try:
            while True:
                try:
                    write_s, fell_back = await self.io.call(
                        _write, self.fd, buf, length, offset, truncate_to, sync)
                    break
                except OSError as e:
                    self.io.stats.errors += 1
                    log.error("write failed; retrying", extra={
                        "path": self.path, "error": str(e), "retry_in_s": delay})
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
            if fell_back:
                self.direct = False
                self._warn_fallback("write refused O_DIRECT")
            self.io.stats.record(write_s, time.perf_counter() - started)
        finally:
            if release:
                assert self._pool is not None
                self._pool.give_back(buf)
                self._pool.release_slot()

    async def wait_written(self) -> None:
        while self._inflight:
            await asyncio.gather(*list(self._inflight))

    async def flush(self, sync: bool = False) -> None:
        """Make everything appended so far visible in the file, at its exact length."""
        await self.wait_written()
        if not self._dirty and not sync:
            return
        assert self._buf is not None
        fill = self._fill
        padded = -(-fill // self.block) * self.block
        if padded > fill:
            self._buf[fill:padded] = bytes(padded - fill)
        if fill:
            await self._write_with_retry(self._buf, padded, self._base,
                                         self._base + fill, sync, release=False)
        elif sync:
            await self.io.call(os.fdatasync, self.fd)
        self._dirty = False
        # Keep the partial tail block: the next write rewrites it whole, aligned.
        whole = fill - fill % self.block
        if whole:
            tail = fill - whole
            self._buf[0:tail] = self._buf[whole:fill]
            self._base += whole
            self._fill = tail

    async def close(self, sync: bool = False) -> None:
        if self.fd < 0:
            return
        try:
            await self.flush(sync=sync)
        finally:
            fd, self.fd = self.fd, -1
            await self.io.call(os.close, fd)
            if self._buf is not None and self._pool is not None:
                self._pool.give_back(self._buf)
            self._buf = None
