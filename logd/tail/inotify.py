"""Directory watches through Linux inotify (libc, by ctypes): a change in a directory the
globs point at wakes the tail listener. A file written is looked at alone (one stat); a
file created, renamed or deleted (or events lost) makes the listener look at every path
at once rather than at its next poll.

Only the directories named before the first wildcard of each glob are watched, not their
subdirectories: polling still finds everything, inotify only makes it sooner. Where inotify
cannot be had (not Linux, no watches left), `Watcher.open` returns None and polling alone
does the work.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import struct
from collections.abc import Callable

IN_MODIFY = 0x002
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_CLOEXEC = 0o2000000
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of NUL-padded name
IN_NONBLOCK = 0o4000
_MASK = (IN_MODIFY | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_DELETE_SELF
         | IN_MOVE_SELF)


def watched_directory(pattern: str) -> str:
    """The directory a glob's files are in, up to its first wildcard."""
    parts = pattern.split(os.sep)
    static = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        static.append(part)
    return os.sep.join(static) or (os.sep if pattern.startswith(os.sep) else ".")


class Watcher:
    """An inotify descriptor with a watch per directory; `changed` is called from the event
    loop (add_reader) whenever anything happened in one."""

    def __init__(self, fd: int, libc: ctypes.CDLL) -> None:
        self.fd = fd
        self._libc = libc
        self.directories: set[str] = set()
        self._dir_of: dict[int, str] = {}  # watch descriptor -> directory

    @classmethod
    def open(cls) -> Watcher | None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        except (OSError, AttributeError):
            return None
        return cls(fd, libc) if fd >= 0 else None

    def watch(self, directories: set[str]) -> None:
        """Watch these directories (those that exist; tried again at each call)."""
        for d in directories - self.directories:
            wd = self._libc.inotify_add_watch(self.fd, os.fsencode(d), _MASK)
            if wd >= 0:
                self.directories.add(d)
                self._dir_of[wd] = d

    def drain(self) -> tuple[set[str], bool]:
        """The pending events: the paths of files written, and whether anything else
        happened (a file created, renamed or deleted, a watched directory gone, events
        lost)."""
        written: set[str] = set()
        other = False
        while True:
            try:
                data = os.read(self.fd, 65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                return written, True
            if not data:
                break
            off = 0
            while off + _HEADER.size <= len(data):
                wd, mask, _, length = _HEADER.unpack_from(data, off)
                name = data[off + _HEADER.size:off + _HEADER.size + length].rstrip(b"\0")
                off += _HEADER.size + length
                directory = self._dir_of.get(wd)
                if mask & IN_MODIFY and name and directory is not None:
                    written.add(os.path.join(directory, os.fsdecode(name)))
                elif mask & ~IN_MODIFY:
                    other = True
                    if mask & (IN_DELETE_SELF | IN_MOVE_SELF) and directory is not None:
                        self.directories.discard(directory)  # watched again once back
        return written, other

    def attach(self, loop: object, changed: Callable[[set[str], bool], None]) -> None:
        def on_readable() -> None:
            changed(*self.drain())
        loop.add_reader(self.fd, on_readable)  # type: ignore[attr-defined]

    def covers(self, patterns: tuple[str, ...]) -> bool:
        """Whether every file the globs name is in a watched directory (no wildcard before
        the last path component): then the events tell of every change at a path."""
        return all(watched_directory(p) in self.directories
                   and not glob.has_magic(os.path.dirname(p)) for p in patterns)

    def close(self, loop: object) -> None:
        if self.fd >= 0:
            loop.remove_reader(self.fd)  # type: ignore[attr-defined]
            os.close(self.fd)
            self.fd = -1
