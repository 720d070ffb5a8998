"""One http:// connection: POSTs its share of the schedule in batches, resending what the
server could not take."""

from __future__ import annotations

import http.client
import json
import math
import sys
import time
from collections import deque

from loadgenkit.config import DRAIN_SECONDS, PROG, Config
from loadgenkit.latency import BUCKETS, bucket_of
from loadgenkit.otlp import OtlpBuilder, rejected_of
from loadgenkit.payloads import HttpBuilder
from loadgenkit.schedule import MAX_TICK, make_schedule, share
from loadgenkit.shared import (
    NFIELDS,
    ST_BYTES,
    ST_END_US,
    ST_GIVEN_UP,
    ST_HTTP_ERRORS,
    ST_LAG_US,
    ST_MAXLAG_US,
    ST_POSTS,
    ST_RETRIES,
    ST_SENT,
    ST_STATE,
    STATE_DONE,
    Shared,
)
from toolargs import os_reason

HTTP_PREBUILD_BYTES = 64 << 20  # per worker: bodies built before the start (at --rate 0)
HTTP_CHUNK_BYTES = 4 << 20      # afterwards bodies are built about this much at a time
HTTP_AHEAD_SECONDS = 0.25       # at a --rate, bodies built ahead (in idle time) cover this
RETRY_AFTER_DEFAULT = 0.1       # a 503 without a usable Retry-After
RETRY_AFTER_MAX = 5.0
ERROR_PAUSE = 0.1               # before resending after a connection error
MAX_CONSECUTIVE_ERRORS = 10     # then that connection stops
ERROR_REPORTS = 3               # errors printed per connection; the rest are only counted
SNIPPET_BYTES = 200             # of an error answer's body


class GiveUp(Exception):
    """Ends one HTTP connection after MAX_CONSECUTIVE_ERRORS errors in a row."""


def retry_after(value: str | None) -> float:
    """Seconds to wait before resending a batch refused with 503."""
    if value is None:
        return RETRY_AFTER_DEFAULT
    try:
        v = float(value)
    except ValueError:      # the HTTP-date form, or garbage
        return RETRY_AFTER_DEFAULT
    return RETRY_AFTER_DEFAULT if math.isnan(v) else min(max(v, 0.0), RETRY_AFTER_MAX)


def accepted_count(data: bytes) -> int | None:
    """N of a 202's {"accepted": N} body, None when the body is not that."""
    try:
        obj = json.loads(data)
    except ValueError:
        return None
    v = obj.get("accepted") if isinstance(obj, dict) else None
    return v if type(v) is int else None


def snippet(data: bytes) -> str:
    text = " ".join(data[:SNIPPET_BYTES].decode("utf-8", "replace").split())
    return (text + "..." if len(data) > SNIPPET_BYTES else text) or "(empty body)"


