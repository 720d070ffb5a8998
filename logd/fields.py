"""How a record maps to a database row: app_id, level, message, source, time, metadata.

app_id is the record's `app_id` (else `app`, else the listener's name); level the canonical
severity name; message the `message` field (or the whole payload when it is not a JSON
object); source the `source` field (else, or when null, the listener); the time its
`timestamp` (epoch seconds or RFC 3339; no zone means UTC) or else when it arrived; metadata
its `metadata` object with any other fields beyond these added, as JSON. Values that are not
strings are kept as their JSON text.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from itertools import repeat
from typing import Any

import orjson

from logd.record import Batch, severity_name

KNOWN_FIELDS = frozenset({"app_id", "app", "level", "message", "source", "timestamp"})
KNOWN_AND_METADATA = KNOWN_FIELDS | {"metadata"}
_STR = {str}


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


def app_of(obj: dict[str, Any], source: str) -> str:
    app = obj.get("app_id")
    if app is None:
        app = obj.get("app", source)
    return text(app)


def apps_of(objs: list[dict[str, Any]], source: str) -> list[str]:
    """app_of each record, column-wise when every record has a string app_id."""
    apps = list(map(dict.get, objs, repeat("app_id")))
    if None in apps or not set(map(type, apps)) <= _STR:
        return [app_of(o, source) for o in objs]
    return apps


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
        level = severity_name(sevs[i])
        if obj is None:
            rows.append((source, level, payloads[i].decode("utf-8", "replace"), source,
                         when(None, received), "{}"))
            continue
        src = obj.get("source")
        rows.append((app_of(obj, source), level, text(obj.get("message", "")),
                     text(source if src is None else src), when(obj.get("timestamp"), received),
                     metadata_json(obj).decode()))
    return rows
