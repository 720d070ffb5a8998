"""Numbered, fixed-size log lines appended to a file, and its rotation by rename or by
copytruncate, as logrotate does them.

Line n reads `PREFIX` + n as 12 digits + a space + filler, `size` bytes before its LF, so a
reader can tell which lines arrived, how often, and in what order.
"""

from __future__ import annotations

import os
import shutil

ROTATIONS = ("none", "rename", "copytruncate")


def line(n: int, size: int, prefix: bytes = b"") -> bytes:
    """Line `n`, `size` bytes (at least its number) plus LF."""
    head = prefix + b"%012d " % n
    return head + b"x" * max(0, size - len(head)) + b"\n"


def line_number(text: bytes, prefix: bytes = b"") -> int:
    """The number of a line `line()` made (without or with its LF)."""
    return int(text[len(prefix):len(prefix) + 12])


class LogFileWriter:
    """Appends lines to `path` (O_APPEND, as a logging application does); rotates it every
    `rotate_lines` lines when `rotation` is "rename" or "copytruncate", keeping `keep`
    rotated files (`PATH.1` newest; 0 keeps all)."""

    def __init__(self, path: str, size: int = 256, rotation: str = "none",
                 rotate_lines: int = 0, keep: int = 0, prefix: bytes = b"") -> None:
        if rotation not in ROTATIONS:
            raise ValueError(f"rotation must be one of {', '.join(ROTATIONS)}")
        self.path = path
        self.size = size
        self.rotation = rotation
        self.rotate_lines = rotate_lines
        self.keep = keep
        self.prefix = prefix
        self.written = 0          # lines
        self.rotations = 0
        self._in_file = 0         # lines since the last rotation
        self._fd = self._open()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)

    def write(self, count: int) -> None:
        """Append the next `count` lines, rotating between them when due."""
        while count > 0:
            room = count
            if self.rotation != "none" and self.rotate_lines:
                room = min(count, self.rotate_lines - self._in_file)
                if room <= 0:
                    self.rotate()
                    continue
            data = b"".join(line(n, self.size, self.prefix)
                            for n in range(self.written, self.written + room))
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            self.written += room
            self._in_file += room
            count -= room

    def write_raw(self, data: bytes) -> None:
        """Append bytes as they are (a partial line, say)."""
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]

    def rotate(self) -> None:
        """Rotate now: rename (the file moves to PATH.1, writing goes on in a new PATH) or
        copytruncate (PATH is copied to PATH.1 and cut to 0 in place; writing goes on)."""
        self._shift()
        if self.rotation == "copytruncate":
            shutil.copyfile(self.path, f"{self.path}.1")
            os.ftruncate(self._fd, 0)
        else:
            os.rename(self.path, f"{self.path}.1")
            os.close(self._fd)
            self._fd = self._open()
        self.rotations += 1
        self._in_file = 0

    def _shift(self) -> None:
        """PATH.N -> PATH.N+1, oldest first; beyond `keep` deleted."""
        n = 1
        while os.path.exists(f"{self.path}.{n}"):
            n += 1
        for i in range(n - 1, 0, -1):
            if self.keep and i >= self.keep:
                os.unlink(f"{self.path}.{i}")
            else:
                os.rename(f"{self.path}.{i}", f"{self.path}.{i + 1}")

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
