"""A program run in a pseudo-terminal of a given size, as a person at a terminal runs it:
its screen as it draws it (testkit.screen), keys typed, resizes, how it ends, and the
terminal's modes."""

from __future__ import annotations

import codecs
import fcntl
import os
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable

from testkit.screen import Screen

# Run in the child's new session: the terminal on fd 0 becomes its controlling terminal
# (Ctrl-C, SIGWINCH), then the program replaces it. Popen rather than fork in the test's
# process: the test has threads, and a forked copy of them can deadlock.
_CONTROLLING_TTY = ("import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
                    "os.execv(sys.argv[1], sys.argv[1:])")


def _set_size(fd: int, columns: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


class PtyProgram:
    """`argv` run with a pseudo-terminal as its controlling terminal and stdin, stdout,
    stderr; everything it writes is read as it comes (so it never blocks on a full pty)."""

    def __init__(self, argv: list[str], columns: int = 80, rows: int = 24,
                 env: dict[str, str] | None = None, cwd: str | None = None) -> None:
        self.screen = Screen(columns, rows)
        self.raw = ""
        self._changed = threading.Condition()
        self.fd, slave = os.openpty()
        _set_size(slave, columns, rows)  # before the program can ask for it
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _CONTROLLING_TTY, *argv], stdin=slave, stdout=slave,
                stderr=slave, start_new_session=True, cwd=cwd,
                env={**os.environ, "TERM": "xterm", **(env or {})})
        finally:
            os.close(slave)  # the child's copies are the only ones: its exit ends the reads
        self.pid = self.proc.pid
        self.status: int | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        while True:
            try:
                data = os.read(self.fd, 65536)
            except OSError:  # EIO: the program and every copy of the slave side are gone
                data = b""
            with self._changed:
                if not data:
                    self._changed.notify_all()
                    return
                text = decoder.decode(data)
                self.raw += text
                self.screen.feed(text)
                self._changed.notify_all()

    def wait_screen(self, pred: Callable[[Screen], bool], timeout: float = 20.0,
                    what: str = "") -> str:
        """The screen's text once `pred` holds for it; fails after `timeout` with the
        screen as it was."""
        end = time.monotonic() + timeout
        with self._changed:
            while not pred(self.screen):
                left = end - time.monotonic()
                if left <= 0 or not self._reader.is_alive():
                    raise AssertionError(f"screen never showed {what or pred}:\n"
                                         + self.screen.text())
                self._changed.wait(min(left, 0.5))
            return self.screen.text()

    def type(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def resize(self, columns: int, rows: int) -> None:
        """As a terminal window resized: the kernel sends the program SIGWINCH."""
        with self._changed:
            self.screen.resize(columns, rows)
        _set_size(self.fd, columns, rows)

    def local_modes(self) -> int:
        """The terminal's c_lflag (ECHO, ICANON ...), as the program left it."""
        return int(termios.tcgetattr(self.fd)[3])

    def wait(self, timeout: float = 20.0) -> int:
        """The exit status (a signal's number negated); fails, the program killed, after
        `timeout`."""
        try:
            self.status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the program did not exit within {timeout}s") from None
        self._reader.join(5)
        return self.status

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.status = self.proc.wait()

    def close(self) -> None:
        self.kill()
        self._reader.join(5)
        os.close(self.fd)
