"""What the parent shows: a progress line on a terminal, and the summary at the end."""

from __future__ import annotations

import json
import sys
from typing import Any

from loadgenkit.config import Config
from loadgenkit.latency import BUCKETS, percentiles
from loadgenkit.shared import (
    NFIELDS,
    ST_BYTES,
    ST_END_US,
    ST_ERRORS,
    ST_GIVEN_UP,
    ST_HTTP_ERRORS,
    ST_LAG_US,
    ST_MAXLAG_US,
    ST_POSTS,
    ST_RETRIES,
    ST_SENT,
    Shared,
)


def human_rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.2f}"


class Totals:
    def __init__(self, shared: Shared, nconn: int) -> None:
        st = shared.status
        rows = [st[k * NFIELDS:(k + 1) * NFIELDS] for k in range(nconn)]
        self.sent = sum(r[ST_SENT] for r in rows)
        self.bytes = sum(r[ST_BYTES] for r in rows)
        self.errors = sum(r[ST_ERRORS] for r in rows)
        self.max_lag_ms = max(r[ST_MAXLAG_US] for r in rows) / 1000
        self.lag_ms = max(r[ST_LAG_US] for r in rows) / 1000
        self.seconds = max(r[ST_END_US] for r in rows) / 1e6
        self.posts = sum(r[ST_POSTS] for r in rows)
        self.retries = sum(r[ST_RETRIES] for r in rows)
        self.http_errors = sum(r[ST_HTTP_ERRORS] for r in rows)
        self.given_up = sum(r[ST_GIVEN_UP] for r in rows)
        hist = [0] * BUCKETS
        lat = shared.latency
        for k in range(nconn):
            for b, n in enumerate(lat[k * BUCKETS:(k + 1) * BUCKETS]):
                if n:
                    hist[b] += n
        self.latency_ms = percentiles(hist, (50, 99, 99.9, 100))


class Progress:
    """One status line on a terminal, rewritten in place each second."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.width = 0
        self.last_t = 0.0
        self.last_sent = 0

    def show(self, elapsed: float, tot: Totals) -> None:
        if not self.enabled:
            return
        dt = elapsed - self.last_t
        rate = (tot.sent - self.last_sent) / dt if dt > 0 else 0.0
        mib = rate * (tot.bytes / tot.sent if tot.sent else 0) / (1 << 20)
        self.last_t, self.last_sent = elapsed, tot.sent
        line = (f"{elapsed:7.1f}s  sent {tot.sent:,}  rate {human_rate(rate)}/s  "
                f"{mib:.1f} MiB/s  lag {tot.lag_ms:.1f} ms (max {tot.max_lag_ms:.1f})")
        if tot.retries or tot.http_errors:
            line += f"  retries {tot.retries:,}  http errors {tot.http_errors:,}"
        sys.stderr.write("\r" + line.ljust(self.width))
        sys.stderr.flush()
        self.width = len(line)

    def clear(self) -> None:
        if self.enabled and self.width:
            sys.stderr.write("\r" + " " * self.width + "\r")
            sys.stderr.flush()
            self.width = 0


def mode_text(cfg: Config) -> str:
    if cfg.mode == "http":
        return "every record distinct (bodies built ahead, in chunks)"
    if cfg.mode == "exact":
        return "every record distinct (pre-built)"
    if cfg.mode == "batch":
        return "every record distinct (built per batch)"
    return "pre-built pool, cycled (sequence numbers repeat)"


def print_summary(cfg: Config, tot: Totals, errors: int, seconds: float,
                  interrupted: bool) -> None:
    """The end of a run on stdout: one JSON object (--json), or a few lines for a person."""
    rate = tot.sent / seconds if seconds > 0 else 0.0
    mib_s = tot.bytes / seconds / (1 << 20) if seconds > 0 else 0.0
    if cfg.json_summary:
        summary: dict[str, Any] = {
            "sent": tot.sent,
            "errors": errors,
            "seconds": round(seconds, 6),
            "rate": round(rate, 3),
            "mib_per_s": round(mib_s, 3),
            "bytes": tot.bytes,
            "max_lag_ms": round(tot.max_lag_ms, 3),
            "workers": cfg.workers,
            "connections": cfg.connections,
            "framing": cfg.framing,
            "size": cfg.size,
        }
        if cfg.http:
            lat = tot.latency_ms
            summary.update(posts=tot.posts, retries=tot.retries, http_errors=tot.http_errors,
                           batch=cfg.batch, gzip=cfg.gzip, given_up=tot.given_up,
                           latency_ms={"p50": round(lat[50], 3), "p99": round(lat[99], 3),
                                       "p999": round(lat[99.9], 3),
                                       "max": round(lat[100], 3)})
        print(json.dumps(summary))
    else:
        wanted = "max" if cfg.rate <= 0 else f"{human_rate(cfg.rate)}/s"
        if cfg.pattern == "burst" and cfg.rate > 0:
            wanted += f" (bursts of {human_rate(cfg.burst_rate)}/s)"
        print(f"sent {tot.sent:,} records, {tot.bytes / (1 << 20):,.1f} MiB in {seconds:.3f} s: "
              f"{human_rate(rate)} records/s, {mib_s:,.1f} MiB/s; max lag {tot.max_lag_ms:.1f} ms; "
              f"errors {errors}")
        if cfg.http:
            print(f"  {tot.posts:,} POSTs of up to {cfg.batch:,} records, {tot.retries:,} "
                  f"retries, {tot.http_errors:,} http errors")
            lat = tot.latency_ms
            print(f"  answer times (from when each POST was due): p50 {lat[50]:.2f} ms, "
                  f"p99 {lat[99]:.2f} ms, p999 {lat[99.9]:.2f} ms, max {lat[100]:.2f} ms")
            body = f"body {cfg.framing}{' gzip' if cfg.gzip else ''}, records ~{cfg.size} B"
        else:
            body = f"framing {cfg.framing}, payload {cfg.payload} {cfg.size} B"
        tls = " (TLS)" if cfg.tls else ""
        print(f"  target {cfg.target}{tls}, rate {wanted}, {cfg.workers} worker(s) x "
              f"{cfg.connections} connection(s), {body}, run id {cfg.run_id}, seed {cfg.seed}")
        print(f"  records: {mode_text(cfg)}"
              + ("; interrupted" if interrupted else ""))
