"""What the parent and the worker processes share: a status slot per connection, the start
time, the stop flag and error messages; and how an error reads in them."""

from __future__ import annotations

from typing import Any

from loadgenkit.latency import BUCKETS

# Per-connection slots in shared memory: each sender writes only its own, the parent reads.
(ST_STATE, ST_SENT, ST_BYTES, ST_ERRORS, ST_MAXLAG_US, ST_LAG_US, ST_END_US,
 ST_POSTS, ST_RETRIES, ST_HTTP_ERRORS, ST_GIVEN_UP) = range(11)
NFIELDS = 11
STATE_INIT, STATE_READY, STATE_DONE, STATE_FAILED = 0, 1, 2, -1


class Shared:
    """What the parent and the worker processes share (inherited through fork)."""

    def __init__(self, ctx: Any, nconn: int) -> None:
        self.status = ctx.RawArray("q", nconn * NFIELDS)
        # http: each connection's histogram of POST answer times (loadgenkit.latency)
        self.latency = ctx.RawArray("q", nconn * BUCKETS)
        self.start = ctx.RawValue("d", 0.0)       # time.monotonic() at start (system-wide)
        self.wall_ns = ctx.RawValue("q", 0)       # time.time_ns() at the same moment
        self.stop = ctx.RawValue("i", 0)          # 1: stop sending, 2: also skip draining
        self.go = ctx.Event()
        self.messages = ctx.SimpleQueue()
