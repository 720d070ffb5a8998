"""An ExportLogsServiceRequest as logd records: one JSON object per OTLP log record.

Each record reads as "How a record is read" (logd/fields.py) says:
- `app_id`: the resource's `service.name` (when it is a string);
- `level`: `severityText`, else the name of `severityNumber`'s range (1-4 trace, 5-8 debug,
  9-12 info, 13-16 warn, 17-20 error, 21-24 fatal), else none (read as info);
- `message`: the body when it is a string, else the body's JSON text ("" without one);
- `timestamp`: `timeUnixNano`, else `observedTimeUnixNano`, in epoch seconds; else none (the
  arrival time);
- the rest as nested fields, kept in metadata: `resource` (its attributes), `scope` (`name`,
  `version`, `attributes`), `attributes`, `trace_id` and `span_id` (lower-case hex), `flags`,
  `severity_number`, `event_name`; each only when the request has it.
AnyValues become JSON values: strings, booleans, numbers, arrays, objects for kvlists, and
bytes as base64 text (as OTLP/JSON writes them).

The severity logd filters on is severityNumber's range when it has one, else the level's name
(logd's names, any case), else info.

A log record that cannot be valid (a trace id that is not 16 bytes, a span id not 8, a string
that is not UTF-8, in JSON a value of the wrong type) is rejected alone and counted; the
others are taken. The protobuf (`protobuf.py`) and the JSON (`otlp_json.py`) encodings of one
request give the same records.

This module holds what both decoders share: the result, the errors, the severity tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from logd.fields import INFO, severity_from_name

MAX_DEPTH = 20  # AnyValue nesting kept; deeper values reject their record (protobuf
# itself refuses messages nested 100 deep, about 30 levels of kvlists)

# severityNumber -> (level name, syslog severity); 0 (unspecified) and numbers outside 1-24
# name nothing.
_RANGES = (("trace", 7), ("debug", 7), ("info", 6), ("warn", 4), ("error", 3), ("fatal", 2))
NUMBER_LEVELS: dict[int, str] = {n: _RANGES[(n - 1) // 4][0] for n in range(1, 25)}
NUMBER_SEVERITIES: dict[int, int] = {n: _RANGES[(n - 1) // 4][1] for n in range(1, 25)}
# OTLP/JSON writes enums as integers; protobuf's JSON mapping also allows their names.
SEVERITY_ENUM_NAMES: dict[str, int] = {"SEVERITY_NUMBER_UNSPECIFIED": 0}
for _n in range(1, 25):
    _name, _sev = _RANGES[(_n - 1) // 4]
    _suffix = "" if (_n - 1) % 4 == 0 else str((_n - 1) % 4 + 1)
    SEVERITY_ENUM_NAMES[f"SEVERITY_NUMBER_{_name.upper()}{_suffix}"] = _n

STR = str
DICT = dict


@dataclass
class Mapped:
    """What a request became: the records taken, their severities, and what was rejected."""

    objs: list[dict[str, Any]] = field(default_factory=list)
    severities: bytearray = field(default_factory=bytearray)
    rejected: int = 0
    first_error: str = ""  # where and why the first rejected record was rejected

    def reject(self, where: str, why: str) -> None:
        if not self.rejected:
            self.first_error = f"{where}: {why}"
        self.rejected += 1


class BadOtlp(Exception):
    """The request cannot be read (not an ExportLogsServiceRequest)."""


class Invalid(Exception):
    """One log record cannot be valid."""


def unexpected(e: Exception) -> str:
    """Why a record was rejected when reading it raised what no check foresaw (a bug in
    logd rather than in the request): still rejected alone, the others are taken."""
    return f"cannot be read ({type(e).__name__}: {str(e)[:200]})"


def severity(text: str, number: int) -> int:
    sev = NUMBER_SEVERITIES.get(number)
    if sev is None:
        sev = severity_from_name(text) if text else None
        if sev is None:
            return INFO
    return sev


def message_of(body: Any) -> str:
    """The message of a body: itself when a string, else its JSON text; "" when empty."""
    if type(body) is STR:
        return body
    return "" if body is None else orjson.dumps(body).decode()
