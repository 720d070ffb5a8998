"""One followed file: its descriptor (while open), where reading stands, and what was read
but is not yet secured by every destination.

Offsets: `offset` is where the next read starts (a record boundary: everything before it was
handed to the router); `committed` is where everything before is secured (the checkpoint);
`size` the file's size when last looked at. A file is `at_path` while a path the listener
follows names it; a file that is not (renamed away, deleted) is read to its end and, once
quiet for `rotate_wait`, finished: its last unterminated line goes out and it is closed.
"""

from __future__ import annotations

import os
from collections import deque

from logd.delivery import Receipt
from logd.tail.decoders import Decoder
from logd.tail.identity import FINGERPRINT_BYTES, FileId, Fingerprint, take


class FollowedFile:
    __slots__ = ("at_path", "committed", "decoder", "deleted", "fd", "fid", "fingerprint",
                 "finished", "last_active", "offset", "path", "pending", "quiet_since",
                 "mtime_ns", "records", "size", "stalled_at")

    def __init__(self, fid: FileId, path: str, decoder: Decoder, offset: int = 0) -> None:
        self.fid = fid
        self.path = path
        self.decoder = decoder
        self.fd = -1
        self.offset = offset
        self.committed = offset
        self.size = 0
        self.mtime_ns = 0
        self.fingerprint = Fingerprint(0, "")
        # Read, handed over, not yet secured, in offset order: (offset after, receipt).
        self.pending: deque[tuple[int, Receipt]] = deque()
        self.at_path = True
        self.deleted = False
        self.finished = False
        self.quiet_since: float | None = None  # at its end, with nothing new, since then
        self.last_active = 0.0
        self.records = 0
        # The size at which a read last found nothing more to hand over (a held partial
        # line or group): read again only once the file has grown past it.
        self.stalled_at = -1

    @property
    def is_open(self) -> bool:
        return self.fd >= 0

    @property
    def has_news(self) -> bool:
        """Whether a read would find something not seen yet."""
        return self.size > self.offset and self.size != self.stalled_at

    @property
    def lag(self) -> int:
        """Bytes in the file not yet read."""
        return max(0, self.size - self.offset)

    def open(self) -> bool:
        """Open the file at its path again (it was closed for the open-files cap); False when
        the path no longer names this file. What it holds now is looked at by the caller
        (truncated meanwhile, grown)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        if FileId.of(os.fstat(fd)) != self.fid:
            os.close(fd)
            return False
        self.fd = fd
        return True

    def adopt(self, fd: int, size: int) -> None:
        """Take a descriptor already opened (and checked) on this file."""
        self.fd = fd
        self.size = size

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def refresh_fingerprint(self) -> None:
        """Extend the fingerprint while the file is shorter than what it covers."""
        if self.fd >= 0 and self.fingerprint.length < FINGERPRINT_BYTES \
                and self.size > self.fingerprint.length:
            self.fingerprint = take(self.fd)

    def secured_to(self) -> int:
        """Forget what is secured; returns the offset before which everything is."""
        pending = self.pending
        while pending and pending[0][1].is_secured:
            self.committed = pending.popleft()[0]
        return self.committed

    def truncated(self) -> None:
        """The file was cut shorter than what was read (copytruncate): it starts over. What
        was read of the old content is in flight; nothing of it can be read again."""
        self.offset = self.committed = 0
        self.pending.clear()
        self.fingerprint = Fingerprint(0, "")
        self.quiet_since = None
        self.stalled_at = -1
        self.decoder.reset()
