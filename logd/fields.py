"""How a record is read: its app, level, severity, time, source, message and metadata.

Every listener, filter, path template and output reads a record through this module, so a
record means the same thing everywhere (a route that matches `app == "web"` writes web.log
and the database row says app_id = web).

A record whose payload is a JSON object lends its fields:
- app: `app_id`, else `app`, else the listener's name;
- level: `level`, else `severity`, kept as sent ("fatal", "WARNING", 3); a record without
  one has the canonical name of its severity ("info" unless the wire said otherwise);
- severity (0 emerg .. 7 debug, for filters and comparisons only): a frame's severity byte;
  else derived from the level (trace, debug, info, notice, warn/warning, error/err,
  crit/critical/fatal, alert, emerg/panic, any case, or 0-7); else a syslog `<PRI>`; else info;
- time: `timestamp` (epoch seconds or RFC 3339; no zone means UTC), else when it arrived;
- source: `source`, else the listener's name;
- message: `message` (or the whole payload when it is not a JSON object);
- metadata: the `metadata` object with any fields beyond these added, as JSON.
Values that are not strings are kept as their JSON text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from itertools import repeat
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from logd.record import Batch

# syslog numbering: lower is more severe.
SEVERITY_NAMES = ("emerg", "alert", "crit", "error", "warn", "notice", "info", "debug")
INFO = 6

_LEVELS = {
    "emerg": 0, "emergency": 0, "panic": 0,
    "alert": 1,
    "crit": 2, "critical": 2, "fatal": 2,
    "err": 3, "error": 3,
    "warn": 4, "warning": 4,
    "notice": 5,
    "info": 6, "information": 6, "informational": 6,
    "debug": 7, "trace": 7,
}

LEVEL_NAMES = tuple(_LEVELS)  # every name a level may have, lower case

# Levels as records usually write them (any of three cases, a number, none): a batch's
# severities are looked up column-wise in C; anything else is read record by record.
COMMON_LEVELS: dict[Any, int] = {None: INFO}
for _name, _sev in _LEVELS.items():
    for _variant in (_name, _name.upper(), _name.capitalize()):
        COMMON_LEVELS[_variant] = _sev
for _n in range(8):
    COMMON_LEVELS[_n] = _n
    COMMON_LEVELS[str(_n)] = _n
LEVEL_TYPES = {str, int, type(None)}  # not bool, not float: 1.0 or true is no level

KNOWN_FIELDS = frozenset({"app_id", "app", "level", "message", "source", "timestamp"})
KNOWN_AND_METADATA = KNOWN_FIELDS | {"metadata"}
_STR = {str}


def severity_from_name(value: Any) -> int | None:
    """Syslog severity from a level name (any case) or number 0-7; None if not one."""
    if isinstance(value, str):
        found = _LEVELS.get(value.lower())
        if found is not None:
            return found
        # isdigit() is true of digits of any script ("²", "٣"), which int() refuses or
        # reads: only ASCII digits are a number here.
        if value.isascii() and value.isdigit() and int(value) <= 7:
            return int(value)
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 7:
        return value
    return None


def severity_name(sev: int) -> str:
    return SEVERITY_NAMES[sev] if 0 <= sev < 8 else f"level{sev}"


def level_value(obj: dict[str, Any]) -> Any:
    """The record's level as sent: `level`, else `severity`; None when it has neither."""
    level = obj.get("level")
    return obj.get("severity") if level is None else level


def severity_of(obj: dict[str, Any]) -> int | None:
    """The severity a JSON record's level names; None when it names none."""
    return severity_from_name(level_value(obj))


def severities_of(objs: list[dict[str, Any]]) -> bytes:
    """Each JSON record's severity (its level, else its severity; info when neither names
    one), column-wise when every record's level is a common one."""
    levels = list(map(dict.get, objs, repeat("level")))
    if set(map(type, levels)) <= LEVEL_TYPES and not (
            None in levels and any(map(dict.__contains__, objs, repeat("severity")))):
        try:
            return bytes(map(COMMON_LEVELS.__getitem__, levels))
        except KeyError:
            pass
    return bytes(INFO if (s := severity_of(o)) is None else s for o in objs)


def level_text(obj: dict[str, Any] | None, sev: int) -> str:
    """The level to store: as sent when the record has one, else its severity's name."""
    if obj is not None:
        level = level_value(obj)
        if level is not None:
            return text(level)
    return severity_name(sev)