class HttpSender:
    """One keep-alive HTTP connection: its share of the schedule and of --count, in POSTs of
    --batch records. Bodies are built ahead. At --rate 0: before the start up to a share of
    HTTP_PREBUILD_BYTES, then a chunk at a time whenever the built ones run out. At a --rate:
    HTTP_AHEAD_SECONDS of them, topped up one at a time while waiting for the next POST's
    time, so that building delays no POST (and timestamps stay close to send times)."""

    # The clock the schedule runs on (time.monotonic is system-wide: the parent's start time
    # means the same here); tests drive a sender on a fake one.
    monotonic = staticmethod(time.monotonic)
    sleep = staticmethod(time.sleep)

    def __init__(self, cfg: Config, shared: Shared, worker: int, conn: int,
                 http_conn: http.client.HTTPConnection, filler: str) -> None:
        self.cfg = cfg
        self.shared = shared
        self.conn = http_conn
        self.name = f"{worker}-{conn}"
        self.builder = (OtlpBuilder if cfg.otlp else HttpBuilder)(cfg, worker, conn, filler)
        self.index = self.builder.index
        self.slot = self.index * NFIELDS
        self.latency = shared.latency
        self.lat_base = self.index * BUCKETS
        self.limit = (share(cfg.count, cfg.total_connections, self.index)
                      if cfg.count is not None else None)
        self.duration = cfg.duration if cfg.duration is not None else math.inf
        self.headers = {
            "Content-Type": "application/x-ndjson" if cfg.ndjson else "application/json",
            "User-Agent": PROG,
        }
        if cfg.otlp == "protobuf":
            self.headers["Content-Type"] = "application/x-protobuf"
        if cfg.gzip:
            self.headers["Content-Encoding"] = "gzip"
        if cfg.token is not None:
            self.headers["Authorization"] = f"Bearer {cfg.token}"
        self.posts = self.retries = self.errors = 0
        self.failing = 0            # consecutive errors
        self.reported = 0
        self.given_up_records = 0
        self.used = False           # the open socket has carried a whole exchange
        batch_bytes = (cfg.size + 1) * cfg.batch
        self.chunk = max(1, HTTP_CHUNK_BYTES // batch_bytes)
        self.ahead = 0              # at a --rate: how many bodies to keep built
        first = max(self.chunk, HTTP_PREBUILD_BYTES // cfg.connections // batch_bytes)
        if cfg.rate > 0:
            peak = max(cfg.rate, cfg.burst_rate) if cfg.pattern == "burst" else cfg.rate
            per_second = peak / cfg.total_connections / cfg.batch
            self.ahead = first = max(1, min(self.chunk, int(per_second * HTTP_AHEAD_SECONDS)))
            self.chunk = 1          # only when behind: build just the body that is due
        self.ready: deque[bytes] = deque()
        self.built = 0              # records before this one are built (or sent)
        self.fill(first)

    def fill(self, batches: int) -> None:
        """Build up to `batches` more full batches (fewer when --count leaves fewer)."""
        b = self.cfg.batch
        seq = self.built
        if self.limit is not None:
            batches = min(batches, (self.limit - seq) // b)
        self.ready.extend(self.builder.body(seq + k * b, b) for k in range(batches))
        self.built = seq + max(batches, 0) * b

    def top_up(self) -> bool:
        """At a --rate, while waiting: build one more body if fewer than `ahead` are ready."""
        if len(self.ready) >= self.ahead:
            return False
        before = self.built
        self.fill(1)
        return self.built > before

    def next_body(self, seq: int, take: int) -> bytes:
        if take < self.cfg.batch:
            # The last POST of the run (--count, or what the schedule has due at --duration).
            self.ready.clear()
            return self.builder.body(seq, take)
        if not self.ready:
            assert self.built == seq, (self.built, seq)
            self.fill(self.chunk)
        return self.ready.popleft()

    def run(self) -> None:
        try:
            self.send_loop()
        except GiveUp:
            pass
        finally:
            self.conn.close()
            self.shared.status[self.slot + ST_STATE] = STATE_DONE

    def send_loop(self) -> None:
        cfg = self.cfg
        st = self.shared.status
        slot = self.slot
        stop = self.shared.stop
        start = self.shared.start.value
        sched = make_schedule(cfg)
        n = cfg.total_connections
        i = self.index
        later = n - 1 - i
        limit = self.limit if self.limit is not None else sys.maxsize
        duration = self.duration
        batch = cfg.batch
        mono = self.monotonic
        sleep = self.sleep
        seq = sent = nbytes = 0
        max_lag = 0.0
        lead = start - mono()
        if lead > 0:
            sleep(lead)
        try:
            while not stop.value:
                now = mono() - start
                take = min(batch, limit - seq)
                if take <= 0:
                    break
                if sched is None:
                    if now >= duration:
                        break
                    lag = 0.0
                else:
                    # A POST is due when its last record is.
                    due_at = sched.time_of((seq + take - 1) * n + i + 1)
                    if due_at > duration:
                        # The run ends first: the last POST carries what is due by then.
                        take = min((int(sched.due(duration) + 1e-7) + later) // n, limit,
                                   seq + batch) - seq
                        if take <= 0:
                            break
                        due_at = sched.time_of((seq + take - 1) * n + i + 1)
                    if now < due_at:
                        if not self.top_up():
                            sleep(min(due_at - now, MAX_TICK))
                        continue
                    lag = now - due_at
                body = self.next_body(seq, take)
                began = mono() - start if sched is None else due_at
                if self.post(body, take):
                    sent += take
                    nbytes += len(body)
                    self.latency[self.lat_base + bucket_of(mono() - start - began)] += 1
                seq += take
                st[slot + ST_SENT] = sent
                st[slot + ST_BYTES] = nbytes
                st[slot + ST_LAG_US] = int(lag * 1e6)
                if lag > max_lag:
                    max_lag = lag
                    st[slot + ST_MAXLAG_US] = int(lag * 1e6)
                st[slot + ST_END_US] = int((mono() - start) * 1e6)
        finally:
            st[slot + ST_END_US] = int(min(mono() - start, duration) * 1e6)

    def post(self, body: bytes, count: int) -> bool:
        """Send one batch until it is taken (True), refused, or the run ends (False).

        503: resent after Retry-After. A keep-alive connection that turns out to be closed by
        the server: resent once at once on a new connection. Other connection errors (no
        answer): counted, and resent after ERROR_PAUSE on a new connection, so the server may
        get a batch twice if it took one without answering. Any other answer: counted, and the
        batch skipped (resending a 400 or 413 would only repeat it)."""
        cfg = self.cfg
        conn = self.conn
        st = self.shared.status
        slot = self.slot
        stale_resent = False
        while True:
            reused = self.used and conn.sock is not None
            try:
                conn.request("POST", cfg.path, body, self.headers)
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                self.used = False
                if reused and not stale_resent and isinstance(exc, ConnectionError):
                    stale_resent = True
                    self.retries += 1
                    st[slot + ST_RETRIES] = self.retries
                    continue
                self.fail(f"POST {cfg.target}: {os_reason(exc)}")
                if cfg.give_up:
                    return self.given_up(count)
                if not self.pause(ERROR_PAUSE):
                    return False
                continue
            self.used = conn.sock is not None     # http.client closes on Connection: close
            self.posts += 1
            st[slot + ST_POSTS] = self.posts
            if resp.status == 200 and cfg.otlp:
                rejected = rejected_of(data, cfg.otlp)
                if rejected == 0:
                    self.failing = 0
                    return True
                self.fail(f"POST {cfg.target}: HTTP 200 with {rejected} log records rejected: "
                          f"{snippet(data)}")
                return False
            if resp.status == 202:
                accepted = accepted_count(data)
                if accepted == count:
                    self.failing = 0
                    return True
                self.fail(f"POST {cfg.target}: HTTP 202 with accepted {accepted} for a batch "
                          f"of {count}: {snippet(data)}")
                return False
            if cfg.give_up and resp.status != 202:
                self.fail(f"POST {cfg.target}: HTTP {resp.status} {resp.reason}: "
                          f"{snippet(data)}")
                return self.given_up(count)
            if resp.status in (503, 429):
                self.retries += 1
                st[slot + ST_RETRIES] = self.retries
                if not self.pause(retry_after(resp.getheader("Retry-After"))):
                    return False
                continue
            self.fail(f"POST {cfg.target}: HTTP {resp.status} {resp.reason}: {snippet(data)}")
            return False

    def given_up(self, count: int) -> bool:
        """--give-up: the batch is lost to this client, as seed 001's clients lose it."""
        self.given_up_records += count
        self.shared.status[self.slot + ST_GIVEN_UP] = self.given_up_records
        return False

    def fail(self, text: str) -> None:
        self.errors += 1
        self.shared.status[self.slot + ST_HTTP_ERRORS] = self.errors
        self.failing += 1
        if self.reported < ERROR_REPORTS:
            self.reported += 1
            self.shared.messages.put(text)
        if self.failing >= MAX_CONSECUTIVE_ERRORS and not self.cfg.give_up:
            self.shared.messages.put(
                f"a connection to {self.cfg.target} stopped after {MAX_CONSECUTIVE_ERRORS} "
                "consecutive errors")
            raise GiveUp

    def pause(self, seconds: float) -> bool:
        """Sleep before a resend; False (the batch is given up) on a stop signal, or when the
        resends of a batch due within --duration go on DRAIN_SECONDS past its end."""
        shared = self.shared
        until = self.monotonic() + seconds
        while True:
            now = self.monotonic()
            if shared.stop.value or now - shared.start.value >= self.duration + DRAIN_SECONDS:
                return False
            if now >= until:
                return True
            self.sleep(min(until - now, MAX_TICK))
