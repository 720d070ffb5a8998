"""What each component reports: typed records of its counters.

They are dicts at run time (logctl stats --json, /metrics and the METRICS line read them as
such, and their keys are a documented interface), typed here so that a key is either a
component's figure or absent, never a placeholder.
"""

from __future__ import annotations

from typing import Any, TypedDict


class ListenerStats(TypedDict, total=False):
    type: str
    connections: int            # open now (a Kafka input: partitions assigned)
    accepted: int               # connections (or requests) taken
    accepted_connections: int
    records: int
    bytes: int
    pauses: int                 # times it stopped reading for a full buffer
    errors: dict[str, int]      # by reason


class TcpListenerStats(ListenerStats, total=False):
    pending_bytes: int          # incomplete frames held


class HttpListenerStats(ListenerStats, total=False):
    waited_full: int            # requests that waited for room
    inflight_bytes: int         # of bodies being read and parsed


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
    peak_queued_bytes: int
    accepted: int
    dropped: int
    dropped_pct: float


class WriterStats(DestinationStats, total=False):
    """An output that writes: a file, a database, Kafka."""

    written: int
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
