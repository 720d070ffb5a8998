"""What each component reports: typed records of its counters.

They are dicts at run time (logctl stats --json, /metrics and the METRICS line read them as
such, and their keys are a documented interface), typed here so that a key is either a
component's figure or absent, never a placeholder.
"""

from __future__ import annotations

from typing import Any, TypedDict


class Backlog(TypedDict, total=False):
    """How far a listener is behind a source that keeps what it has not taken yet (a Kafka
    topic, a tailed file), in the units it can count: views show it whatever the listener's
    type is."""

    records: int
    bytes: int


class ListenerStats(TypedDict, total=False):
    type: str
    connections: int            # open now (a Kafka input: partitions assigned)
    accepted: int               # connections (or requests) taken
    accepted_connections: int
    records: int
    bytes: int
    pauses: int                 # times it stopped reading for a full buffer
    errors: dict[str, int]      # by reason
    backlog: Backlog            # a listener that reads from a source that keeps data


class TcpListenerStats(ListenerStats, total=False):
    pending_bytes: int          # incomplete frames held


class SyslogListenerStats(TcpListenerStats, total=False):
    transport: str              # "tcp" or "udp"


class HttpListenerStats(ListenerStats, total=False):
    waited_full: int            # requests that waited for room
    inflight_bytes: int         # of bodies being read and parsed
    otlp_requests: int          # OTLP/HTTP export requests (protobuf or JSON)
    otlp_records: int           # log records taken from them
    otlp_rejected_records: int  # log records rejected as invalid (partial success)
    otlp_decode_errors: int     # requests that could not be decoded (400)


class KafkaPartitionStats(TypedDict):
    topic: str
    partition: int
    committed: int | None
    read_to: int | None
    highwater: int | None
    lag: int | None
    uncommitted: int
    records: int


class KafkaListenerStats(ListenerStats, total=False):
    group: str
    connected: bool
    partitions: dict[str, KafkaPartitionStats]
    lag: int
    rebalances: int
    commits: int
    uncommitted: int
    dead_lettered: int
    reread: int


class TailFileStats(TypedDict):
    offset: int                 # read up to
    committed: int              # secured (checkpointed) up to
    size: int
    lag: int                    # bytes not yet read
    open: bool
    at_path: bool               # false: rotated away or deleted, read to its end
    records: int


class TailListenerStats(ListenerStats, total=False):
    files: int                  # followed
    open_files: int
    lag_bytes: int              # not yet read, all files
    rotations: int
    truncations: int
    deleted: int
    inode_reused: int
    cut_lines: int
    closed_for_cap: int
    checkpoints_written: int
    watching: str               # "inotify" (and polling), or "polling" alone
    top_files: dict[str, TailFileStats]   # the stats_files with most lag, by path


class BufferStats(TypedDict, total=False):
    buffer: str                 # "memory" or "disk"
    spool_bytes: int
    spool_segments: int
    replayed: int
    corrupt: int
    spool_write_errors: int
    refused: int
    held_records: int
    ack_damaged: int
    lost_records: int
    missing_segments: int
    problem: str | None


class DestinationStats(BufferStats, total=False):
    type: str
    queued_records: int
    queued_bytes: int
    queue_limit_bytes: int      # the buffer's bound (max_bytes): queued_bytes of it is its fill
    peak_queued_bytes: int
    accepted: int
    written: int                # records delivered: written, or acknowledged by an analyzer
    dropped: int
    dropped_pct: float


class WriterStats(DestinationStats, total=False):
    """An output that writes: a file, a database, Kafka."""

    bytes: int
    flushes: int
    errors: int
    retries: int
    avg_flush_ms: float
    max_flush_ms: float
    flush_seconds: dict[str, Any]   # a histogram snapshot
    batch_records: dict[str, Any]


class FileOutputStats(WriterStats, total=False):
    swaps: int
    rotations: int
    failed: int
    torn_repaired: int
    open_files: int
    avg_write_ms: float
    max_write_ms: float
    write_pct: float
    direct_io: bool


class DatabaseOutputStats(WriterStats, total=False):
    dead_lettered: int
    connected: bool


class AnalyzerPoolStats(DestinationStats, total=False):
    connections: int
    accepted_connections: int
    records: int
    sent: int
    acked: int
    in_flight: int
    redelivered: int
    redelivery_queued: int
    dropped_analyzers: int
    errors: dict[str, int]
