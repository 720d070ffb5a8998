"""The full-screen terminal: the alternate screen, keys read one at a time, redraws in
place, resizes; and the terminal as it was, whichever way the program leaves.

Plain ANSI escapes (VT100 and xterm's alternate screen), which every terminal an operator
reaches over ssh understands; curses would add a terminfo lookup and nothing this view uses.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import termios
import tty
from types import FrameType, TracebackType
from typing import Any, TextIO

ENTER = "\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J"   # alternate screen, cursor hidden, cleared
LEAVE = "\x1b[?25h\x1b[?1049l"                # cursor shown, the screen as it was
DEFAULT_SIZE = (80, 24)


class Terminated(Exception):
    """SIGTERM or SIGHUP arrived: leave as after 'q', the terminal restored."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


class FullScreen:
    """`with FullScreen(sys.stdin, sys.stdout) as term:` draws on the alternate screen.

    Keys come without Enter and without echo (cbreak); Ctrl-C still interrupts. SIGWINCH
    and keys wake `wait`; SIGTERM and SIGHUP raise Terminated, so the `with` restores the
    terminal on every way out. Ctrl-Z gives the shell its terminal back while stopped, and
    the screen is taken again (and redrawn) at SIGCONT.
    """

    def __init__(self, keys: TextIO, out: TextIO) -> None:
        self.out = out
        self.keys_fd: int | None = keys.fileno() if keys.isatty() else None
        self._saved: list[Any] | None = None
        self._wake_r = self._wake_w = -1  # SIGWINCH writes a byte here: `wait` wakes
        self._old_handlers: dict[int, object] = {}
        self.resized = True

    def __enter__(self) -> FullScreen:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        for sig, handler in ((signal.SIGWINCH, self._on_resize),
                             (signal.SIGTSTP, self._on_suspend),
                             (signal.SIGTERM, _terminate), (signal.SIGHUP, _terminate)):
            self._old_handlers[sig] = signal.signal(sig, handler)
        try:
            self._take()
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._restore()

    def _take(self) -> None:
        """The terminal for this screen: keys one at a time, the alternate screen."""
        if self.keys_fd is not None:
            self._saved = termios.tcgetattr(self.keys_fd)
            tty.setcbreak(self.keys_fd, termios.TCSANOW)
        self.out.write(ENTER)
        self.out.flush()

    def _give_back(self) -> None:
        """The terminal as it was before `_take`."""
        with contextlib.suppress(OSError, ValueError):
            self.out.write(LEAVE)
            self.out.flush()
        if self._saved is not None and self.keys_fd is not None:
            with contextlib.suppress(termios.error):
                termios.tcsetattr(self.keys_fd, termios.TCSAFLUSH, self._saved)
            self._saved = None

    def _on_suspend(self, signum: int, frame: FrameType | None) -> None:
        self._give_back()
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)  # stops here, until SIGCONT
        signal.signal(signal.SIGTSTP, self._on_suspend)
        with contextlib.suppress(OSError, termios.error):
            self._take()
        self._on_resize(signum, frame)  # redraw all: the shell wrote on the screen

    def _restore(self) -> None:
        self._give_back()
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._old_handlers.clear()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def _on_resize(self, signum: int, frame: FrameType | None) -> None:
        self.resized = True
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"\0")

    def size(self) -> tuple[int, int]:
        """(columns, rows), read again on every call: a resize changes it."""
        try:
            size = os.get_terminal_size(self.out.fileno())
        except OSError:
            return DEFAULT_SIZE
        return (size.columns or DEFAULT_SIZE[0], size.lines or DEFAULT_SIZE[1])

    def draw(self, lines: list[str]) -> None:
        """Each line at its row, the rest of that row and the rows below cleared: the screen
        changes in place, without a blank frame in between."""
        self.resized = False
        out = [f"\x1b[{row};1H{line}\x1b[K" for row, line in enumerate(lines, 1)]
        out.append("\x1b[J")
        self.out.write("".join(out))
        self.out.flush()

    def wait(self, timeout: float) -> str:
        """Keys typed within `timeout` seconds ("" when none came or the terminal was
        resized): returns as soon as either happens."""
        fds = [self._wake_r] + ([] if self.keys_fd is None else [self.keys_fd])
        ready, _, _ = select.select(fds, [], [], max(timeout, 0.0))
        if self._wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 64)
        if self.keys_fd is not None and self.keys_fd in ready:
            data = os.read(self.keys_fd, 64)
            if not data:
                self.keys_fd = None  # the keyboard went away: wait on the clock only
            return data.decode("utf-8", "replace")
        return ""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signum)
