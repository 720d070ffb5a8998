"""The parent process: starts the workers, starts them all at once, watches, stops them on a
signal, and reports."""

from __future__ import annotations

import math
import multiprocessing
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from loadgenkit.config import DRAIN_SECONDS, PROG, STOP_GRACE, Config
from loadgenkit.report import Progress, Totals, print_summary
from loadgenkit.shared import NFIELDS, ST_STATE, STATE_FAILED, STATE_READY, Shared
from loadgenkit.workers import worker_main

START_LEAD = 0.05


def drain_messages(shared: Shared, into: list[str]) -> None:
    while not shared.messages.empty():
        into.append(shared.messages.get())


def stop_workers(procs: Sequence[Any], grace: float) -> None:
    deadline = time.monotonic() + grace
    for p in procs:
        p.join(max(deadline - time.monotonic(), 0.0))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()


def run(cfg: Config) -> int:
    ctx = multiprocessing.get_context("fork")
    nconn = cfg.total_connections
    shared = Shared(ctx, nconn)
    messages: list[str] = []

    def on_signal(signum: int, frame: object) -> None:
        # A second signal means "now": skip waiting for the server to read what was sent.
        shared.stop.value = 2 if shared.stop.value else 1

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    procs = [ctx.Process(target=worker_main, args=(cfg, w, shared), name=f"loadgen-{w}",
                         daemon=True) for w in range(cfg.workers)]
    for p in procs:
        p.start()

    failed = False
    st = shared.status
    while True:
        states = [st[k * NFIELDS + ST_STATE] for k in range(nconn)]
        if STATE_FAILED in states:
            failed = True
            break
        if all(s == STATE_READY for s in states):
            break
        if any(p.exitcode is not None for p in procs):
            failed = True
            break
        if shared.stop.value:
            break
        time.sleep(0.01)

    if failed:
        shared.stop.value = 2
        shared.go.set()
        stop_workers(procs, STOP_GRACE)
        drain_messages(shared, messages)
        reason = messages[0] if messages else "a worker exited before the run started"
        print(f"{PROG}: {reason}", file=sys.stderr)
        return 1

    # Starting slightly in the future lets every sender be waiting when the schedule begins,
    # so thread start-up does not show up as lag.
    start = time.monotonic() + START_LEAD
    shared.wall_ns.value = time.time_ns() + int(START_LEAD * 1e9)
    shared.start.value = start
    shared.go.set()

    tty = sys.stderr.isatty()
    progress = Progress(tty)
    next_tick = start + 1.0
    stop_seen: float | None = None
    killed_at: float | None = None
    while True:
        alive = [p for p in procs if p.is_alive()]
        if not alive:
            break
        alive[0].join(0.1)
        now = time.monotonic()
        if shared.stop.value and stop_seen is None:
            stop_seen = now
            if tty:
                progress.clear()
                print(f"{PROG}: stopping, waiting up to {DRAIN_SECONDS:g} s for the server to "
                      "read what was sent (interrupt again to quit now)", file=sys.stderr)
        if shared.stop.value >= 2 or (stop_seen is not None and now - stop_seen > STOP_GRACE):
            killed_at = now
            stop_workers(procs, 1.0)
            break
        if now >= next_tick and stop_seen is None:
            next_tick += 1.0
            progress.show(now - start, Totals(shared, nconn))
        drain_messages(shared, messages)
    progress.clear()
    drain_messages(shared, messages)

    tot = Totals(shared, nconn)
    errors = tot.errors + tot.http_errors
    for p in procs:
        if p.exitcode not in (0, None, -signal.SIGKILL):
            errors += 1
            messages.append(f"worker {p.name} exited with status {p.exitcode}")
    for msg, times in Counter(messages).items():
        suffix = f" (x{times})" if times > 1 else ""
        print(f"{PROG}: {msg}{suffix}", file=sys.stderr)

    seconds = tot.seconds
    if killed_at is not None:
        # A sender stuck in a write to a server that stopped reading was still sending.
        seconds = max(seconds, min(killed_at - start, cfg.duration or math.inf))
    print_summary(cfg, tot, errors, seconds, interrupted=stop_seen is not None)
    return 1 if errors else 0
