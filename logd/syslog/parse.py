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
BOM = b"\xef\xbb\xbf"

# PRI: 1-3 digits, at most 191 (checked after the match).
PRI = re.compile(rb"<(\d{1,3})>")
_TIME_5424 = (rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:\d\d)")
# After the PRI: version 1, the header, and where the structured data starts.
_HEADER_5424 = re.compile(rb"1 (" + _TIME_5424 + rb"|-) (\S{1,255}) (\S{1,48}) (\S{1,128}) "
                          rb"(\S{1,32}) ")
_SD_ELEMENT = re.compile(rb'\[([^\s=\]"]{1,32})((?: [^\s=\]"]{1,32}="(?:[^"\\]|\\.)*")*)\]',
                         re.DOTALL)
_SD_PARAM = re.compile(rb'([^\s=\]"]{1,32})="((?:[^"\\]|\\.)*)"', re.DOTALL)
_SD_ESCAPE = re.compile(r'\\(["\\\]])')
_MONTHS = {m: i for i, m in enumerate(
    (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
     b"Dec"), 1)}
_HEADER_3164 = re.compile(rb"([A-Z][a-z]{2}) ([ \d]\d) (\d\d):(\d\d):(\d\d) ")
# A TAG: up to 48 characters of a program name, an optional [PID], then ":".
_TAG = re.compile(rb"([^\s:\[\]]{1,48})(?:\[([^\]\s]{1,128})\])?:(?: |$)")
_HOST = re.compile(rb"(\S{1,255}) ")
# rsyslog's forwarding format: the RFC 3164 layout with an RFC 3339 time.
_HEADER_3339 = re.compile(rb"(" + _TIME_5424 + rb") ")


def batch_fields(batch: Batch) -> list[dict[str, Any] | None]:
    """The "syslog" form: each record's fields (see the module's doc)."""
    years = _YearGuess(batch.received)
    return [parse(p, years) for p in batch.payloads_for_a_look()]


def parse(msg: bytes, years: _YearGuess | None = None) -> dict[str, Any]:
    """One message's fields; never raises, always has `message`."""
    m = PRI.match(msg)
    pri = int(m.group(1)) if m else MAX_PRI + 1
    if pri > MAX_PRI:
        return {"message": _text(msg)}
    assert m is not None
    fields: dict[str, Any] = {"facility": FACILITIES[pri >> 3], "level": SEVERITIES[pri & 7]}
    pos = m.end()
    if msg.startswith(b"1 ", pos):
        h = _HEADER_5424.match(msg, pos)
        if h is not None:
            rest = _structured_data(msg, h.end(), fields)
            if rest is not None:
                ts, host, app, procid, msgid = h.groups()
                if ts != b"-":
                    fields["timestamp"] = ts.decode()
                if host != b"-":
                    fields["host"] = _text(host)
                if app != b"-":
                    fields["app"] = _text(app)
                if procid != b"-":
                    fields["procid"] = _text(procid)
                if msgid != b"-":
                    fields["msgid"] = _text(msgid)
                if rest < len(msg):
                    body = msg[rest + 1:] if msg[rest:rest + 1] == b" " else msg[rest:]
                    fields["message"] = _text(body[3:] if body.startswith(BOM) else body)
                else:
                    fields["message"] = ""
                return fields
            fields.pop("sd", None)
    t = _HEADER_3164.match(msg, pos)
    stamp = None
    if t is not None and t.group(1) in _MONTHS:
        stamp = (years or _YearGuess(time.time())).rfc3339(t.groups())
    elif msg[pos:pos + 1].isdigit():
        t = _HEADER_3339.match(msg, pos)
        if t is not None:
            stamp = t.group(1).decode()
    if stamp is not None and t is not None:
        fields["timestamp"] = stamp
        pos = t.end()
        tag = _TAG.match(msg, pos)
        if tag is None:
            host = _HOST.match(msg, pos)
            if host is not None:
                fields["host"] = _text(host.group(1))
                pos = host.end()
                tag = _TAG.match(msg, pos)
        if tag is not None:
            fields["app"] = _text(tag.group(1))
            if tag.group(2) is not None:
                fields["procid"] = _text(tag.group(2))
            pos = tag.end()
    fields["message"] = _text(msg[pos:])
    return fields


def _structured_data(msg: bytes, pos: int, fields: dict[str, Any]) -> int | None:
    """Read SD at `pos` into fields["sd"]; where the rest starts, or None if SD is broken."""
    if msg.startswith(b"-", pos):
        end = pos + 1
        return end if end == len(msg) or msg[end:end + 1] == b" " else None
    sd: dict[str, dict[str, str]] = {}
    while True:
        e = _SD_ELEMENT.match(msg, pos)
        if e is None:
            break
        params = sd.setdefault(_text(e.group(1)), {})
        for name, value in _SD_PARAM.findall(e.group(2)):
            text = _text(value)
            params[_text(name)] = _SD_ESCAPE.sub(r"\1", text) if "\\" in text else text
        pos = e.end()
    if not sd or (pos < len(msg) and msg[pos:pos + 1] != b" "):
        return None
    fields["sd"] = sd
    return pos


def _text(b: bytes) -> str:
    return b.decode("utf-8", "replace")


class _YearGuess:
    """RFC 3164 times (no year, no zone) as RFC 3339 in the local zone, the year nearest to
    `received`; remembered per distinct stamp, since a batch holds few seconds."""

    __slots__ = ("_seen", "now")

    def __init__(self, received: float) -> None:
        self.now = datetime.fromtimestamp(received).astimezone()
        self._seen: dict[tuple[bytes, ...], str | None] = {}

    def rfc3339(self, parts: tuple[bytes, ...]) -> str | None:
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
