"""Process-wide figures: GC pauses, RSS, CPU, and the seed-000 METRICS line."""

from __future__ import annotations

import gc
import time
from collections.abc import Mapping
from typing import Any

import psutil


class GcWatch:
    """Counts collections and their total pause via gc.callbacks."""

    def __init__(self) -> None:
        self.cycles = 0
        self.pause_s = 0.0
        self._t0 = 0.0

    def install(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.cycles += 1
            self.pause_s += time.perf_counter() - self._t0


GC = GcWatch()
_PROC = psutil.Process()


def rss_bytes() -> int:
    return int(_PROC.memory_info().rss)


def process_stats() -> dict[str, Any]:
    with _PROC.oneshot():
        mem = _PROC.memory_info()
        cpu = _PROC.cpu_times()
        return {
            "pid": _PROC.pid,
            "rss_bytes": int(mem.rss),
            "cpu_user_s": cpu.user,
            "cpu_system_s": cpu.system,
            "open_fds": _PROC.num_fds(),
            "threads": _PROC.num_threads(),
            "uptime_s": time.time() - _PROC.create_time(),
            "start_time": _PROC.create_time(),
            "gc_cycles": GC.cycles,
            "gc_pause_ms": GC.pause_s * 1000,
        }


def metrics_line(s: Mapping[str, Any]) -> str:
    """One output's counters in the seed-000 shape that users' scripts already parse."""
    written = s.get("accepted", 0)
    dropped = s.get("dropped", 0)
    offered = written + dropped
    pct = 100.0 * dropped / offered if offered else 0.0
    return (
        f"METRICS: Logs: {offered} Dropped: {dropped} ({pct:.4f}%) | "
        f"Bytes: {s.get('bytes', 0)} | "
        f"Flushes: {s.get('flushes', 0)} Errors: {s.get('errors', 0)} "
        f"Swaps: {s.get('swaps', 0)} | "
        f"AvgFlush: {s.get('avg_flush_ms', 0.0):.2f}ms "
        f"MaxFlush: {s.get('max_flush_ms', 0.0):.2f}ms | "
        f"AvgWrite: {s.get('avg_write_ms', 0.0):.2f}ms "
        f"MaxWrite: {s.get('max_write_ms', 0.0):.2f}ms "
        f"WritePct: {s.get('write_pct', 0.0):.1f}% | "
        f"GC: {GC.cycles} cycles {GC.pause_s * 1000:.2f}ms pause | "
        f"Mem: {rss_bytes() / 1e6:.2f}MB"
    )
