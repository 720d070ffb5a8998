"""Histograms and the Prometheus text exposition of logd's counters."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

FLUSH_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                         1.0, 2.5)
BATCH_RECORDS_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536)


class Histogram:
    """Cumulative-on-export histogram; observe() is a bisect and two adds."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def snapshot(self) -> dict[str, Any]:
        return {"bounds": list(self.bounds), "counts": list(self.counts), "sum": self.sum,
                "count": self.count}


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return "{" + inner + "}"


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(v: float) -> str:
    if v == float("inf"):
        return "+Inf"
    return repr(float(v)) if isinstance(v, float) else str(v)


class Exposition:
    """Builds the text format: one HELP/TYPE header per metric family, then its samples."""

    def __init__(self) -> None:
        self._families: dict[str, tuple[str, str, list[str]]] = {}

    def add(self, name: str, kind: str, help_text: str, value: float,
            labels: dict[str, str] | None = None) -> None:
        fam = self._family(name, kind, help_text)
        fam.append(f"{name}{_labels(labels or {})} {_num(value)}")

    def histogram(self, name: str, help_text: str, snap: dict[str, Any],
                  labels: dict[str, str] | None = None) -> None:
        fam = self._family(name, "histogram", help_text)
        labels = labels or {}
        running = 0
        for bound, n in zip([*snap["bounds"], float("inf")], snap["counts"], strict=True):
            running += n
            fam.append(f"{name}_bucket{_labels({**labels, 'le': _num(bound)})} {running}")
        fam.append(f"{name}_sum{_labels(labels)} {_num(snap['sum'])}")
        fam.append(f"{name}_count{_labels(labels)} {snap['count']}")

    def _family(self, name: str, kind: str, help_text: str) -> list[str]:
        if name not in self._families:
            self._families[name] = (kind, help_text, [])
        return self._families[name][2]

    def render(self) -> str:
        out: list[str] = []
        for name, (kind, help_text, samples) in self._families.items():
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(samples)
        return "\n".join(out) + "\n"


def _tail_metrics(e: Exposition, s: dict[str, Any], lab: dict[str, str]) -> None:
    """A tail listener's totals (per file only in logctl stats: files may be thousands)."""
    e.add("logd_tail_files", "gauge", "Files followed.", s.get("files", 0), lab)
    e.add("logd_tail_open_files", "gauge", "Files held open.", s.get("open_files", 0), lab)
    e.add("logd_tail_lag_bytes", "gauge", "Bytes in followed files not yet read.",
          s.get("lag_bytes", 0), lab)
    for key, help_text in (
            ("rotations", "Files that left their path (renamed), read to their end."),
            ("truncations", "Files found truncated (copytruncate), read again from 0."),
            ("deleted", "Files deleted while followed, read to their end."),
            ("inode_reused", "New files on the inode of a checkpointed one, read from 0."),
            ("cut_lines", "Lines longer than max_line_bytes, cut into several records."),
            ("closed_for_cap", "Files closed for max_open_files (reopened when they grow)."),
            ("checkpoints_written", "Checkpoint files written.")):
        e.add(f"logd_tail_{key}_total", "counter", help_text, s.get(key, 0), lab)


