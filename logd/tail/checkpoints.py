"""Checkpoints: for each followed file (by identity), the offset up to which every record
was secured by every destination, kept in one JSON file in the state directory.

Written whole, atomically: a temporary file, fsync, rename over the old one, fsync of the
directory. A kill -9 or a power loss leaves either the old or the new checkpoint, never a
mix. A checkpoint that cannot be read is logged with its path and set aside (renamed
`.damaged`): its files are then read as new ones (`start` applies to none of them: they
are read from the beginning; duplicates, never loss).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

import orjson

from logd.tail.identity import FileId, Fingerprint

log = logging.getLogger("logd.tail")

VERSION = 1


@dataclass(frozen=True)
class Checkpoint:
    path: str              # where the file was last seen
    offset: int            # everything before it is secured
    fingerprint: Fingerprint


class CheckpointStore:
    def __init__(self, path: str) -> None:
        self.path = path
        self.writes = 0
        self.errors = 0
        self._last: bytes | None = None
        self.saved_at: float | None = None  # when the checkpoint loaded was written
        # Saves run in worker threads; one whose caller was cancelled (a stop) still runs
        # to its end, and the next waits for it rather than share its temporary file.
        self._lock = threading.Lock()

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def load(self) -> dict[FileId, Checkpoint]:
        """What the last run secured; {} when there is no checkpoint (or it is damaged)."""
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
                self.saved_at = os.fstat(f.fileno()).st_mtime
        except FileNotFoundError:
            return {}
        try:
            doc = orjson.loads(raw)
            out = {FileId.from_key(k): Checkpoint(v["path"], int(v["offset"]),
                                                  Fingerprint(int(v["fp_len"]), v["fp"]))
                   for k, v in doc["files"].items()}
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
            aside = self.path + ".damaged"
            log.error("checkpoint file cannot be read; set aside, its files are read from "
                      "the beginning", extra={"path": self.path, "moved_to": aside,
                                              "error": f"{type(e).__name__}: {e}"})
            with contextlib.suppress(OSError):
                os.replace(self.path, aside)
            return {}
        self._last = raw
        return out

    def save(self, checkpoints: dict[FileId, Checkpoint]) -> bool:
        """Write them all, atomically (OSError when that failed)."""
        with self._lock:
            return self._save(checkpoints)

    def _save(self, checkpoints: dict[FileId, Checkpoint]) -> bool:
        doc: dict[str, Any] = {"version": VERSION, "files": {
            fid.key(): {"path": c.path, "offset": c.offset, "fp_len": c.fingerprint.length,
                        "fp": c.fingerprint.digest}
            for fid, c in checkpoints.items()}}
        raw = orjson.dumps(doc)
        if raw == self._last:
            return True
        directory = os.path.dirname(self.path) or "."
        tmp = f"{self.path}.tmp"
        try:
            os.makedirs(directory, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
            try:
                view = memoryview(raw)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            self.errors += 1
            raise
        self._last = raw
        self.writes += 1
        return True
