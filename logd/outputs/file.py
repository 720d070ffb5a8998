"""The file output: per-app / per-event files, O_DIRECT, rotation by size and time, retention.

The writer task takes leases of batches from the buffer, groups records by their path (one
group per batch when the path template has no per-record fields), and appends each group to
its file as one joined block. Rotation happens between groups, so a record never spans files.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import string
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson

from logd.component import BuildContext
from logd.config import (
    MemoryBufferConfig,
    component_name,
    nested,
    one_of,
    setting,
    to_bool,
    to_duration,
    to_int,
    to_nonempty_str,
    to_size,
)
from logd.delivery import Receipt, deliver
from logd.fields import (
    app_of,
    level_text,
    message_of,
    metadata_json,
    severity_name,
    source_of,
    time_of,
    utc_datetime,
)
from logd.logsetup import RateLimitedLog
from logd.metrics import BATCH_RECORDS_BUCKETS, Histogram
from logd.outputs.base import Output
from logd.outputs.direct import DirectFile, DirectIO, Renamed
from logd.record import JSON, Batch
from logd.stats import FileOutputStats

log = logging.getLogger("logd.file")

TEMPLATE_FIELDS = {"app", "event", "date", "severity", "source", "host", "pod", "namespace"}
# Replaced by the config loader, before this output sees the path: one value per process.
LOAD_TIME_FIELDS = {"instance"}
_PER_RECORD = {"app", "event", "severity", "host", "pod", "namespace"}
_UNSAFE = re.compile(r"[^A-Za-z0-9_.@+-]")


@dataclass(frozen=True)
class FileOutputConfig:
    type: str = setting("file", one_of("file"))
    path: str = setting("./var/log/{app}.log", to_nonempty_str,
                        "file path template: {app} {event} {date} {severity} {source} "
                        "{host} {pod} {namespace} {instance}")
    format: str = setting("raw", one_of("raw", "json"),
                          "raw: payload + LF; json: one object per line (ts, severity, app, "
                          "source, message)")
    direct_io: bool = setting(True, to_bool, "O_DIRECT writes (falls back where refused)")
    buffer_size: int = setting(1024**2, to_size(lo=4096), "bytes per aligned write")
    shards: int = setting(4, to_int(1, 64), "aligned buffers in flight to the disk at once")
    flush_interval: float = setting(1.0, to_duration,
                                    "longest time written records wait before they are visible")
    rotate_bytes: int = setting(1024**3, to_size(), "rotate a file past this size (0: never)")
    rotate_interval: float = setting(0.0, to_duration,
                                     "rotate at every multiple of this since the epoch, UTC "
                                     "(1h: on the hour, 1d: at midnight UTC; 0: never)")
    keep: int = setting(10, to_int(0), "rotated files kept per path (0: keep all)")
    fdatasync: str = setting("rotate", one_of("never", "flush", "rotate"),
                             "when to fdatasync: never, after every flush, or at rotation/close")
    file_mode: int = setting(0o640, to_int(0, 0o777), "permissions of new files")
    max_open_files: int = setting(256, to_int(1), "least recently used files close beyond it")
    buffer: MemoryBufferConfig = nested(MemoryBufferConfig,  # noqa: RUF009
                                        MemoryBufferConfig)
    name: str = component_name()

    def validate(self) -> list[tuple[str, str]]:
        expected = ", ".join("{" + f + "}" for f in sorted(TEMPLATE_FIELDS | LOAD_TIME_FIELDS))
        try:
            parts = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(self.path)
                     if f is not None]
        except ValueError as e:
            return [("path", f"bad template: {e}")]
        for f, spec, conv in parts:
            if f not in TEMPLATE_FIELDS:
                return [("path", f"unknown template field {{{f}}}; expected {expected}")]
            # str.format would read a spec or conversion at every write: "{app:d}" fails,
            # "{app:>99999999999}" asks for that much memory. Fields are plain.
            if spec or conv:
                shown = f"{{{f}{'!' + conv if conv else ''}{':' + spec if spec else ''}}}"
                return [("path", f"template field {shown} has a format; expected a plain "
                         f"field: {expected}")]
        return []


# An open that fails with one of these will fail again until someone changes the filesystem.
_PATH_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG,
                errno.EROFS, errno.ELOOP, errno.EEXIST, errno.EINVAL}
UNWRITABLE_RETRY_S = 5.0


class UnwritablePath(Exception):
    def __init__(self, path: str, error: str) -> None:
        super().__init__(f"{path}: {error}")
        self.path = path
        self.error = error


def _safe(value: Any) -> str:
    """A payload-supplied path part that cannot leave its directory."""
    text = _UNSAFE.sub("_", str(value))[:64].strip(".")
    return text or "_"


class FileOutput(Output):
    def __init__(self, cfg: FileOutputConfig, ctx: BuildContext | None = None) -> None:
        super().__init__(cfg.name, cfg.type, cfg.buffer, ctx)
        self.cfg = cfg
        fields = {f for _, f, _, _ in string.Formatter().parse(cfg.path) if f}
        self._per_record = bool(fields & _PER_RECORD)
        self._uses_severity = "severity" in fields
        self._io = DirectIO(cfg.buffer_size, cfg.shards, cfg.direct_io,
                            cfg.fdatasync == "flush", cfg.file_mode)
        self._files: OrderedDict[str, DirectFile] = OrderedDict()
        self._draining = False
        self._last_flush = time.monotonic()
        self._unflushed: list[tuple[Receipt, int]] = []  # written, delivered at the next flush
        self.records = 0
        self.bytes = 0
        self.rotations = 0
        self.failed_records = 0
        self._refused: dict[str, tuple[float, str]] = {}  # path -> (retry after, why)
        self.ratelog = RateLimitedLog(log)
        self.batch_hist = Histogram(BATCH_RECORDS_BUCKETS)
        self._started = False

    # -- lifecycle --

    async def start(self) -> None:
        probe = self.cfg.path.format(app="_", event="_", date="_", severity="_", source="_",
                                     host="_", pod="_", namespace="_")
        directory = os.path.dirname(os.path.abspath(probe))
        # Fail fast on a directory we can never write, rather than at the first record.
        top = directory
        while not os.path.exists(top):
            top = os.path.dirname(top)
        if not os.access(top, os.W_OK | os.X_OK):
            from logd.component import StartError
            raise StartError(f"output {self.name}: cannot write under {top}")
        self._started = True

    async def run(self) -> None:
        interval = self.cfg.flush_interval or 1.0
        max_cost = 4 * self._io.requested_size + 65536
        while True:
            wait = max(0.0, self._last_flush + interval - time.monotonic())
            lease = await self.buffer.get(max_cost, timeout=wait)
            if lease is not None:
                receipts = lease.take_receipts()
                try:
                    for i, batch in enumerate(lease.batches):
                        failed = await self._write_one(batch)
                        receipt = receipts[i] if receipts is not None else None
                        if receipt is not None:
                            # Delivered once flushed into the file; what failed is lost now.
                            if failed:
                                receipt.lose(failed)
                            if batch.count > failed:
                                self._unflushed.append((receipt, batch.count - failed))
                finally:
                    self.buffer.ack(lease)
            now = time.monotonic()
            # Someone waits to hear these records are written: flush as soon as there is a
            # pause, rather than at the next interval.
            if now - self._last_flush >= interval or (self._unflushed and self.buffer.empty()):
                await self._flush_all(now)
            if self._draining and self.buffer.empty():
                await self._flush_all(time.monotonic())
                return

    async def drain(self, deadline: float) -> None:
        self._draining = True
        self.buffer.close()

    def give_up(self) -> None:
        """Past the shutdown deadline: stop retrying failed writes so close() ends."""
        self._io.abandon()

    async def close(self) -> None:
        files = list(self._files.values())
        self._files.clear()
        for f in files:
            await self._close_file(f)
        self._io.shutdown()

    # -- writing --

    async def _write_one(self, batch: Batch) -> int:
        """Write a batch; returns how many of its records failed. One that cannot be written
        for a reason other than I/O (those are retried below) is counted and logged, and the
        rest of the stream goes on."""
        try:
            return await self._write_batch(batch)
        except (asyncio.CancelledError, OSError):
            raise
        except Exception:
            self.failed_records += batch.count
            log.exception("batch could not be written; records counted as failed",
                          extra={"output": self.name, "records": batch.count})
            return batch.count

    async def _write_batch(self, batch: Batch) -> int:
        raw_format = self.cfg.format == "raw"
        joined = batch.raw
        if joined is None and raw_format:
            joined = b"\n".join(batch.payloads)
        if not self._per_record:
            return await self._append(self._path_for(batch, None, None), batch, None, joined)
        sevs = None
        if self._uses_severity:
            sevs = batch.severity_bytes()
            uniform = sevs.count(sevs[0]) == len(sevs)
        else:
            uniform = True
        # Fields come from JSON payloads only (in a batch of the JSON form); a batch without
        # one maps to a single path, found with one C-level scan instead of a look at every
        # record.
        if uniform and batch.form == JSON and not _has_json_object(batch, joined):
            return await self._append(self._path_for(batch, None, sevs[0] if sevs else None),
                                      batch, None, joined)
        groups: dict[str, list[int]] = {}
        fields = batch.fields()
        if sevs is None:
            sevs = batch.severity_bytes()
        for i in range(batch.count):
            path = self._path_for(batch, fields[i], sevs[i])
            group = groups.get(path)
            if group is None:
                groups[path] = [i]
            else:
                group.append(i)
        single = len(groups) == 1
        failed = 0
        for path, indices in groups.items():
            failed += await self._append(path, batch, None if single else indices,
                                         joined if single else None)
        return failed

    def _path_for(self, batch: Batch, obj: dict[str, Any] | None, sev: int | None) -> str:
        event = host = pod = namespace = None
        if obj is not None:
            event, host = obj.get("event"), obj.get("host")
            pod, namespace = obj.get("pod"), obj.get("namespace")
        return self.cfg.path.format(
            app=_safe(app_of(obj, batch.source)),
            event=_safe(event) if event is not None else "default",
            date=time.strftime("%Y-%m-%d", time.gmtime(batch.received)),
            severity=severity_name(sev) if sev is not None else "info",
            source=batch.source,
            host=_safe(host) if host is not None else "unknown",
            # Container log records (the tail listener's cri and docker formats) carry them.
            pod=_safe(pod) if pod is not None else "none",
            namespace=_safe(namespace) if namespace is not None else "none",
        )

    async def _append(self, path: str, batch: Batch, indices: list[int] | None,
                      joined: bytes | None = None) -> int:
        """Append the records at `indices` (all of the batch when None) to the file at path;
        returns how many records failed.

        `joined` is the batch's payloads already joined with LF, when the caller has it. A
        path that cannot be written fails its records (counted, logged) and nothing else.
        """
        try:
            f = await self._file(path)
        except UnwritablePath as e:
            n = len(batch) if indices is None else len(indices)
            self.failed_records += n
            self.ratelog.warning(path, "cannot write to this path; its records fail (tried "
                                 f"again after {UNWRITABLE_RETRY_S:g}s)", output=self.name,
                                 path=path, error=e.error, records=n)
            return n
        if self.cfg.format == "json":
            data = self._json_lines(batch, indices)
            pieces: tuple[bytes, ...] = (data,)
            count, n = (len(batch) if indices is None else len(indices)), len(data)
        elif indices is None:
            if batch.raw is not None:
                pieces = (batch.raw,)  # already LF-terminated
            else:
                pieces = (joined if joined is not None else b"\n".join(batch.payloads), b"\n")
            count, n = len(batch), batch.nbytes + len(batch)
        else:
            payloads = batch.payloads
            picked = [payloads[i] for i in indices]
            pieces = (b"\n".join(picked), b"\n")
            count, n = len(picked), len(pieces[0]) + 1
        await f.append(pieces)
        self.batch_hist.observe(count)
        self.records += count
        self.bytes += n
        if self.cfg.rotate_bytes and f.size >= self.cfg.rotate_bytes:
            await self._rotate(path)
        return 0

    def _json_lines(self, batch: Batch, indices: list[int] | None) -> bytes:
        """One JSON object per record, its fields read as logd.fields says."""
        sevs = batch.severity_bytes()
        fields = batch.fields()
        payloads = batch.payloads
        received = batch.received
        listener = batch.source
        dumps = orjson.dumps
        out = []
        # Records of a batch often share their time (syslog senders stamp per second or
        # millisecond): each distinct time is formatted once.
        stamps: dict[float, str] = {}
        for i in (range(len(payloads)) if indices is None else indices):
            obj = fields[i]
            t = time_of(obj, received)
            ts = stamps.get(t)
            if ts is None:
                ts = stamps[t] = _rfc3339(t, received)
            record: dict[str, Any] = {
                "ts": ts,
                "app": app_of(obj, listener), "level": level_text(obj, sevs[i]),
                "severity": severity_name(sevs[i]), "source": source_of(obj, listener),
                "listener": listener, "message": message_of(obj, payloads[i])}
            if obj is not None:
                metadata = metadata_json(obj)
                if metadata != b"{}":
                    record["metadata"] = orjson.Fragment(metadata)
            out.append(dumps(record))
        out.append(b"")
        return b"\n".join(out)

    def stats(self) -> FileOutputStats:
        st = self._io.stats
        out: FileOutputStats = {
            **super().stats(),
            "written": self.records,
            "bytes": self.bytes,
            "flushes": st.flushes,
            "swaps": st.swaps,
            "errors": st.errors,
            "retries": st.retries,
            "rotations": self.rotations,
            "failed": self.failed_records,
            "torn_repaired": st.torn_records,
            "open_files": len(self._files),
            "avg_flush_ms": 1000 * st.flush_s_total / st.flushes if st.flushes else 0.0,
            "max_flush_ms": 1000 * st.flush_s_max,
            "avg_write_ms": 1000 * st.write_s_total / st.flushes if st.flushes else 0.0,
            "max_write_ms": 1000 * st.write_s_max,
            "write_pct": 100 * st.write_s_total / st.flush_s_total if st.flush_s_total else 0.0,
            "direct_io": self.cfg.direct_io and not self._io.fallback_warned,
            "flush_seconds": st.flush_hist.snapshot(),
            "batch_records": self.batch_hist.snapshot(),
        }
        return out

    async def _file(self, path: str) -> DirectFile:
        f = self._files.get(path)
        if f is not None:
            self._files.move_to_end(path)
            return f
        refused = self._refused.get(path)
        if refused is not None:
            if time.monotonic() < refused[0]:
                raise UnwritablePath(path, refused[1])
            del self._refused[path]
        if len(self._refused) > 4096:  # paths come from records: bounded
            now = time.monotonic()
            self._refused = {p: r for p, r in self._refused.items() if r[0] > now}
        while len(self._files) >= self.cfg.max_open_files:
            _, old = self._files.popitem(last=False)
            await self._close_file(old)
        f = DirectFile(path, self._io)
        delay = 0.05
        while True:
            try:
                await f.open()
                if self._from_an_earlier_period(f):
                    f = await self._rotated_at_open(f)
                break
            except Renamed:
                continue  # rotated by its writer while we opened it: the new file, then
            except OSError as e:
                self._io.stats.errors += 1
                if e.errno in _PATH_ERRNOS:
                    # This path cannot be written (permissions, a file where a directory
                    # should be, ...): its records fail, the other paths go on; tried again
                    # after a pause, in case someone fixes it.
                    self._refused[path] = (time.monotonic() + UNWRITABLE_RETRY_S, str(e))
                    raise UnwritablePath(path, str(e)) from None
                # The disk is full, out of descriptors, failing: nothing would be written
                # anywhere, so wait (the buffer fills and its when_full applies).
                log.error("cannot open output file; retrying",
                          extra={"path": path, "error": str(e), "retry_in_s": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self._files[path] = f
        return f

    async def _rotated_at_open(self, f: DirectFile) -> DirectFile:
        """A file written before a restart, in a period that has ended: rotated before
        anything new goes in, as if logd had run throughout."""
        try:
            try:
                await self._io.call(_rotate_and_prune, f.path, self.cfg.keep)  # still locked
                self.rotations += 1
            except OSError as e:
                self._io.stats.errors += 1
                log.error("rotation failed", extra={"path": f.path, "error": str(e)})
        finally:
            await self._close_file(f)  # not among the open files yet: nothing else closes it
        fresh = DirectFile(f.path, self._io)
        await fresh.open()
        return fresh

    def _from_an_earlier_period(self, f: DirectFile) -> bool:
        interval = self.cfg.rotate_interval
        if not interval or not f.size or f.fd < 0:
            return False
        return os.fstat(f.fd).st_mtime // interval < time.time() // interval

    async def _flush_all(self, now: float) -> None:
        self._last_flush = now
        # What was appended before this flush is in its file once it ends.
        flushed, self._unflushed = self._unflushed, []
        interval = self.cfg.rotate_interval
        wall = time.time()
        for path, f in list(self._files.items()):
            if interval and f.size and wall // interval > f.opened_at // interval:
                await self._rotate(path)
                continue
            try:
                await f.flush(sync=self.cfg.fdatasync == "flush")
            except OSError as e:
                # An fdatasync failure: the data is written; the next flush tries again.
                self._io.stats.errors += 1
                log.error("flush failed", extra={"path": path, "error": str(e)})
        deliver(flushed)

    async def _rotate(self, path: str) -> None:
        f = self._files[path]
        # Renamed while still open, so still locked: a writer waiting for the path (another
        # logd) can only get the new file there, never the one rotated away. What is still
        # in our buffers goes to the renamed file, where it belongs.
        try:
            await self._io.call(_rotate_and_prune, path, self.cfg.keep)
            rotated = True
        except OSError as e:
            # A failed rename or prune loses nothing: the file grows until a later rotation.
            self._io.stats.errors += 1
            log.error("rotation failed", extra={"path": path, "error": str(e)})
            rotated = False
        await self._close_file(f)
        # Dropped from the open set only once closed: a cancelled close is finished by close().
        del self._files[path]
        if rotated:
            self.rotations += 1

    async def _close_file(self, f: DirectFile) -> None:
        try:
            await f.close(sync=self.cfg.fdatasync != "never")
        except OSError as e:
            self._io.stats.errors += 1
            log.error("closing file failed", extra={"path": f.path, "error": str(e)})


def _rfc3339(t: float, received: float) -> str:
    when = utc_datetime(t, received)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _has_json_object(batch: Batch, joined: bytes | None) -> bool:
    """Whether any record is a JSON object; `joined` is the records joined by LF, if known."""
    if joined is None:
        joined = b"\n".join(batch.payloads)
    # A lone "{" is a memchr; most plain-text batches never get to the two-byte search.
    return b"{" in joined and (joined[:1] == b"{" or b"\n{" in joined)


def _rotate_and_prune(path: str, keep: int) -> None:
    """Rename `path` to its rotated name, then delete all but the newest `keep` rotations.

    Rotations within one second get -1, -2, ... after the highest suffix already used, so a
    new rotation always sorts newest, even after older ones of that second were pruned.
    """
    directory, base = os.path.split(path)
    pattern = re.compile(re.escape(base) + r"\.(\d{8}-\d{6})(?:-(\d+))?")
    rotated = sorted(
        (name for name in os.listdir(directory or ".") if pattern.fullmatch(name)),
        key=lambda name: _rotation_order(pattern, name))
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    same_second = [_rotation_order(pattern, n)[1] for n in rotated
                   if _rotation_order(pattern, n)[0] == stamp]
    name = f"{base}.{stamp}"
    if same_second or os.path.exists(os.path.join(directory, name)):
        name = f"{name}-{max(same_second, default=0) + 1}"
    os.rename(path, os.path.join(directory, name))
    rotated.append(name)
    if not keep:
        return
    for old in rotated[:-keep]:
        try:
            os.unlink(os.path.join(directory, old))
        except FileNotFoundError:
            pass
        except OSError as e:
            log.error("cannot delete old rotation", extra={"path": old, "error": str(e)})


def _rotation_order(pattern: re.Pattern[str], name: str) -> tuple[str, int]:
    m = pattern.fullmatch(name)
    assert m is not None
    return m.group(1), int(m.group(2) or 0)
