"""Directory watches through Linux inotify (libc, by ctypes): a change in a directory the
globs point at (a file created, written, renamed, deleted) wakes the tail listener, which
then looks at the files at once rather than at its next poll.

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
from collections.abc import Callable

IN_MODIFY = 0x002
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_CLOEXEC = 0o2000000
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
            if self._libc.inotify_add_watch(self.fd, os.fsencode(d), _MASK) >= 0:
                self.directories.add(d)

    def drain(self) -> None:
        """Read the pending events: that there were some is all the listener needs."""
        while True:
            try:
                if not os.read(self.fd, 65536):
                    return
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return

    def attach(self, loop: object, changed: Callable[[], None]) -> None:
        def on_readable() -> None:
            self.drain()
            changed()
        loop.add_reader(self.fd, on_readable)  # type: ignore[attr-defined]

    def close(self, loop: object) -> None:
        if self.fd >= 0:
            loop.remove_reader(self.fd)  # type: ignore[attr-defined]
            os.close(self.fd)
            self.fd = -1
