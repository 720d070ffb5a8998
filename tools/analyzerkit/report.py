"""What an analyzer shows: a progress line on a terminal, and its summary for a person."""

from __future__ import annotations

import sys
from typing import Any

SEVERITY_NAMES = ("emerg", "alert", "crit", "error", "warn", "notice", "info", "debug")


def human_rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.2f}"


def severity_label(sev: int) -> str:
    return f"{SEVERITY_NAMES[sev]}({sev})" if sev < len(SEVERITY_NAMES) else f"sev{sev}"


class Progress:
    """One status line on a terminal, rewritten in place each second."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.width = 0
        self.last_t = 0.0
        self.last_n = 0

    def show(self, elapsed: float, received: int, acked: int, lat_max_ns: int | None) -> None:
        if not self.enabled:
            return
        dt = elapsed - self.last_t
        rate = (received - self.last_n) / dt if dt > 0 else 0.0
        self.last_t, self.last_n = elapsed, received
        line = (f"{elapsed:7.1f}s  received {received:,}  rate {human_rate(rate)}/s  "
                f"acked {acked:,}")
        if lat_max_ns is not None:
            line += f"  latency max {lat_max_ns / 1e6:.1f} ms"
        sys.stderr.write("\r" + line.ljust(self.width))
        sys.stderr.flush()
        self.width = len(line)

    def clear(self) -> None:
        if self.enabled and self.width:
            sys.stderr.write("\r" + " " * self.width + "\r")
            sys.stderr.flush()
            self.width = 0


END_TEXT = {
    "closed": "server closed the connection",
    "reset": "connection reset by the server",
    "count": "--count reached",
    "duration": "--duration reached",
    "signal": "interrupted",
    "error": "broken stream",
}


def print_human(s: dict[str, Any], target: str, end: str) -> None:
    print(f"analyzer {s['id']}: received {s['received']:,} messages, "
          f"{s['bytes'] / (1 << 20):,.1f} MiB in {s['seconds']:.3f} s: "
          f"{human_rate(s['rate'])} messages/s; acked {s['acked']:,}; weight {s['weight']:g}")
    lat = s["latency_ms"]
    if lat is not None:
        print(f"  latency ms: p50 {lat['p50']:.3f}  p99 {lat['p99']:.3f}  "
              f"p99.9 {lat['p999']:.3f}  max {lat['max']:.3f}  ({lat['samples']:,} samples)")
    else:
        print("  latency: no timestamps in the stream (loadgen --timestamps adds them)")
    sev = s["severities"]
    if sev:
        print("  severities: " + "  ".join(f"{severity_label(int(k))} {v:,}"
                                             for k, v in sorted(sev.items(),
                                                                key=lambda kv: int(kv[0]))))
    seqs = f"seq {s['first_seq']}..{s['last_seq']}" if s["received"] else "no messages"
    print(f"  {seqs}, gaps {s['gaps']}; target {target}; ended: {END_TEXT.get(end, end)}")