def render_stats(stats: dict[str, Any]) -> str:
    """The daemon's stats snapshot (Daemon.stats()) in Prometheus text format."""
    e = Exposition()
    p = stats["process"]
    e.add("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
          p["rss_bytes"])
    e.add("process_cpu_seconds_total", "counter", "User and system CPU time in seconds.",
          p["cpu_user_s"] + p["cpu_system_s"])
    e.add("process_open_fds", "gauge", "Number of open file descriptors.", p["open_fds"])
    e.add("process_start_time_seconds", "gauge", "Start time since the epoch in seconds.",
          p["start_time"])
    e.add("logd_gc_collections_total", "counter", "Python garbage collections.",
          p["gc_cycles"])
    e.add("logd_gc_pause_seconds_total", "counter", "Time spent in garbage collection.",
          p["gc_pause_ms"] / 1000)
    e.add("logd_control_errors_total", "counter",
          "Control socket requests that failed inside logd (logged, rate-limited).",
          stats.get("daemon", {}).get("control_errors", 0))
    e.add("logd_router_unrouted_records_total", "counter",
          "Records no route matched.", stats["router"]["unrouted"])
    e.add("logd_router_submit_errors_total", "counter",
          "Records an output failed to take (a bug; dropped for that output, logged).",
          stats["router"].get("submit_errors", 0))
    for kind, n in sorted(stats["daemon"].get("library_errors", {}).items()):
        e.add("logd_library_errors_total", "counter",
              "Errors libraries reported (a malformed HTTP request, a broker refusing), by "
              "logger and kind; each logged as one line.", n, {"kind": kind})
    for name, s in stats["listeners"].items():
        lab = {"listener": name}
        e.add("logd_listener_connections", "gauge", "Open connections.",
              s.get("connections", 0), lab)
        e.add("logd_listener_accepted_connections_total", "counter",
              "Connections accepted.", s.get("accepted", 0), lab)
        e.add("logd_listener_records_total", "counter", "Records received.",
              s.get("records", 0), lab)
        e.add("logd_listener_received_bytes_total", "counter", "Bytes read from clients.",
              s.get("bytes", 0), lab)
        e.add("logd_listener_pauses_total", "counter",
              "Times a connection stopped reading because an output buffer was full.",
              s.get("pauses", 0), lab)
        for reason, n in sorted(s.get("errors", {}).items()):
            e.add("logd_listener_errors_total", "counter",
                  "Bad input and refused connections, by reason.", n,
                  {**lab, "reason": reason})
        if s.get("type") == "http":
            e.add("logd_listener_otlp_requests_total", "counter",
                  "OTLP/HTTP export requests (protobuf or JSON).", s.get("otlp_requests", 0),
                  lab)
            e.add("logd_listener_otlp_records_total", "counter",
                  "Log records taken from OTLP requests.", s.get("otlp_records", 0), lab)
            e.add("logd_listener_otlp_rejected_records_total", "counter",
                  "OTLP log records rejected as invalid (answered as partial success).",
                  s.get("otlp_rejected_records", 0), lab)
            e.add("logd_listener_otlp_decode_errors_total", "counter",
                  "OTLP requests that could not be decoded (answered 400).",
                  s.get("otlp_decode_errors", 0), lab)
        if s.get("type") == "kafka":
            e.add("logd_kafka_consumer_rebalances_total", "counter",
                  "Partition assignments this consumer received.", s.get("rebalances", 0),
                  lab)
            e.add("logd_kafka_consumer_dead_lettered_records_total", "counter",
                  "Records that could not be read, written to the dead-letter file.",
                  s.get("dead_lettered", 0), lab)
            e.add("logd_kafka_consumer_reread_records_total", "counter",
                  "Records taken but not committed when their partition went to another "
                  "member: read again there (duplicates at most).", s.get("reread", 0), lab)
            e.add("logd_kafka_consumer_uncommitted_records", "gauge",
                  "Records taken and not yet committed.", s.get("uncommitted", 0), lab)
            for p in s.get("partitions", {}).values():
                plab = {**lab, "topic": p["topic"], "partition": str(p["partition"])}
                if p.get("lag") is not None:
                    e.add("logd_kafka_consumer_lag", "gauge",
                          "Records in the partition past the committed offset.", p["lag"],
                          plab)
                if p.get("committed") is not None:
                    e.add("logd_kafka_consumer_committed_offset", "gauge",
                          "The offset committed for the partition (the next to read).",
                          p["committed"], plab)
        if s.get("type") == "tail":
            _tail_metrics(e, s, lab)
    for name, s in stats["outputs"].items():
        lab = {"output": name}
        e.add("logd_output_up", "gauge",
              "1 when the output can take and write records, 0 when it reports a problem "
              "(disconnected, spool not writable).", 0 if s.get("problem") else 1, lab)
        e.add("logd_output_accepted_records_total", "counter",
              "Records taken into the output's buffer.", s.get("accepted", 0), lab)
        e.add("logd_output_dropped_records_total", "counter",
              "Records dropped because the buffer was full (drop_newest).",
              s.get("dropped", 0), lab)
        e.add("logd_output_written_records_total", "counter", "Records written.",
              s.get("written", 0), lab)
        e.add("logd_output_failed_records_total", "counter",
              "Records that could not be written.", s.get("failed", 0), lab)
        e.add("logd_output_written_bytes_total", "counter", "Bytes written.",
              s.get("bytes", 0), lab)
        e.add("logd_output_queued_records", "gauge", "Records waiting in the buffer.",
              s.get("queued_records", 0), lab)
        e.add("logd_output_queued_bytes", "gauge", "Bytes the buffer holds.",
              s.get("queued_bytes", 0), lab)
        e.add("logd_output_errors_total", "counter", "Write, open and sync errors.",
              s.get("errors", 0), lab)
        e.add("logd_output_flushes_total", "counter", "Disk writes completed.",
              s.get("flushes", 0), lab)
        e.add("logd_output_rotations_total", "counter", "File rotations.",
              s.get("rotations", 0), lab)
        if "torn_repaired" in s:
            e.add("logd_output_torn_records_repaired_total", "counter",
                  "Files found ending inside a record at open (a crash mid-write), cut back "
                  "to their last complete record.", s["torn_repaired"], lab)
        e.add("logd_output_dead_lettered_records_total", "counter",
              "Records the destination refused as data, written to the dead-letter file.",
              s.get("dead_lettered", 0), lab)
        if s.get("buffer") == "disk":
            e.add("logd_output_spool_bytes", "gauge",
                  "Bytes in the disk spool not yet written.", s.get("spool_bytes", 0), lab)
            e.add("logd_output_spool_replayed_records_total", "counter",
                  "Records found in the spool at start, from before.", s.get("replayed", 0),
                  lab)
            e.add("logd_output_spool_corrupt_records_total", "counter",
                  "Records in damaged spool entries, skipped.", s.get("corrupt", 0), lab)
            e.add("logd_output_spool_write_errors_total", "counter",
                  "Writes to the spool that failed (ENOSPC, EIO ...): the batch was held in "
                  "memory (block), refused to a client that retries (HTTP), or dropped "
                  "(drop_newest).", s.get("spool_write_errors", 0), lab)
            e.add("logd_output_spool_held_records", "gauge",
                  "Records held in memory because the spool cannot be written.",
                  s.get("held_records", 0), lab)
            e.add("logd_output_spool_refused_records_total", "counter",
                  "Records refused to HTTP clients because the spool could not be written.",
                  s.get("refused", 0), lab)
            e.add("logd_output_spool_ack_damaged_total", "counter",
                  "Times the spool's ack file could not be believed at start (replayed from "
                  "the oldest segment).", s.get("ack_damaged", 0), lab)
            e.add("logd_output_spool_lost_records_total", "counter",
                  "Records in spool segments found missing at start.",
                  s.get("lost_records", 0), lab)
        if "flush_seconds" in s:
            e.histogram("logd_output_flush_seconds",
                        "Time from handing a buffer to the disk until it was written.",
                        s["flush_seconds"], lab)
        if "batch_records" in s:
            e.histogram("logd_output_batch_records", "Records per batch written.",
                        s["batch_records"], lab)
    return e.render()
