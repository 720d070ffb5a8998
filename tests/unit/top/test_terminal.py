"""The full screen leaves the terminal as it found it, whatever ends it."""

from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
import termios
from collections.abc import Iterator
from typing import TextIO

import pytest

from logd.top.terminal import ENTER, LEAVE, FullScreen, Terminated


@pytest.fixture
def pty() -> Iterator[tuple[int, TextIO]]:
    """The master side's fd, and the slave side as a text stream (keys and screen)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    stream = os.fdopen(slave, "w", encoding="utf-8")  # keys are read from its fd
    yield master, stream
    stream.close()
    os.close(master)


def written(master: int, last: str) -> str:
    """What reached the terminal, up to and with `last` (a pty hands it over in pieces)."""
    out = ""
    while not out.endswith(last):
        ready, _, _ = select.select([master], [], [], 5.0)
        assert ready, f"the terminal got {out!r}, not ending with {last!r}"
        out += os.read(master, 65536).decode()
    return out


def test_an_exception_inside_leaves_the_terminal_restored(pty: tuple[int, TextIO]) -> None:
    master, term = pty
    before = termios.tcgetattr(term)
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGWINCH)
    with pytest.raises(RuntimeError, match="boom"), FullScreen(term, term) as screen:
        assert not termios.tcgetattr(term)[3] & (termios.ECHO | termios.ICANON)
        screen.draw(["hello"])
        raise RuntimeError("boom")
    assert termios.tcgetattr(term) == before
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGWINCH)) == handlers
    out = written(master, LEAVE)
    assert out.startswith(ENTER) and "hello" in out and out.endswith(LEAVE)


def test_sigterm_ends_it_as_an_exception_that_restores(pty: tuple[int, TextIO]) -> None:
    master, term = pty
    with pytest.raises(Terminated) as ended, FullScreen(term, term) as screen:
        os.kill(os.getpid(), signal.SIGTERM)
        screen.wait(5.0)  # the handler raises as soon as the signal is taken
    assert ended.value.signum == signal.SIGTERM
    assert termios.tcgetattr(term)[3] & termios.ECHO
    assert written(master, LEAVE).startswith(ENTER)


def test_keys_and_resizes_wake_the_wait(pty: tuple[int, TextIO]) -> None:
    master, term = pty
    with FullScreen(term, term) as screen:
        os.write(master, b"q")
        assert screen.wait(5.0) == "q"
        screen.resized = False
        os.kill(os.getpid(), signal.SIGWINCH)
        assert screen.wait(5.0) == "" and screen.resized
        assert screen.size() == (80, 24)
