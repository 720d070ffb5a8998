"""What `logctl top` shows, computed from two consecutive samples of logd's stats.

Pure: no I/O and no clock. Every figure is read by the key that means it in `logd.stats`,
never by a component's type, so a listener or output type added later shows up as it is:
- records: `written` for a component that delivers records (an output, an analyzer pool),
  else `records` (what a listener took in), else `accepted`;
- bytes: `bytes`; queue: `queued_bytes` (or `queued_records`) against `queue_limit_bytes`;
- drops: `dropped`; errors: `errors` (a count, or counts by reason); retries: `retries`;
- lag: `backlog` by unit, else any count whose key names a lag (`lag`, `lag_bytes`, ...);
- problem: `problem`, else "not connected" where `connected` is false.
A figure a component does not report is None (shown as "-"), not 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Sample:
    """One `stats` reply and when it arrived (a monotonic clock, seconds)."""

    at: float
    stats: Mapping[str, Any]


@dataclass(frozen=True)
class Lag:
    value: int
    unit: str  # "records" or "bytes"


@dataclass(frozen=True)
class Row:
    """One listener or output."""

    name: str
    type: str
    records: int | None             # counter: taken in, or delivered
    records_per_s: float | None     # None: no earlier sample to compare with
    bytes_per_s: float | None
    queued_bytes: int | None
    queued_records: int | None
    fill_pct: float | None          # queued_bytes of queue_limit_bytes
    dropped: int | None
    errors: int | None
    retries: int | None
    lag: Lag | None
    delivers: bool                  # reports `written`: its records count out, not in
    problem: str | None = None      # what keeps it from working, in its own words


@dataclass(frozen=True)
class View:
    instance: str
    version: str
    pid: int | None
    uptime_s: float | None
    cpu_pct: float | None
    rss_bytes: int | None
    in_per_s: float | None           # records the listeners took in
    out_per_s: float | None          # records outputs and analyzer pools delivered
    listeners: list[Row]
    outputs: list[Row]


def compute(prev: Sample | None, cur: Sample) -> View:
    """The view of `cur`, with rates from `prev` (None: the first sample, no rates).

    Rates are None where they cannot be honest: no earlier sample, no time between the two,
    logd restarted in between (another pid), or a counter that went down (a reload replaced
    the component)."""
    stats = cur.stats
    earlier = _comparable(prev, cur)
    dt = cur.at - earlier.at if earlier is not None else 0.0
    before = earlier.stats if earlier is not None and dt > 0 else None

    def rows(section: str) -> list[Row]:
        old = before.get(section, {}) if before is not None else {}
        return [_row(name, s, old.get(name), dt)
                for name, s in stats.get(section, {}).items()]

    listeners, outputs = rows("listeners"), rows("outputs")
    process = stats.get("process", {})
    daemon = stats.get("daemon", {})
    cpu_pct = None
    if before is not None:
        used = _delta(_cpu_s(process), _cpu_s(before.get("process", {})))
        cpu_pct = None if used is None else 100.0 * used / dt
    return View(
        instance=str(daemon.get("instance") or ""),
        version=str(daemon.get("version") or ""),
        pid=_int(process.get("pid")),
        uptime_s=_float(process.get("uptime_s")),
        cpu_pct=cpu_pct,
        rss_bytes=_int(process.get("rss_bytes")),
        in_per_s=_total(before, [r for r in listeners if not r.delivers]),
        out_per_s=_total(before, [r for r in [*listeners, *outputs] if r.delivers]),
        listeners=listeners,
        outputs=outputs,
    )


def rate(before: int | float | None, after: int | float | None, dt: float) -> float | None:
    """Per second from two readings of a counter `dt` seconds apart; None when there is
    no honest answer (a reading missing, no time between, the counter went down)."""
    change = _delta(after, before)
    if change is None or dt <= 0:
        return None
    return change / dt


def _row(name: str, s: Mapping[str, Any], old: Mapping[str, Any] | None, dt: float) -> Row:
    key = _records_key(s)
    old = old or {}
    queued_bytes = _int(s.get("queued_bytes"))
    limit = _int(s.get("queue_limit_bytes"))
    return Row(
        name=name,
        type=str(s.get("type", "-")),
        records=_int(s.get(key)) if key else None,
        records_per_s=rate(_int(old.get(key)), _int(s.get(key)), dt) if key else None,
        bytes_per_s=rate(_int(old.get("bytes")), _int(s.get("bytes")), dt),
        queued_bytes=queued_bytes,
        queued_records=_int(s.get("queued_records")),
        fill_pct=100.0 * queued_bytes / limit if queued_bytes is not None and limit else None,
        dropped=_int(s.get("dropped")),
        errors=_count(s.get("errors")),
        retries=_int(s.get("retries")),
        lag=lag_of(s),
        delivers="written" in s,
        problem=problem_of(s),
    )


def _records_key(s: Mapping[str, Any]) -> str | None:
    for key in ("written", "records", "accepted"):
        if key in s:
            return key
    return None


def lag_of(s: Mapping[str, Any]) -> Lag | None:
    """The lag a component reports: its `backlog` (bytes before records: the finer unit),
    else a count whose key has the word lag in it (`lag`, `lag_bytes`, `byte_lag`)."""
    backlog = s.get("backlog")
    if isinstance(backlog, Mapping):
        for unit in ("bytes", "records"):
            value = _int(backlog.get(unit))
            if value is not None:
                return Lag(value, unit)
    for key, value in s.items():
        words = key.lower().split("_")
        if "lag" in words and _int(value) is not None:
            unit = "bytes" if any(w.startswith("byte") for w in words) else "records"
            return Lag(int(value), unit)
    return None


def problem_of(s: Mapping[str, Any]) -> str | None:
    problem = s.get("problem")
    if isinstance(problem, str) and problem:
        return problem
    return "not connected" if s.get("connected") is False else None


def _comparable(prev: Sample | None, cur: Sample) -> Sample | None:
    """`prev`, unless it came from another logd process (a restart resets every counter)."""
    if prev is None:
        return None
    pid = prev.stats.get("process", {}).get("pid")
    return prev if pid == cur.stats.get("process", {}).get("pid") else None


def _total(before: Mapping[str, Any] | None, rows: list[Row]) -> float | None:
    """The sum of the rows' rates; a component too new to have one counts from the next
    sample on."""
    if before is None:
        return None
    return sum(r.records_per_s for r in rows if r.records_per_s is not None)


def _cpu_s(process: Mapping[str, Any]) -> float | None:
    user, system = _float(process.get("cpu_user_s")), _float(process.get("cpu_system_s"))
    return None if user is None or system is None else user + system


def _delta(after: int | float | None, before: int | float | None) -> float | None:
    if after is None or before is None or after < before:
        return None
    return float(after - before)


def _count(value: Any) -> int | None:
    """A count, or the sum of counts by reason."""
    if isinstance(value, Mapping):
        return sum(v for v in value.values() if _int(v) is not None)
    return _int(value)


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value)


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)
