"""Appending to a file with O_DIRECT from the event loop without waiting on the disk.

The loop copies records into page-aligned buffers (mmap). Full buffers queue up per file and
one worker-thread job at a time writes everything queued with a single `pwritev` at the aligned
offset, while the loop keeps filling: writes to a file happen in order, so the file never has a
hole, and one thread hand-off covers many buffers. Up to `shards` buffers per output are queued
or in flight; past that the writer waits (the disk is behind, and the output's buffer absorbs).

A flush writes the unaligned tail through a second, buffered descriptor: exactly the records'
bytes, never padding, so a reader (or a crash) never sees NULs. The tail's partial block stays
in memory and is rewritten whole, aligned, by the next O_DIRECT write. Where the filesystem
refuses O_DIRECT the same code runs with buffered I/O.

A failing write is retried with backoff in its thread until it succeeds, or until the output
gives up at shutdown (`DirectIO.abandon`), so nothing accepted is dropped on a transient error.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import mmap
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from logd.metrics import FLUSH_SECONDS_BUCKETS, Histogram

log = logging.getLogger("logd.file")

T = TypeVar("T")


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
    torn_records: int = 0   # files found ending mid-record at open (cut back)
    torn_bytes: int = 0
    errors: int = 0
    retries: int = 0
    flush_s_total: float = 0.0
    flush_s_max: float = 0.0
    write_s_total: float = 0.0
    write_s_max: float = 0.0
    flush_hist: Histogram = field(default_factory=lambda: Histogram(FLUSH_SECONDS_BUCKETS))

    def record(self, write_s: float, flush_s: float) -> None:
        self.flushes += 1
        self.flush_hist.observe(flush_s)
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
        # Set when the output stops retrying failed writes (shutdown past its deadline).
        self.abandoned = threading.Event()
        self.abandoned_bytes = 0

    def pool(self, block: int) -> BufferPool:
        size = -(-self.requested_size // block) * block
        p = self._pools.get(size)
        if p is None:
            p = self._pools[size] = BufferPool(size, self.shards)
        return p

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def abandon(self) -> None:
        """Stop retrying: writes that fail from now on give up (and are counted)."""
        self.abandoned.set()

    def shutdown(self) -> None:
        self.abandon()
        self.executor.shutdown(wait=False, cancel_futures=True)


def _open(path: str, direct: bool, mode: int
          ) -> tuple[int, int, bool, int, bytes, int, int]:
    """Open for appending: (fd, tail fd, direct?, size, bytes of the last partial block, block,
    bytes of a torn last record cut off).

    The tail descriptor is a second, buffered one for unaligned tails (the same fd when the
    first is buffered too). A file that does not end with LF ends in a record torn by a crash
    (a whole aligned buffer reached the disk, the rest of its last record did not): it is cut
    back to its last LF, or the next record would be glued onto the torn one.
    """
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
    tail_fd = -1
    try:
        _lock(fd, path)
        tail_fd = os.open(path, flags, mode) if used_direct else fd
        size = os.fstat(fd).st_size
        cut = 0
        if size:
            keep = _end_of_last_record(path, size)
            if keep < size:
                os.ftruncate(tail_fd, keep)
                cut, size = size - keep, keep
        tail_len = size % block
        tail = b""
        if tail_len:
            with open(path, "rb") as f:
                f.seek(size - tail_len)
                tail = f.read(tail_len)
    except BaseException:
        # Closing releases the lock: a failure here must not leave the file held.
        _close_pair(fd, tail_fd)
        raise
    return fd, tail_fd, used_direct, size, tail, block, cut


def _lock(fd: int, path: str) -> None:
    """One writer per file: a second (another logd sharing the path, or another output of
    this one) would cut the first one's unaligned tail and write over its records. Raises
    FileBusy while another holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise FileBusy(path, lock_holder(fd)) from None
        if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL):
            # A filesystem without flock (some NFS and FUSE mounts): written unguarded, as
            # before locks, rather than not at all.
            _warn_unlocked(path, e)
            return
        raise
    # Locked after the open: a rotation may have renamed the file in between, and then the
    # lock is on the rotated file, not on what is at the path now.
    now = os.stat(path)
    held = os.fstat(fd)
    if (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino):
        raise Renamed(errno.EAGAIN, "renamed while being opened; opening again", path)


_unlocked_warned: set[str] = set()


def _warn_unlocked(path: str, error: OSError) -> None:
    directory = os.path.dirname(path)
    if directory not in _unlocked_warned and len(_unlocked_warned) < 1000:
        _unlocked_warned.add(directory)
        log.warning("the filesystem refuses file locks: files here are written without the "
                    "one-writer guard", extra={"directory": directory,
                                               "error": error.strerror or str(error)})


def _close_pair(fd: int, tail_fd: int) -> None:
    for d in {fd, tail_fd} - {-1}:
        with contextlib.suppress(OSError):
            os.close(d)


