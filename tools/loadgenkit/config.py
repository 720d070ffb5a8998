"""What one run is: the options resolved into a Config, and limits all parts share."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

PROG = "loadgen"

DRAIN_SECONDS = 5.0
STOP_GRACE = DRAIN_SECONDS + 2.0


@dataclass(frozen=True)
class Config:
    target: str
    scheme: str                 # "tcp" or "http"
    host: str
    port: int
    path: str                   # http: request path (and query)
    rate: float                 # total records/s over all connections; 0 = as fast as possible
    duration: float | None
    count: int | None
    size: int
    connections: int            # per worker
    workers: int
    framing: str
    payload: str
    levels: tuple[int, ...]     # severity of global record j is levels[j % len(levels)]
    events: tuple[str, ...]     # JSON-encoded event names, indexed like levels
    pattern: str
    burst_rate: float
    burst_seconds: float
    burst_every: float
    mode: str                   # "exact", "cycle" or "batch" (see resolve_mode()), or "http"
    timestamps: bool
    json_summary: bool
    seed: int
    run_id: str
    apps: tuple[str, ...]       # http: JSON-encoded app_id values, a table like levels
    batch: int                  # http: records per POST
    ndjson: bool                # http: NDJSON body instead of a JSON array
    gzip: bool                  # http: gzip the body
    token: str | None           # http: bearer token
    tls: ssl.SSLContext | None  # --tls: how connections are wrapped
    give_up: bool = False       # http: a batch not answered 202 is failed, never resent
    otlp: str | None = None     # http: "protobuf" or "json": OTLP log requests, not logd's JSON

    @property
    def total_connections(self) -> int:
        return self.workers * self.connections

    @property
    def http(self) -> bool:
        return self.scheme == "http"
