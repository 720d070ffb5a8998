"""logctl top's loops: a live screen on a terminal, a snapshot per interval on a pipe, or
one snapshot (--once).

Each sample is one `stats` request over the control socket, as `logctl stats` makes it;
rates come from two in a row. A logd that does not answer is shown as such and asked again
at the next interval; the rates start over from its first answer (a restarted logd counts
from zero).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from logd.top import layout
from logd.top.figures import Sample, View, compute
from logd.top.terminal import FullScreen, Terminated

EXIT_OK = 0
QUIT_KEYS = frozenset("qQ")


class Unreachable(Exception):
    """logd did not answer a stats request; the message says why."""


Stats = Callable[[], Mapping[str, Any]]  # one stats reply; raises Unreachable


def _sample(stats: Stats) -> Sample:
    return Sample(time.monotonic(), stats())


def once(stats: Stats, interval: float, out: TextIO) -> int:
    """One snapshot, its rates over `interval`; Unreachable when logd does not answer."""
    first = _sample(stats)
    time.sleep(interval)
    _print(compute(first, _sample(stats)), out)
    return EXIT_OK


def plain(stats: Stats, interval: float, out: TextIO) -> int:
    """A snapshot per interval, until Ctrl-C: for a pipe, a file, a script."""
    prev: Sample | None = None
    try:
        while True:
            try:
                cur = _sample(stats)
            except Unreachable as e:
                out.write(f"logd: not reachable; trying again: {e}\n\n")
                out.flush()
                prev = None
            else:
                if prev is not None:
                    _print(compute(prev, cur), out)
                prev = cur
            time.sleep(interval)
    except KeyboardInterrupt:
        return EXIT_OK


def live(stats: Stats, interval: float, keys: TextIO, out: TextIO) -> int:
    """The full screen, redrawn every interval and on a resize, until q, Ctrl-C, SIGTERM
    or SIGHUP."""
    try:
        with FullScreen(keys, out) as term:
            prev: Sample | None = None
            view: View | None = None
            error = status = ""
            due = time.monotonic()
            while True:
                if time.monotonic() >= due:
                    try:
                        cur = _sample(stats)
                    except Unreachable as e:
                        error, prev = str(e), None
                    else:
                        error, view, prev = "", compute(prev, cur), cur
                    status = _status(interval, bool(error))
                    due = max(due + interval, time.monotonic())
                    term.resized = True
                if term.resized:
                    width, height = term.size()
                    term.draw(layout.unreachable(error, width, height, status) if error
                              else layout.screen(view, width, height, status) if view
                              else [])
                if QUIT_KEYS & set(term.wait(due - time.monotonic())):
                    return EXIT_OK
    except KeyboardInterrupt:
        return EXIT_OK
    except Terminated as e:
        return 128 + e.signum


def _status(interval: float, error: bool) -> str:
    """The last line: when logd was last asked (not when the screen was last drawn)."""
    clock = time.strftime("%H:%M:%S")
    what = "tried" if error else "updated"
    return f"{what} {clock}, every {interval:g}s; q quits"


def _print(view: View, out: TextIO) -> None:
    out.write("\n".join(layout.plain(view)) + "\n\n")
    out.flush()
