"""A file's identity: device and inode, plus a fingerprint of its first bytes.

Device and inode tell files apart while they exist; once a file is deleted its inode may
be given to a new file, which must not continue at the old file's offset. The fingerprint
(a hash of up to FINGERPRINT_BYTES first bytes, and how many it covers) tells them apart:
a file shorter than that is fingerprinted over what it has, and compared over as many bytes.
"""

from __future__ import annotations

import hashlib
import os
from typing import NamedTuple

FINGERPRINT_BYTES = 1024


class FileId(NamedTuple):
    dev: int
    ino: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileId:
        return cls(st.st_dev, st.st_ino)

    def key(self) -> str:
        """As checkpoints write it."""
        return f"{self.dev}:{self.ino}"

    @classmethod
    def from_key(cls, key: str) -> FileId:
        dev, _, ino = key.partition(":")
        return cls(int(dev), int(ino))


class Fingerprint(NamedTuple):
    length: int   # bytes it covers
    digest: str   # hex; "" when it covers none

    def matches(self, fd: int) -> bool:
        """Whether the file open at `fd` begins with the bytes this was taken of."""
        return self.length == 0 or take(fd, self.length) == self


def take(fd: int, length: int = FINGERPRINT_BYTES) -> Fingerprint:
    """The fingerprint of up to `length` first bytes of the file open at `fd`."""
    head = os.pread(fd, length, 0)
    if not head:
        return Fingerprint(0, "")
    return Fingerprint(len(head), hashlib.blake2b(head, digest_size=8).hexdigest())
