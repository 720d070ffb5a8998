"""Syslog messages -> fields: RFC 5424 and RFC 3164 (BSD), told apart per message.

Sans-io and pure: a message (bytes, without framing) becomes a dict of the fields logd reads
(logd.fields): `timestamp`, `host`, `app`, `procid`, `msgid`, `facility`, `level`, `sd`
(structured data: `{SD-ID: {PARAM: value}}`), `message`. Nil values (`-`) and parts a
message lacks are absent. `batch_fields` is the "syslog" payload form of logd.record: it
runs once per batch, only when something asks for fields.

How a message is read:
- `<PRI>` (0-191) gives the facility and the level (the severity's name). A message without
  a valid PRI does not parse: its fields are the whole text as `message` (the listener
  counts it as `unparsed`).
- `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD [MSG]` is RFC 5424; a UTF-8 BOM that
  starts MSG is dropped.
- `<PRI>Mmm dd hh:mm:ss HOSTNAME TAG[PID]: MSG` is RFC 3164; the timestamp has no year and
  no zone: it is read in logd's local time zone, in the year that puts it nearest to when
  the message arrived, and kept as RFC 3339. A TAG without HOSTNAME before it is read too
  (`<13>Oct 11 22:14:15 su: ...`), and so is an RFC 3339 time in place of the BSD one
  (rsyslog's RSYSLOG_ForwardFormat).
- Anything else after a valid PRI is the message, as RFC 3164 says a relay must read it.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from logd.record import Batch

FACILITIES = ("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp",
              "cron", "authpriv", "ftp", "ntp", "security", "console", "solaris-cron",
              "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7")
SEVERITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
MAX_PRI = 8 * len(FACILITIES) - 1
BOM = "\ufeff"

# Messages are decoded once (invalid UTF-8 as U+FFFD) and read as text; ASCII classes, as
# the RFCs' octets are.
A = re.ASCII
# PRI: 1-3 digits, at most 191 (checked after the match).
PRI = re.compile(r"<(\d{1,3})>", A)
_TIME_5424 = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:\d\d)"
# PRI, version 1 and the header, up to where the structured data starts.
_HEADER_5424 = re.compile(r"<(\d{1,3})>1 (" + _TIME_5424 + r"|-) (\S{1,255}) (\S{1,48}) "
                          r"(\S{1,128}) (\S{1,32}) ", A)
_SD_ELEMENT = re.compile(r'\[([^\s=\]"]{1,32})((?: [^\s=\]"]{1,32}="(?:[^"\\]|\\.)*")*)\]',
                         re.DOTALL | A)
_SD_PARAM = re.compile(r'([^\s=\]"]{1,32})="((?:[^"\\]|\\.)*)"', re.DOTALL | A)
_SD_ESCAPE = re.compile(r'\\(["\\\]])')
_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
_HEADER_3164 = re.compile(r"([A-Z][a-z]{2}) ([ \d]\d) (\d\d):(\d\d):(\d\d) ", A)
# A TAG: up to 48 characters of a program name, an optional [PID], then ":".
_TAG = re.compile(r"([^\s:\[\]]{1,48})(?:\[([^\]\s]{1,128})\])?:(?: |$)", A)
_HOST = re.compile(r"(\S{1,255}) ", A)
# rsyslog's forwarding format: the RFC 3164 layout with an RFC 3339 time.
_HEADER_3339 = re.compile(r"(" + _TIME_5424 + r") ", A)
_NIL = "-"


def batch_fields(batch: Batch) -> list[dict[str, Any] | None]:
    """The "syslog" form: each record's fields (see the module's doc)."""
    years = _YearGuess(batch.received)
    return [parse(p, years) for p in batch.payloads_for_a_look()]


def parse(msg: bytes, years: _YearGuess | None = None) -> dict[str, Any]:
    """One message's fields; never raises, always has `message`."""
    text = msg.decode("utf-8", "replace")
    h = _HEADER_5424.match(text)
    if h is not None:
        pri_s, ts, host, app, procid, msgid = h.groups()
        pri = int(pri_s)
        if pri <= MAX_PRI:
            pos = h.end()
            fields: dict[str, Any] = {"facility": FACILITIES[pri >> 3],
                                      "level": SEVERITIES[pri & 7]}
            rest: int | None
            if text.startswith("-", pos):
                rest = pos + 1
                if rest != len(text) and text[pos + 1] != " ":
                    rest = None
            else:
                rest = _structured_data(text, pos, fields)
            if rest is not None:
                if ts != _NIL:
                    fields["timestamp"] = ts
                if host != _NIL:
                    fields["host"] = host
                if app != _NIL:
                    fields["app"] = app
                if procid != _NIL:
                    fields["procid"] = procid
                if msgid != _NIL:
                    fields["msgid"] = msgid
                body = text[rest + 1:]
                fields["message"] = body[1:] if body.startswith(BOM) else body
                return fields
    return _other(text, years)


