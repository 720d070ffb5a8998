"""The tail listener: log files followed as they grow, across rotations, with checkpoints.

Files are found by globs, looked at again every `poll_interval` (a file that has more to
read is read on at once, window after window: large reads cut at the last LF, handed over
as one block, with no per-line work for `format = "lines"`). Each file is known by its
device and inode and a fingerprint of its first bytes (logd/tail/identity.py), not by its
name, so:

- rename rotation: the old file (no longer at the path) is read to its end, then closed once
  quiet for `rotate_wait`; the new file at the path is a new file, read from its start;
- copytruncate: a file shorter than what was read (or whose first bytes changed) is read
  again from 0;
- deletion: read to the end of the open descriptor, then closed;
- a new file on a reused inode (its fingerprint differs) starts at 0, not at the old offset.

Checkpoints (identity -> offset) are written to the state directory only for what every
destination has secured (delivery receipts, as the Kafka input commits offsets): after a
clean stop every line arrives once, after a kill -9 at least once. While a `block`
destination is full, nothing is read; nothing is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fnmatch
import glob
import heapq
import logging
import os
import re
import stat
import time
from collections import Counter, OrderedDict
from typing import Any

from logd.component import BuildContext, Listener, StartError
from logd.delivery import Receipt
from logd.framing import invalid_utf8
from logd.logsetup import RateLimitedLog
from logd.stats import TailFileStats, TailListenerStats
from logd.tail.checkpoints import Checkpoint, CheckpointStore
from logd.tail.config import TailListenerConfig
from logd.tail.containers import PART_WAIT, CriDecoder, DockerDecoder
from logd.tail.decoders import Decoded, Decoder, LinesDecoder, MultilineDecoder
from logd.tail.followed import FollowedFile
from logd.tail.identity import FINGERPRINT_BYTES, FileId, Fingerprint, take
from logd.tail.inotify import Watcher, watched_directory

log = logging.getLogger("logd.tail")

READS_PER_TURN = 8  # windows read from one file before the next file's turn
MTIME_SLACK_S = 0.1
MIN_SCAN_GAP_S = 0.01  # looks that inotify asks for, at most this often
WATCHED_POLL_FACTOR = 10
# Rotated files a rotation compresses (logrotate's compress) are new files, not lines.
COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".zip", ".Z")
FINISHED_KEPT_S = 60.0  # finished files are not taken for new rotated ones for this long
# What rotation adds to a name (logrotate's, with or without dateext, and the usual
# appenders'): .N, -YYYYMMDD, -YYYYMMDDHH, -YYYYMMDD-N, .YYYY-MM-DD, -YYYY-MM-DD(-HH)(.N).
# Anything else beside a path (app.log.debug, app.log.old, app.log.1.gz) is another file.
ROTATED_SUFFIX = (r"(?:\.\d+|-\d{8}(?:\d{2})?(?:-\d+)?"
                  r"|[.-]\d{4}-\d{2}-\d{2}(?:[-_]\d{2})?(?:\.\d+)?)")


def _rotated_name(base: str) -> re.Pattern[str]:
    """The names a rotation gives a file named `base`: the suffix after the whole name
    (app.log.1, app.log-20260101), or before its extension (app.1.log, app-20260101.log:
    logrotate's `extension`)."""
    stem, ext = os.path.splitext(base)
    shapes = [re.escape(base) + ROTATED_SUFFIX]
    if stem and ext:
        shapes.append(re.escape(stem) + ROTATED_SUFFIX + re.escape(ext))
    return re.compile("|".join(f"(?:{x})" for x in shapes))


def _line_start_before(fd: int, size: int) -> int:
    """The offset after the last LF before `size` (where the last whole line ends): `start =
    "end"` begins there, not inside a line being written."""
    if size == 0:
        return 0
    lo = max(0, size - 65536)
    tail = os.pread(fd, size - lo, lo)
    lf = tail.rfind(b"\n")
    return lo + lf + 1 if lf >= 0 else size


class TailListener(Listener):
    def __init__(self, cfg: TailListenerConfig, ctx: BuildContext | None = None) -> None:
        super().__init__(cfg.name)
        self.cfg = cfg
        ctx = ctx or BuildContext()
        self.router = ctx.the_router()
        self.store = CheckpointStore(os.path.join(ctx.state_dir, "tail", f"{cfg.name}.json"))
        self.files: dict[FileId, FollowedFile] = {}
        self._open: OrderedDict[FileId, FollowedFile] = OrderedDict()  # least recent first
        self._ready: dict[FileId, FollowedFile] = {}  # files with something to read now
        self._checkpoints: dict[FileId, Checkpoint] = {}
        # First start with `start = "end"`: where each file found by the first look but not
        # opened then (the open-files cap) ends, and what it begins with. Files opened at the
        # first look start at their end at once and are not kept here: a file created later
        # on one of their inodes (freed by a deletion) is a new file, read from its start.
        self._start_at_end: dict[FileId, tuple[Fingerprint, int]] | None = None
        self._stopping = False
        self._stopped = asyncio.Event()
        self._wake = asyncio.Event()  # something to do before the next poll: a change, a stop
        self._watcher: Watcher | None = None
        self._changed = False  # inotify saw a file created, renamed, deleted
        self._written: set[str] = set()  # paths inotify saw written since the last look
        self._no_room = False  # this look found no descriptor to free: stop trying
        self._in_flight: set[FollowedFile] = set()  # files with records not yet secured
        self._changes = 0  # files followed, forgotten, moved, truncated: the checkpoint's
        self._saved_changes = -1
        self._scan_cost = 0.0  # seconds the last look took
        self._done = asyncio.Event()
        self._rerouted = asyncio.Event()
        self._rescan = False
        self._due: list[FollowedFile] = []  # files a look found done with: to finish
        # A file waits for a descriptor (max_open_files): looked at again once one may be
        # free (a file read to its end, or closed) or at the next poll, not at once: a look
        # made again at once finds the cap as it was, and the loop would never wait.
        self._want_room = False
        self._scanned_mono = 0.0
        self._blocked: list[Any] = []  # full buffers a hand-over outside a read met
        self._scanned_at = (time.time(), time.time())  # the last two looks
        self._at_paths: dict[str, FileId] = {}  # what each path named at the last look
        self._at_path_files: dict[str, FollowedFile] = {}  # and the files followed there
        # Finished and forgotten: what they began with, and when. The fingerprint tells a
        # new file on the same (reused) inode from the finished one.
        self._finished: dict[FileId, tuple[Fingerprint, float]] = {}
        self.records = 0
        self.bytes_in = 0
        self.pauses = 0
        self.counts: Counter[str] = Counter()  # rotations, truncations, deleted, ...
        self.errors: Counter[str] = Counter()
        self.ratelog = RateLimitedLog(log)

    def _decoder(self, path: str) -> Decoder:
        cfg = self.cfg
        if cfg.format == "cri":
            return CriDecoder(path, cfg.max_line_bytes)
        if cfg.format == "docker":
            return DockerDecoder(path, cfg.max_line_bytes)
        if cfg.multiline is not None:
            return MultilineDecoder(cfg.multiline.start, cfg.multiline.max_lines)
        return LinesDecoder()

    # -- lifecycle --

    async def start(self) -> None:
        directory = os.path.dirname(self.store.path)
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as e:
            raise StartError(f"listener {self.name}: cannot create {directory}: "
                             f"{e.strerror}") from None
        if not os.access(directory, os.W_OK | os.X_OK):
            raise StartError(f"listener {self.name}: cannot write checkpoints in {directory}")
        first_start = not self.store.exists()
        self._checkpoints = self.store.load()
        if first_start and self.cfg.start == "end":
            self._start_at_end = {}
        log.info("tailing", extra={"listener": self.name, "paths": list(self.cfg.paths),
                                   "checkpoints": len(self._checkpoints),
                                   "first_start": first_start})

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._done.clear()  # run again after a crash: a stop waits for this run
        saver = loop.create_task(self._checkpoint_every())
        if self._watcher is None:
            self._watcher = Watcher.open()
            if self._watcher is not None:
                self._watcher.attach(loop, self._on_change)
        try:
            checkpointed = {cp.path for cp in self._checkpoints.values()}
            self._scan(first=True)
            await self._after_look()
            self._find_moved_files()
            if self.store.saved_at is not None:
                # Rotated while logd was stopped: what was written after its last checkpoint.
                for path in checkpointed:
                    self._find_rotated_since(path, self.store.saved_at, {})
            await self._save()
            next_scan = next_tick = loop.time() + self.cfg.poll_interval
            while not self._stopping:
                if self._blocked:
                    # A full `block` buffer met outside a read: before anything more is
                    # read, whichever branch of the last turn met it.
                    blocked, self._blocked = self._blocked, []
                    await self._wait_for_room(blocked)
                    continue
                progressed = await self._read_round()
                now = loop.time()
                if self._written:
                    self._look_at_written()
                    progressed = progressed or bool(self._ready)
                if self._changed:
                    # A change seen by inotify: look soon, but a look at many files costs,
                    # so not more often than a few times its own cost.
                    self._changed = False
                    next_scan = min(next_scan, self._scanned_mono + max(
                        MIN_SCAN_GAP_S, 4 * self._scan_cost))
                if now >= next_tick and now < next_scan:
                    self._tick()
                    await self._after_look()
                    next_tick = now + self.cfg.poll_interval
                if not progressed and now < min(next_scan, next_tick) and not self._rescan:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(),
                                               min(next_scan, next_tick) - now)
                    continue
                if self._stopping:
                    break
                if now >= next_scan or self._rescan:
                    self._rescan = False
                    self._scan()
                    self._scan_cost = loop.time() - now
                    await self._after_look()
                    if self._checkpoints:
                        # Files the last run knew and not followed yet (set aside for the
                        # cap): looked for again, until followed or gone.
                        self._find_moved_files()
                    self._scanned_mono = now
                    next_scan = now + self._poll_period()
                    if self._want_room:
                        next_scan = now + self.cfg.poll_interval
                    next_tick = now + self.cfg.poll_interval
        finally:
            saver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await saver
            self._done.set()

    async def drain(self, deadline: float) -> None:
        """Stop reading; let what was read be secured (within the deadline), write the
        checkpoint. A held partial line or multiline group is read again at the next start."""
        self._stopping = True
        self._stopped.set()
        self._wake.set()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._done.wait(), max(0.0, deadline - loop.time()))
        for f in list(self.files.values()):
            for _, receipt in list(f.pending):
                if not await receipt.wait_secured(deadline - loop.time()):
                    break
        left = sum(1 for f in self.files.values() for _, r in f.pending if not r.is_secured)
        await self._save()
        if left:
            log.warning("stopping with records not yet secured; they are read again after "
                        "the next start", extra={"listener": self.name, "batches": left})

    async def close(self) -> None:
        self._stopping = True
        self._stopped.set()
        self._wake.set()
        if self._watcher is not None:
            self._watcher.close(asyncio.get_running_loop())
            self._watcher = None
        for f in self.files.values():
            f.close()
        self._open.clear()

    def routes_changed(self) -> None:
        self._rerouted.set()

    def _on_change(self, written: set[str], other: bool) -> None:
        self._written |= written
        self._changed = self._changed or other
        self._wake.set()

    def _look_at_written(self) -> None:
        """Files inotify saw written: each looked at alone (a stat), not every path. One that
        is not the file followed at its path (replaced) makes the next look a full one."""
        written, self._written = self._written, set()
        now = time.monotonic()
        for path in written:
            f = self._at_path_files.get(path)
            if f is None:
                if not self._excluded(path) and any(fnmatch.fnmatchcase(path, p)
                                                    for p in self.cfg.paths):
                    self._changed = True  # a file not followed yet
                continue
            try:
                st = os.stat(path)
            except OSError:
                self._changed = True
                continue
            if FileId.of(st) != f.fid:
                self._changed = True
            elif f.is_open:
                self._observe(f, st, now)
            else:
                self._changed = True  # closed for the cap: reopened by a look

    # -- finding files --

    def _poll_period(self) -> float:
        """Every poll_interval; when inotify reports every change at the paths, a look at
        all of them is only a safety net (files written after a deletion, events lost), made
        WATCHED_POLL_FACTOR times less often: many files cost little while quiet."""
        watcher = self._watcher
        if watcher is not None and watcher.covers(self.cfg.paths):
            return self.cfg.poll_interval * WATCHED_POLL_FACTOR
        return self.cfg.poll_interval

    def _matching_paths(self) -> list[str]:
        found: list[str] = []
        seen: set[str] = set()
        for pattern in self.cfg.paths:
            for path in glob.iglob(pattern, recursive=True):
                if path in seen or self._excluded(path):
                    continue
                seen.add(path)
                found.append(path)
        return found

    def _excluded(self, path: str) -> bool:
        if not self.cfg.exclude:
            return False
        name = os.path.basename(path)
        return any(fnmatch.fnmatchcase(name, x) or fnmatch.fnmatchcase(path, x)
                   for x in self.cfg.exclude)

    def _scan(self, first: bool = False) -> None:
        """Look at every matching path and every followed file: new files, grown ones,
        rotated, truncated and deleted ones; files quiet long enough are finished."""
        if self._watcher is not None:
            self._watcher.watch({watched_directory(p) for p in self.cfg.paths})
        now = time.monotonic()
        self._want_room = False  # until this look finds the cap in the way again
        # Files rotated away between two looks were written after the look before those.
        since = self._scanned_at[0]
        self._scanned_at = (self._scanned_at[1], time.time())
        seen: dict[FileId, tuple[str, os.stat_result]] = {}
        at_paths: dict[str, FileId] = {}
        for path in self._matching_paths():
            try:
                st = os.stat(path)
            except OSError:
                continue  # gone between the listing and now
            if stat.S_ISREG(st.st_mode):
                fid = FileId.of(st)
                seen.setdefault(fid, (path, st))
                at_paths[path] = fid
        for path, fid in self._at_paths.items():
            if at_paths.get(path) != fid:  # rotated since the last look
                self._find_rotated_since(path, since, seen)
        self._at_paths = at_paths
        self._no_room = False
        for fid, f in list(self.files.items()):
            hit = seen.pop(fid, None)
            if hit is not None:
                if f.path != hit[0] or not f.at_path:
                    self._changes += 1
                f.path = hit[0]
                f.at_path = True
                if not f.is_open and (hit[1].st_size != f.size
                                      or hit[1].st_mtime_ns != f.mtime_ns) \
                        and not self._reopen(f):
                    continue
                self._observe(f, hit[1], now)
                continue
            if f.at_path:
                f.at_path = False
                if not f.is_open and not self._find_again(f):
                    continue
                if os.fstat(f.fd).st_nlink:
                    self.counts["rotations"] += 1
            if f.is_open:
                st = os.fstat(f.fd)
                if st.st_nlink == 0 and not f.deleted:
                    f.deleted = True
                    self.counts["deleted"] += 1
                self._observe(f, st, now)
            self._finish_if_done(f, now)
        for fid, (path, st) in seen.items():
            self._follow_new(fid, path, st, first)
        files = self.files
        self._at_path_files = {path: files[fid] for path, fid in at_paths.items()
                               if fid in files}

    def _observe(self, f: FollowedFile, st: os.stat_result, now: float) -> None:
        """What a look at a file says: truncated, grown, or quiet. A file written since the
        last look whose first bytes changed was truncated and written again (past the
        offset, or to the same size, before this look)."""
        size = st.st_size
        changed = size != f.size or st.st_mtime_ns != f.mtime_ns
        rewritten = False
        if changed and f.fingerprint.length and f.is_open and f.offset:
            try:
                rewritten = not f.fingerprint.matches(f.fd)
            except OSError as e:  # looked at again when it changes next
                self._read_failed(f.path, e, f)
                return
        f.mtime_ns = st.st_mtime_ns
        if size < f.offset or rewritten:
            self.counts["truncations"] += 1
            log.info("file truncated; reading it again from its start",
                     extra={"listener": self.name, "path": f.path, "read": f.offset,
                            "size": size})
            f.truncated()
            self._in_flight.discard(f)
            self._changes += 1
            f.quiet_since = now
        if size != f.size:
            f.quiet_since = now
            f.size = size
        elif f.quiet_since is None:
            f.quiet_since = now
        if f.has_news and f.is_open and not f.finished:
            self._ready[f.fid] = f

    def _follow_new(self, fid: FileId, path: str, st: os.stat_result, first: bool) -> None:
        at_end = first and self._start_at_end is not None
        if not self._make_room():
            if at_end:
                self._note_end(fid, path)
            self._want_room = True  # opened once files being read reach their end
            return
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            if e.errno not in (errno.ENOENT,):
                self.errors["open_failed"] += 1
                self.ratelog.warning(f"open:{path}", "cannot open a file to follow",
                                     listener=self.name, path=path, error=str(e))
            return
        try:
            self._adopt_new(fid, path, fd, at_end)
        except OSError as e:  # its first bytes or last line unreadable: tried at next look
            os.close(fd)
            self._read_failed(path, e)

    def _adopt_new(self, fid: FileId, path: str, fd: int, at_end: bool) -> None:
        fst = os.fstat(fd)
        if FileId.of(fst) != fid:  # replaced between the look and the open: next time
            os.close(fd)
            self._rescan = True
            return
        offset = 0
        cp = self._checkpoints.get(fid)
        if cp is not None:
            if cp.fingerprint.matches(fd):
                offset = cp.offset
                if offset > fst.st_size:
                    self.counts["truncations"] += 1
                    offset = 0
            else:
                self.counts["inode_reused"] += 1
                log.info("a new file on the inode of a checkpointed one; read from its start",
                         extra={"listener": self.name, "path": path, "was": cp.path})
        elif at_end:
            offset = _line_start_before(fd, fst.st_size)
        elif self._start_at_end is not None and fid in self._start_at_end:
            fingerprint, end = self._start_at_end[fid]
            if fingerprint.matches(fd):  # the file the first look found, not a later one
                offset = min(end, _line_start_before(fd, fst.st_size))
        fingerprint_now = take(fd)
        # Every read done: what was known of the file before is used up.
        self._checkpoints.pop(fid, None)
        if self._start_at_end is not None:
            self._start_at_end.pop(fid, None)
        f = FollowedFile(fid, path, self._decoder(path), offset)
        f.adopt(fd, fst.st_size)
        f.fingerprint = fingerprint_now
        f.quiet_since = time.monotonic()
        f.last_active = f.quiet_since
        self.files[fid] = f
        self._open[fid] = f
        self._changes += 1
        self.counts["files_seen"] += 1
        if f.has_news:
            self._ready[fid] = f

    def _note_end(self, fid: FileId, path: str) -> None:
        """A file the first look found but cannot open yet (the cap): where it ends now and
        what it begins with, so that it starts there once opened, and only if it is the same
        file (its inode may be given to another once it is deleted)."""
        assert self._start_at_end is not None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            fst = os.fstat(fd)
            if FileId.of(fst) == fid:
                self._start_at_end[fid] = (take(fd), _line_start_before(fd, fst.st_size))
        except OSError:
            pass
        finally:
            os.close(fd)

    def _was_finished(self, fid: FileId, path: str) -> bool:
        """Whether the file at `path` is one finished and forgotten lately (not a new file
        on its inode, which begins with other bytes)."""
        entry = self._finished.get(fid)
        if entry is None:
            return False
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return True  # gone: nothing to read
        try:
            return FileId.of(os.fstat(fd)) != fid or entry[0].matches(fd)
        except OSError:
            return True
        finally:
            os.close(fd)

    def _find_moved_files(self) -> None:
        """Files of the checkpoint not followed yet (rotated away while logd was stopped, or
        set aside for max_open_files) are looked for in their directory by identity, and
        read to their end; one that cannot be opened yet is looked for again at the next
        look. One found neither there nor at a path is gone: what it held after its
        checkpoint is lost, counted as `lost_checkpointed_file`."""
        at_paths = set(self._at_paths.values())  # those the globs found: a look opens them
        by_dir: dict[str, list[FileId]] = {}
        for fid, cp in self._checkpoints.items():
            by_dir.setdefault(os.path.dirname(cp.path) or ".", []).append(fid)
        for directory, fids in by_dir.items():
            wanted = set(fids)
            try:
                names = os.listdir(directory)
            except FileNotFoundError:
                names = []  # the directory is gone, and the files with it
            except OSError:
                continue  # not known: looked for again at the next look
            for name in names:
                path = os.path.join(directory, name)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                fid = FileId.of(st)
                if fid in wanted and stat.S_ISREG(st.st_mode):
                    wanted.discard(fid)
                    if fid in at_paths:
                        continue
                    self._follow_new(fid, path, st, first=False)
                    f = self.files.get(fid)
                    if f is not None:
                        f.at_path = False
                        self.counts["found_rotated"] += 1
            for fid in wanted - at_paths:
                cp = self._checkpoints.pop(fid)
                self._changes += 1
                self.errors["lost_checkpointed_file"] += 1
                self.ratelog.warning("lost_checkpointed_file", "a checkpointed file was not "
                                     "found again; what it held after its checkpoint is lost",
                                     listener=self.name, path=cp.path, read=cp.offset)

    def _find_rotated_since(self, path: str, since: float,
                            seen: dict[FileId, tuple[str, os.stat_result]]) -> None:
        """`path` was rotated: files beside it with a rotated name (PATH.1, PATH-20260101;
        ROTATED_SUFFIX) that nobody follows and that were written since the last look were
        at `path` in between (rotations faster than the polls): they are followed from their
        start, to their end. Other files that only begin with the name are not."""
        directory, base = os.path.split(path)
        try:
            names = os.listdir(directory or ".")
        except OSError:
            return
        rotated = _rotated_name(base)
        for name in names:
            if not rotated.fullmatch(name) or name.endswith(COMPRESSED):
                continue
            other = os.path.join(directory, name)
            try:
                st = os.stat(other)
            except OSError:
                continue
            fid = FileId.of(st)
            # File times come from a clock that may lag time.time() by a tick.
            if st.st_mtime < since - MTIME_SLACK_S or not stat.S_ISREG(st.st_mode) \
                    or fid in self.files or fid in seen or self._excluded(other) \
                    or self._was_finished(fid, other):
                continue
            self._follow_new(fid, other, st, first=False)
            found = self.files.get(fid)
            if found is not None:
                found.at_path = False
                self.counts["found_rotated"] += 1

    def _find_again(self, f: FollowedFile) -> bool:
        """A file closed for the open-files cap left its path: look for it in its directory
        (a rename rotation) and open it there; False when it is gone (deleted while closed:
        what it held after its offset is lost, counted)."""
        directory = os.path.dirname(f.path) or "."
        with contextlib.suppress(OSError):
            for name in os.listdir(directory):
                path = os.path.join(directory, name)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if FileId.of(st) == f.fid:
                    f.path = path
                    self._changes += 1
                    if self._reopen(f):
                        return True
        self.errors["lost_closed_file"] += 1
        self.ratelog.warning("lost_closed_file", "a file closed for max_open_files was "
                             "deleted before it was read to its end", listener=self.name,
                             path=f.path, read=f.offset, size=f.size)
        self._forget(f)
        return False

    # -- descriptors --

    def _make_room(self) -> bool:
        """Below max_open_files, closing the least recently active file that can be opened
        again later (at its path, read to its end) if need be; False when none can."""
        if len(self._open) < self.cfg.max_open_files:
            return True
        if self._no_room:
            return False
        for fid, f in self._open.items():
            if f.at_path and not f.has_news and fid not in self._ready:
                f.close()
                del self._open[fid]
                self.counts["closed_for_cap"] += 1
                return True
        self._no_room = True  # until the next look: every open file has lines to give
        return False

    def _reopen(self, f: FollowedFile) -> bool:
        if not self._make_room():
            self._want_room = True
            return False
        if not f.open():
            return False
        self._open[f.fid] = f
        return True

    def _forget(self, f: FollowedFile) -> None:
        self._changes += 1
        f.close()
        self.files.pop(f.fid, None)
        self._open.pop(f.fid, None)
        self._ready.pop(f.fid, None)
        self._room_may_be_free()

    def _room_may_be_free(self) -> None:
        """A file was closed or read to its end: a file waiting for a descriptor may get one
        now; a look soon (as for a change inotify saw) tries."""
        if self._want_room:
            self._changed = True
            self._wake.set()

    # -- reading --

    async def _read_round(self) -> bool:
        """A turn for each file with something to read (files no longer at their path
        first: they are older); whether anything was handed over."""
        if not self._ready:
            # The run loop awaits at least once a turn, whatever else it finds to do.
            await asyncio.sleep(0)
            return False
        progressed = False
        order = sorted(self._ready.values(), key=lambda f: f.at_path)
        for f in order:
            if self._stopping:
                break
            if await self._read_file(f):
                progressed = True
        return progressed

    async def _read_file(self, f: FollowedFile) -> bool:
        window = self.cfg.max_line_bytes
        progressed = False
        for _ in range(READS_PER_TURN):
            if self._stopping or not f.is_open:
                return progressed
            try:
                # In a worker thread: a read that has to wait for the disk must not stop
                # the loop (other listeners, outputs); the copy runs without the GIL.
                data = await asyncio.get_running_loop().run_in_executor(
                    None, os.pread, f.fd, window, f.offset)
            except OSError as e:
                self._read_failed(f.path, e, f)
                return progressed
            full = len(data) == window
            end = f.offset + len(data)
            if end > f.size:
                f.size = end
            decoded = f.decoder.decode(data, full=full, timeout=False, finished=False,
                                       source=self.name, received=time.time())
            if decoded.batch is not None:
                await self._hand_over(f, decoded)
                progressed = True
            if not full or not decoded.consumed:
                # At its end (for now), or only a held part left: wait for more.
                f.stalled_at = f.size
                self._ready.pop(f.fid, None)
                self._room_may_be_free()
                return progressed
        return progressed

    async def _hand_over(self, f: FollowedFile, decoded: Decoded) -> None:
        blocked = self._hand_over_now(f, decoded)
        if blocked:
            self._blocked = []
            await self._wait_for_room(blocked)

    def _hand_over_now(self, f: FollowedFile, decoded: Decoded) -> list[Any]:
        """Route a decoded read and move the file's offset past it; returns the full `block`
        buffers to wait for before reading more (also left in self._blocked, which the run
        loop waits for at the top of each turn)."""
        batch = decoded.batch
        assert batch is not None
        if batch.raw is not None:
            bad = invalid_utf8(batch.raw, batch.payloads_for_a_look)
            if bad:
                self.errors["invalid_utf8"] += bad
        if decoded.cut:
            self.counts["cut_lines"] += decoded.cut
            self.ratelog.warning("cut", "a line longer than max_line_bytes was cut into "
                                 "records", listener=self.name, path=f.path,
                                 max_line_bytes=self.cfg.max_line_bytes)
        if decoded.bad:
            self.errors["bad_format"] += decoded.bad
            self.ratelog.warning("bad_format", f"lines not in {self.cfg.format} format, kept "
                                 "as they are", listener=self.name, path=f.path,
                                 lines=decoded.bad)
        receipt = Receipt()
        blocked = self.router.dispatch(batch, receipt)
        f.offset += decoded.consumed
        f.pending.append((f.offset, receipt))
        self._in_flight.add(f)
        f.records += batch.count
        f.last_active = time.monotonic()
        if f.fingerprint.length < FINGERPRINT_BYTES:
            # A new or truncated file: what it begins with, to know it again at once.
            try:
                f.refresh_fingerprint()
            except OSError as e:  # kept as it was; extended at the next hand-over
                self._read_failed(f.path, e, f)
        if f.fid in self._open:
            self._open.move_to_end(f.fid)
        self.records += batch.count
        self.bytes_in += decoded.consumed
        self._blocked.extend(b for b in blocked if b not in self._blocked)
        return blocked

    async def _wait_for_room(self, blocked: list[Any]) -> None:
        """A `block` buffer is full: nothing more is read until it has room (or a reload
        changed the routes, or logd stops)."""
        self.pauses += 1
        self._rerouted.clear()
        for buffer in blocked:
            while not self._stopping:
                room = asyncio.ensure_future(buffer.wait_writable())
                other = asyncio.ensure_future(self._rerouted.wait())
                stop = asyncio.ensure_future(self._stopped.wait())
                await asyncio.wait([room, other, stop], return_when=asyncio.FIRST_COMPLETED)
                for t in (room, other, stop):
                    t.cancel()
                if room.done() or self._rerouted.is_set():
                    break
            if self._rerouted.is_set():
                return

    def _tick(self) -> None:
        """Between full looks (inotify covers the paths): files no longer at their path,
        which inotify does not follow, are looked at through their descriptor; those done
        with, and held multiline groups whose timeout passed, are read by _after_look."""
        now = time.monotonic()
        for f in [f for f in self.files.values() if not f.at_path and f.is_open]:
            st = os.fstat(f.fd)
            if st.st_nlink == 0 and not f.deleted:
                f.deleted = True
                self.counts["deleted"] += 1
            self._observe(f, st, now)
            self._finish_if_done(f, now)

    def _finish_if_done(self, f: FollowedFile, now: float) -> None:
        """A file no longer at its path, read to its end and quiet for rotate_wait: finished
        by _after_look (a read, so not within a look)."""
        if f.at_path or f.finished or f.quiet_since is None \
                or now - f.quiet_since < self.cfg.rotate_wait or not f.is_open \
                or f.fid in self._ready or f in self._due:
            return
        self._due.append(f)

    async def _after_look(self) -> None:
        """What a look or a tick found that needs reads: files to finish, held multiline
        groups to send. Read in the executor as every read is (the disk may be slow)."""
        due, self._due = self._due, []
        for f in due:
            if self._stopping:
                return
            await self._finish(f)
        await self._flush_held(time.monotonic())

    async def _read(self, f: FollowedFile, length: int) -> bytes | None:
        """Up to `length` bytes at the file's offset, read in a worker thread; None when the
        read fails (counted, logged; the file is read again when a look sees it grow)."""
        try:
            return await asyncio.get_running_loop().run_in_executor(
                None, os.pread, f.fd, length, f.offset)
        except OSError as e:
            self._read_failed(f.path, e, f)
            return None

    def _read_failed(self, path: str, e: OSError, f: FollowedFile | None = None) -> None:
        self.errors["read_failed"] += 1
        self.ratelog.error(f"read:{path}", "cannot read a followed file",
                           listener=self.name, path=path, error=str(e))
        if f is not None:
            self._ready.pop(f.fid, None)

    async def _finish(self, f: FollowedFile) -> None:
        """The last part of a finished file (an unterminated line, a held group) goes out,
        read in windows of max_line_bytes; then it is closed."""
        window = self.cfg.max_line_bytes
        while f.size > f.offset:
            if f.finished or not f.is_open or f.fid in self._ready:
                return  # closed meanwhile (a stop), or it grew: read on first
            data = await self._read(f, min(window, f.size - f.offset))
            if data is None or not f.is_open:
                return  # tried again at the next look
            last = f.offset + len(data) >= f.size or not data
            decoded = f.decoder.decode(data, full=len(data) == window, timeout=True,
                                       finished=last, source=self.name,
                                       received=time.time())
            if decoded.batch is not None:
                await self._hand_over(f, decoded)
            if last or not decoded.consumed:
                break
        if f.finished or not f.is_open:
            return
        f.finished = True
        self._in_flight.add(f)  # forgotten once all it gave is secured
        f.close()
        self._open.pop(f.fid, None)
        self._room_may_be_free()
        self.counts["deleted_closed" if f.deleted else "rotated_closed"] += 1
        log.info("finished a file no longer at its path", extra={
            "listener": self.name, "path": f.path, "deleted": f.deleted, "read": f.offset})

    async def _flush_held(self, now: float) -> None:
        """Multiline groups, and container log parts, held at the end of a file quiet past
        their timeout go out."""
        ml = self.cfg.multiline
        if ml is not None:
            wait = ml.timeout
        elif self.cfg.format in ("cri", "docker"):
            wait = PART_WAIT
        else:
            return
        for f in list(self.files.values()):
            if f.is_open and not f.finished and f.size > f.offset \
                    and f.quiet_since is not None and now - f.quiet_since >= wait \
                    and f.fid not in self._ready and not self._stopping:
                data = await self._read(f, min(f.size - f.offset, self.cfg.max_line_bytes))
                if data is None or not f.is_open or f.finished:
                    continue
                decoded = f.decoder.decode(data, full=False, timeout=True, finished=False,
                                           source=self.name, received=time.time())
                if decoded.batch is not None:
                    await self._hand_over(f, decoded)

    # -- checkpoints --

    async def _checkpoint_every(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.checkpoint_interval)
            await self._save()

    async def _save(self) -> None:
        """Write, for each file, the offset before which everything is secured, when any
        moved or the files changed. Files done with (finished, all secured) leave the
        checkpoint. Only files with records in flight are looked at, not every file."""
        changes = self._changes
        moved = changes != self._saved_changes
        for f in list(self._in_flight):
            before = f.committed
            f.secured_to()
            moved = moved or f.committed != before
            if not f.pending:
                self._in_flight.discard(f)
                if f.finished:
                    self._forget(f)
                    self._finished[f.fid] = (f.fingerprint, time.monotonic())
                    moved = True
        if not moved:
            return
        old = time.monotonic() - FINISHED_KEPT_S
        self._finished = {k: v for k, v in self._finished.items() if v[1] > old}
        out: dict[FileId, Checkpoint] = dict(self._checkpoints)  # not yet found again
        for fid, f in self.files.items():
            out[fid] = Checkpoint(f.path, f.committed, f.fingerprint)
        self._saved_changes = changes
        try:
            await asyncio.to_thread(self.store.save, out)
        except OSError as e:
            self._saved_changes = -1  # written again next time
            self.errors["checkpoint_failed"] += 1
            self.ratelog.error("checkpoint", "cannot write the checkpoint; tried again",
                               listener=self.name, path=self.store.path, error=str(e))

    # -- figures --

    def stats(self) -> TailListenerStats:
        files = self.files.values()
        top = heapq.nlargest(self.cfg.stats_files, files, key=lambda f: f.lag)
        shown: dict[str, TailFileStats] = {
            _shown_name(f): {"offset": f.offset, "committed": f.committed, "size": f.size,
                     "lag": f.lag, "open": f.is_open, "at_path": f.at_path,
                     "records": f.records} for f in top}
        return {"type": "tail", "connections": len(self._open),
                "accepted": self.counts["files_seen"], "records": self.records,
                "bytes": self.bytes_in, "pauses": self.pauses, "errors": dict(self.errors),
                "files": len(self.files), "open_files": len(self._open),
                "lag_bytes": sum(f.lag for f in files),
                "rotations": self.counts["rotations"] + self.counts["found_rotated"],
                "truncations": self.counts["truncations"],
                "deleted": self.counts["deleted"],
                "inode_reused": self.counts["inode_reused"],
                "cut_lines": self.counts["cut_lines"],
                "closed_for_cap": self.counts["closed_for_cap"],
                "checkpoints_written": self.store.writes,
                "watching": "inotify" if self._watcher is not None else "polling",
                "top_files": shown}


def _shown_name(f: FollowedFile) -> str:
    """A file's name in stats: its path, marked when the path no longer names it (a rotated
    file and the new one at its path are both shown)."""
    if f.at_path:
        return f.path
    return f"{f.path} ({'deleted' if f.deleted else 'rotated'} {f.fid.key()})"