def level_texts(fields: list[dict[str, Any] | None], sevs: bytes) -> list[str]:
    """level_text of each record; column-wise when every record sent a string `level`."""
    if None not in fields:
        levels: list[Any] = list(map(dict.get, fields, repeat("level")))  # type: ignore[arg-type]
        if set(map(type, levels)) <= _STR:
            return levels
    return [level_text(o, s) for o, s in zip(fields, sevs, strict=True)]


def record_time(ts: Any) -> float | None:
    """Epoch seconds of a `timestamp` value, or None when it is not a time."""
    if isinstance(ts, (int, float)) and not isinstance(ts, bool):
        return float(ts) if ts == ts and abs(ts) != float("inf") else None
    if isinstance(ts, str):
        try:
            d = datetime.fromisoformat(ts)
        except ValueError:
            return None
        if d.tzinfo is None:
            d = d.replace(tzinfo=UTC)
        return d.timestamp()
    return None


def metadata_json(obj: dict[str, Any]) -> bytes:
    """The metadata of a record: its `metadata` object with any fields beyond the known ones
    added (a `metadata` that is not an object is kept under that key)."""
    rest = {k: v for k, v in obj.items() if k not in KNOWN_AND_METADATA}
    if "metadata" in obj:
        md = obj["metadata"]
        if isinstance(md, dict):
            if rest:
                md = {**md, **rest}
            return orjson.dumps(md)
        rest["metadata"] = md
    return orjson.dumps(rest) if rest else b"{}"


def text(v: Any) -> str:
    return v if isinstance(v, str) else orjson.dumps(v).decode()


def texts(values: list[Any]) -> list[str]:
    """text() of each value; the list itself when all are strings (the usual case)."""
    if set(map(type, values)) <= _STR:
        return values
    return list(map(text, values))


def app_of(obj: dict[str, Any] | None, source: str) -> str:
    """The record's app: `app_id`, else `app`, else the listener's name."""
    if obj is None:
        return source
    app = obj.get("app_id")
    if app is None:
        app = obj.get("app")
        if app is None:
            return source
    return text(app)


def apps_of(objs: Sequence[dict[str, Any] | None], source: str) -> list[str]:
    """app_of each record, column-wise when every record has a string app_id."""
    if None not in objs:
        apps: list[Any] = list(map(dict.get, objs, repeat("app_id")))  # type: ignore[arg-type]
        if None not in apps and set(map(type, apps)) <= _STR:
            return apps
    return [app_of(o, source) for o in objs]


def source_of(obj: dict[str, Any] | None, source: str) -> str:
    """The record's source: its `source` field, else the listener's name."""
    if obj is None:
        return source
    src = obj.get("source")
    return source if src is None else text(src)


def message_of(obj: dict[str, Any] | None, payload: bytes) -> str:
    """The record's message: `message` of a JSON object, else the whole payload."""
    if obj is None:
        return payload.decode("utf-8", "replace")
    return text(obj.get("message", ""))


def time_of(obj: dict[str, Any] | None, received: float) -> float:
    """The record's time: its `timestamp`, else when it arrived."""
    if obj is not None:
        t = record_time(obj.get("timestamp"))
        if t is not None:
            return t
    return received


def utc_datetime(t: float, received: float) -> datetime:
    """The aware UTC datetime of epoch seconds; the arrival time where no datetime can hold
    it (milliseconds taken for seconds, say)."""
    try:
        return datetime.fromtimestamp(t, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return datetime.fromtimestamp(received, tz=UTC)


def record_rows(batch: Batch, when: Callable[[Any, float], Any]
                ) -> list[tuple[str, str, str, str, Any, str]]:
    """The batch as rows (app_id, level, message, source, when(timestamp, received),
    metadata), one record at a time."""
    fields = batch.fields()
    sevs = batch.severity_bytes()
    payloads = batch.payloads
    source = batch.source
    received = batch.received
    rows = []
    for i, obj in enumerate(fields):
        if obj is None:
            rows.append((source, severity_name(sevs[i]),
                         payloads[i].decode("utf-8", "replace"), source,
                         when(None, received), "{}"))
            continue
        rows.append((app_of(obj, source), level_text(obj, sevs[i]), message_of(obj, b""),
                     source_of(obj, source), when(obj.get("timestamp"), received),
                     metadata_json(obj).decode()))
    return rows