def _other(text: str, years: _YearGuess | None) -> dict[str, Any]:
    """A message that is not whole RFC 5424: RFC 3164, or a PRI and a message, or neither."""
    m = PRI.match(text)
    pri = int(m.group(1)) if m else MAX_PRI + 1
    if pri > MAX_PRI:
        return {"message": text}
    assert m is not None
    fields: dict[str, Any] = {"facility": FACILITIES[pri >> 3], "level": SEVERITIES[pri & 7]}
    pos = m.end()
    t = _HEADER_3164.match(text, pos)
    stamp = None
    if t is not None and t.group(1) in _MONTHS:
        stamp = (years or _YearGuess(time.time())).rfc3339(t.groups())
    elif text[pos:pos + 1].isdigit():
        t = _HEADER_3339.match(text, pos)
        if t is not None:
            stamp = t.group(1)
    if stamp is not None and t is not None:
        fields["timestamp"] = stamp
        pos = t.end()
        tag = _TAG.match(text, pos)
        if tag is None:
            host = _HOST.match(text, pos)
            if host is not None:
                fields["host"] = host.group(1)
                pos = host.end()
                tag = _TAG.match(text, pos)
        if tag is not None:
            fields["app"] = tag.group(1)
            if tag.group(2) is not None:
                fields["procid"] = tag.group(2)
            pos = tag.end()
    fields["message"] = text[pos:]
    return fields


def _structured_data(text: str, pos: int, fields: dict[str, Any]) -> int | None:
    """Read SD elements at `pos` into fields["sd"]; where the rest starts, or None if the
    SD is broken."""
    sd: dict[str, dict[str, str]] = {}
    while True:
        e = _SD_ELEMENT.match(text, pos)
        if e is None:
            break
        params = sd.setdefault(e.group(1), {})
        for name, value in _SD_PARAM.findall(e.group(2)):
            params[name] = _SD_ESCAPE.sub(r"\1", value) if "\\" in value else value
        pos = e.end()
    if not sd or (pos < len(text) and text[pos] != " "):
        return None
    fields["sd"] = sd
    return pos


class _YearGuess:
    """RFC 3164 times (no year, no zone) as RFC 3339 in the local zone, the year nearest to
    `received`; remembered per distinct stamp, since a batch holds few seconds."""

    __slots__ = ("_seen", "now")

    def __init__(self, received: float) -> None:
        self.now = datetime.fromtimestamp(received).astimezone()
        self._seen: dict[tuple[str, ...], str | None] = {}

    def rfc3339(self, parts: tuple[str, ...]) -> str | None:
        found = self._seen.get(parts, "")
        if found != "":
            return found
        mon, day, hh, mm, ss = parts
        stamp: str | None = None
        try:
            for year in (self.now.year, self.now.year - 1, self.now.year + 1):
                d = datetime(year, _MONTHS[mon], int(day), int(hh), int(mm), int(ss))
                local = d.astimezone()  # naive: read as local time
                if abs(local - self.now) <= timedelta(days=183):
                    stamp = local.isoformat()
                    break
            else:
                stamp = datetime(self.now.year, _MONTHS[mon], int(day), int(hh), int(mm),
                                 int(ss)).astimezone().isoformat()
        except ValueError:  # Feb 30, 25:00:00 ...
            stamp = None
        if len(self._seen) < 4096:
            self._seen[parts] = stamp
        return stamp