class _Handoff:
    """_open in a worker thread for a caller that may be cancelled meanwhile: what the
    thread opened is then closed (with its lock) instead of left open for good."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gone = False
        self._opened: tuple[int, int] | None = None

    def run(self, path: str, direct: bool, mode: int
            ) -> tuple[int, int, bool, int, bytes, int, int]:
        result = _open(path, direct, mode)
        with self._lock:
            if self._gone:
                _close_pair(result[0], result[1])
            else:
                self._opened = (result[0], result[1])
        return result

    def abandon(self) -> None:
        with self._lock:
            self._gone = True
            opened, self._opened = self._opened, None
        if opened is not None:
            _close_pair(*opened)


class Renamed(OSError):
    """The file was renamed (rotated by its writer) between its open and its lock."""


class FileBusy(OSError):
    """The file is being written by another process (it holds the file's flock)."""

    def __init__(self, path: str, holder: int | None) -> None:
        who = f"another process (pid {holder})" if holder else "another process"
        super().__init__(errno.EWOULDBLOCK, f"written by {who}: two outputs must not share "
                         "a file", path)
        self.holder = holder


def lock_holder(fd: int) -> int | None:
    """The pid holding a flock on the file open at `fd`, from /proc/locks (None if unknown:
    the holder may be in another pid namespace, or gone)."""
    st = os.fstat(fd)
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks") as f:
            for line in f:
                parts = line.split()
                # "1: FLOCK  ADVISORY  WRITE 1234 fd:00:5678 0 EOF"; a blocked waiter's line
                # has "->" after the number.
                if "->" not in parts and len(parts) >= 6 and parts[1] == "FLOCK" \
                        and parts[5] == dev:
                    return int(parts[4])
    except (OSError, ValueError):
        pass
    return None


def _end_of_last_record(path: str, size: int) -> int:
    """The length of the file up to and including its last LF (0 if it has none)."""
    chunk = 64 * 1024
    with open(path, "rb") as f:
        end = size
        while end > 0:
            start = max(0, end - chunk)
            f.seek(start)
            data = f.read(end - start)
            if end == size and data.endswith(b"\n"):
                return size
            lf = data.rfind(b"\n")
            if lf >= 0:
                return start + lf + 1
            end = start
    return 0


def _write_job(fd: int, chunks: list[tuple[mmap.mmap, int]], offset: int, path: str,
               io: DirectIO) -> tuple[float, bool]:
    """Runs in a worker thread: write `chunks` back to back at `offset`, retrying on errors.

    Returns (seconds spent in the write calls, whether O_DIRECT had to be dropped).
    Raises only when the output abandoned retries (shutdown past its deadline).
    """
    views = [memoryview(buf)[:n] for buf, n in chunks]
    total = sum(n for _, n in chunks)
    fell_back = False
    write_s = 0.0
    done = 0
    delay = 0.05
    try:
        while done < total:
            pending = _skip(views, done)
            try:
                t0 = time.perf_counter()
                n = os.pwritev(fd, pending, offset + done) if len(pending) > 1 \
                    else os.pwrite(fd, pending[0], offset + done)
                write_s += time.perf_counter() - t0
            except OSError as e:
                if e.errno == errno.EINVAL and _fcntl_getfl(fd) & os.O_DIRECT:
                    # The filesystem took O_DIRECT at open but refuses the write: go buffered.
                    _fcntl_setfl(fd, _fcntl_getfl(fd) & ~os.O_DIRECT)
                    fell_back = True
                    continue
                io.stats.errors += 1
                if io.abandoned.is_set():
                    raise
                io.stats.retries += 1
                log.error("write failed; retrying", extra={
                    "path": path, "error": str(e), "retry_in_s": delay})
                if io.abandoned.wait(delay):
                    raise
                delay = min(delay * 2, 5.0)
                continue
            if n <= 0:
                raise OSError(errno.EIO, "write wrote nothing")
            done += n
    finally:
        for v in views:
            v.release()
    return write_s, fell_back


def _skip(views: list[memoryview], done: int) -> list[memoryview]:
    """The part of `views` after the first `done` bytes (after a short write)."""
    out = []
    for v in views:
        if done >= len(v):
            done -= len(v)
            continue
        out.append(v[done:] if done else v)
        done = 0
    return out


def _write_partial(fd: int, tail_fd: int, buf: mmap.mmap, whole: int, length: int,
                   offset: int, sync: bool, path: str, io: DirectIO) -> float:
    """Worker thread: a partly filled buffer. Its whole blocks go through `fd` (O_DIRECT,
    aligned); only the last partial block goes through the buffered `tail_fd`, so the page
    cache holds at most one block of the file."""
    write_s = 0.0
    if whole:
        write_s, _ = _write_job(fd, [(buf, whole)], offset, path, io)
    if length > whole:
        view = memoryview(buf)
        try:
            tail = bytes(view[whole:length])
        finally:
            view.release()
        t, _ = _write_job(tail_fd, [(tail, len(tail))], offset + whole, path, io)  # type: ignore[list-item]
        write_s += t
    if sync:
        os.fdatasync(fd)
    return write_s


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
        self._tail_fd = -1
        self.direct = False
        self.block = 4096
        self.size = 0            # true length once everything handed over is written
        self.opened_at = 0.0
        self._pool: BufferPool | None = None
        self._buf: mmap.mmap | None = None
        self._fill = 0
        self._base = 0           # file offset of _buf[0]; always block-aligned
        self._dirty = False      # bytes in _buf not yet on disk
        self._queue: list[tuple[mmap.mmap, int]] = []  # full buffers waiting, in file order
        self._queue_offset = 0   # file offset of the first queued buffer
        self._job: asyncio.Future[tuple[float, bool]] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._close_when_idle = False

    async def open(self) -> None:
        handoff = _Handoff()
        try:
            fd, tail_fd, direct, size, tail, block, cut = await self.io.call(
                handoff.run, self.path, self.io.direct, self.io.file_mode)
        except asyncio.CancelledError:
            handoff.abandon()  # what the thread opens (and locks) is closed, not leaked
            raise
        if cut:
            self.io.stats.torn_records += 1
            self.io.stats.torn_bytes += cut
            log.warning("file ended inside a record (a crash mid-write); cut back to its last "
                        "complete record", extra={"path": self.path, "bytes": cut})
        self.fd, self._tail_fd, self.direct, self.size, self.block = \
            fd, tail_fd, direct, size, block
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
        """Append bytes; awaits only when every buffer slot is taken (the disk is behind)."""
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
        if not self._queue:
            self._queue_offset = self._base
        self._queue.append((self._buf, pool.size))
        self._base += pool.size
        self._buf = pool.take()
        self._fill = 0
        self._dirty = False
        self.io.stats.swaps += 1
        if self._job is None:
            self._submit()

    def _submit(self) -> None:
        """Start one thread job writing everything queued; its callback starts the next."""
        chunks, self._queue = self._queue, []
        started = time.perf_counter()
        self._idle.clear()
        job = asyncio.get_running_loop().run_in_executor(
            self.io.executor, _write_job, self.fd, chunks, self._queue_offset, self.path,
            self.io)
        self._job = job
        # Buffers go back to the pool only when the thread is done with them: from the
        # job's own callback, never from a task that may be cancelled while it runs.
        job.add_done_callback(lambda f: self._job_done(f, chunks, started))

    def _job_done(self, job: asyncio.Future[tuple[float, bool]],
                  chunks: list[tuple[mmap.mmap, int]], started: float) -> None:
        assert self._pool is not None
        self._job = None
        for buf, _ in chunks:
            self._pool.give_back(buf)
            self._pool.release_slot()
        error = job.exception() if not job.cancelled() else None
        if error is not None or job.cancelled():
            lost = sum(n for _, n in chunks)
            self.io.abandoned_bytes += lost
            log.error("write abandoned at shutdown", extra={
                "path": self.path, "bytes": lost, "error": str(error)})
        else:
            write_s, fell_back = job.result()
            if fell_back:
                self.direct = False
                self._warn_fallback("write refused O_DIRECT")
            self.io.stats.record(write_s, time.perf_counter() - started)
        if self._queue and not self._close_when_idle:
            self._submit()
            return
        self._idle.set()
        if self._close_when_idle:
            self._close_fds()

    async def wait_written(self) -> None:
        """Until every full buffer handed over is on disk (or given up)."""
        while self._job is not None or self._queue:
            if self._job is None:
                self._submit()
            await self._idle.wait()

    async def flush(self, sync: bool = False) -> None:
        """Make everything appended so far visible in the file, exactly, and no more."""
        await self.wait_written()
        if not self._dirty and not sync:
            return
        assert self._buf is not None
        fill = self._fill
        started = time.perf_counter()
        whole = fill - fill % self.block
        if fill and self._dirty:
            write_s = await self.io.call(_write_partial, self.fd, self._tail_fd, self._buf,
                                         whole, fill, self._base, sync, self.path, self.io)
            self.io.stats.record(write_s, time.perf_counter() - started)
        elif sync:
            await self.io.call(os.fdatasync, self.fd)
        self._dirty = False
        # Keep the partial tail block: the next O_DIRECT write rewrites it whole, aligned.
        if whole:
            tail = fill - whole
            self._buf[0:tail] = self._buf[whole:fill]
            self._base += whole
            self._fill = tail

    async def close(self, sync: bool = False) -> None:
        """Flush and close; safe to call again after a failure or a cancellation."""
        if self.fd < 0:
            return
        try:
            await self.flush(sync=sync)
        finally:
            if self._job is None:
                self._close_fds()
            else:
                # A thread still writes from our buffers into our fd: it closes both.
                self._close_when_idle = True

    def _close_fds(self) -> None:
        if self.fd < 0:
            return
        fd, tail_fd, self.fd, self._tail_fd = self.fd, self._tail_fd, -1, -1
        for d in {fd, tail_fd}:
            try:
                os.close(d)
            except OSError as e:
                log.error("close failed", extra={"path": self.path, "error": str(e)})
        if self._buf is not None and self._pool is not None:
            self._pool.give_back(self._buf)
        self._buf = None
