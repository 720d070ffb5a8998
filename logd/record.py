"""Batch: the unit that flows from listeners through the router to outputs.

A batch is one socket read's worth of records from one listener: a list of raw payloads plus
what is known of them. Anything more (JSON fields, severities of lines) is computed lazily,
once per batch, only when a route, a path template or a JSON output format asks for it.

Payload forms. A batch's `form` names how its payloads become fields: "json" (the default: a
payload that is a JSON object lends its fields) or another form registered here, such as
"syslog". A form is a function `(batch) -> list[dict | None]`, one entry per record (None:
the record has no fields), called at most once per batch by `Batch.fields()`. Register one
with `register_form(name, fn)`, or by name in `_LAZY_FORMS` ("module:function", imported the
first time a batch of that form needs its fields, so a spool replayed by a process that
never imported the module still reads its batches). Slices, subsets and pieces keep the
form, and the disk spool stores it. A form's fields are read like JSON fields (logd.fields):
`app`, `level`, `message`, `timestamp`, `source`, and anything else as metadata.
"""

from __future__ import annotations

import importlib
import re
from bisect import bisect_right
from collections.abc import Callable
from itertools import accumulate, islice, pairwise
from typing import Any

import orjson

from logd.fields import INFO, severity_of
from logd.linescan import pick_lines

_SYSLOG_PRI = re.compile(rb"<(\d{1,3})>")
_LF = re.compile(b"\n")

JSON = "json"
MAX_PRI = 191  # facility 23 (local7), severity 7
FormDecoder = Callable[["Batch"], list[dict[str, Any] | None]]
_FORMS: dict[str, FormDecoder] = {}
# Forms known by name, imported when first needed.
_LAZY_FORMS = {"syslog": "logd.syslog.parse:batch_fields"}


def register_form(name: str, decode: FormDecoder) -> None:
    """Make `name` a payload form: `decode(batch)` gives each record's fields."""
    _FORMS[name] = decode


def form_decoder(name: str) -> FormDecoder:
    """The decoder of form `name`; KeyError when no such form is known."""
    found = _FORMS.get(name)
    if found is None:
        module, _, attr = _LAZY_FORMS[name].partition(":")
        found = _FORMS[name] = getattr(importlib.import_module(module), attr)
    return found


def known_form(name: str) -> bool:
    return name == JSON or name in _FORMS or name in _LAZY_FORMS


class Batch:
    """Records of one read from one listener.

    `payloads` are the raw record bytes without framing. `severities` holds one byte per record
    when known; otherwise it is derived from the frames (severity byte) or from the payloads
    (syslog PRI, JSON `level`) on first use. `raw`, when set, is the batch exactly as
    `b"\\n".join(payloads) + b"\\n"` (lines as received): outputs that write lines use it as is,
    and the payload list is only split from it when something asks for records.
    """

    __slots__ = ("_fields", "_frames", "_payloads", "count", "form", "nbytes", "raw",
                 "received", "severities", "source")

    def __init__(self, payloads: list[bytes] | None, severities: bytes | None, source: str,
                 received: float, nbytes: int, *, raw: bytes | None = None,
                 count: int | None = None, frames: tuple[bytes, int, int] | None = None,
                 form: str = JSON) -> None:
        self._payloads = payloads
        self.form = form
        self.severities = severities
        self.source = source
        self.received = received
        self.nbytes = nbytes
        self.raw = raw
        self._frames = frames  # (chunk, start, stop) the payloads were cut from
        if count is None:
            assert payloads is not None
            count = len(payloads)
        self.count = count
        self._fields: list[dict[str, Any] | None] | None = None

    @classmethod
    def from_lines(cls, block: bytes, count: int, source: str, received: float,
                   form: str = JSON) -> Batch:
        """A batch of `count` LF-terminated lines, kept as one block."""
        return cls(None, None, source, received, len(block) - count, raw=block, count=count,
                   form=form)

    @classmethod
    def from_objects(cls, objs: list[dict[str, Any]], severities: bytes, source: str,
                     received: float, nbytes: int, payloads: list[bytes] | None = None) -> Batch:
        """Records that arrived as JSON objects already parsed (HTTP): no second parse. Without
        `payloads`, they are serialized only if something asks (an output that encodes the
        fields itself never does), and `nbytes` estimates their size until then."""
        if payloads is not None:
            nbytes = sum(map(len, payloads))
        batch = cls(payloads, severities, source, received, nbytes, count=len(objs))
        batch._fields = objs  # type: ignore[assignment]
        return batch

    def compact(self) -> None:
        """Before the batch waits in a buffer: the payloads exist, parsed JSON objects (several
        times the payloads' memory, not counted by buffers) are dropped, and `nbytes` is the
        payloads' size. Fields are parsed again if asked for later. A lines block's split
        into payloads (a route's filter may have made it) is dropped too: the block holds them."""
        if self.raw is not None:
            self._payloads = None
        if self._fields is None:
            return
        if self._payloads is None and self.raw is None:
            self._payloads = self._serialized()
            self.nbytes = sum(map(len, self._payloads))
        self._fields = None

    def _serialized(self) -> list[bytes]:
        dumps = orjson.dumps
        # orjson's result keeps a ~4 KiB allocation behind even a short value; payloads wait
        # in buffers, so each is copied to a bytes object of its own size.
        return [bytes(memoryview(dumps(o))) for o in self._fields]  # type: ignore[union-attr]

    @property
    def payloads(self) -> list[bytes]:
        if self._payloads is None:
            if self.raw is None:
                self._payloads = self._serialized()
                self.nbytes = sum(map(len, self._payloads))  # no longer an estimate
                return self._payloads
            lines = self.raw.split(b"\n")
            lines.pop()
            self._payloads = lines
        return self._payloads

    def __len__(self) -> int:
        return self.count

    def payloads_for_a_look(self) -> list[bytes]:
        """The payloads, without keeping a split of a lines block on the batch (it would
        double what the batch holds while it waits, uncounted)."""
        if self._payloads is None and self.raw is not None:
            lines = self.raw.split(b"\n")
            lines.pop()
            return lines
        return self.payloads

    @property
    def held_bytes(self) -> int:
        """Payload bytes plus the read the payloads were cut from, while it is kept."""
        return self.nbytes + (len(self._frames[0]) if self._frames is not None else 0)

    def fields(self) -> list[dict[str, Any] | None]:
        """Each record's fields: its payload's JSON object, or None where the payload is not
        one; in a batch of another form, what that form's decoder reads. Parsed once."""
        if self._fields is None and self.form != JSON:
            self._fields = form_decoder(self.form)(self)
        if self._fields is None:
            out: list[dict[str, Any] | None] = []
            loads = orjson.loads
            for p in self.payloads:
                obj = None
                if p[:1] == b"{":
                    try:
                        obj = loads(p)
                    except orjson.JSONDecodeError:
                        obj = None
                    if not isinstance(obj, dict):
                        obj = None
                out.append(obj)
            self._fields = out
        return self._fields

    def severity_bytes(self) -> bytes:
        """One severity byte per record; derived from payloads when the wire had none."""
        if self.severities is None and self._frames is not None:
            self.severities = frame_severities(*self._frames)
        if self.severities is None:
            sevs = bytearray()
            fields = None
            for i, p in enumerate(self.payloads):
                sev = INFO
                first = p[:1]
                if first == b"<":
                    m = _SYSLOG_PRI.match(p)
                    if m and int(m.group(1)) <= MAX_PRI:
                        sev = int(m.group(1)) & 7
                elif first == b"{":
                    if fields is None:
                        fields = self.fields()
                    obj = fields[i]
                    if obj is not None:
                        found = severity_of(obj)
                        if found is not None:
                            sev = found
                sevs.append(sev)
            self.severities = bytes(sevs)
        return self.severities

    def slice(self, start: int, stop: int) -> Batch:
        """Records start..stop (indices as for a list slice) as a batch of their own, in the
        forms this one has: the lines block cut (no split into payloads), payloads, parsed
        fields (not serialized), severities, and the frames they are read from if not yet
        read."""
        start, stop, _ = slice(start, stop).indices(self.count)
        stop = max(start, stop)
        if start == 0 and stop == self.count:
            return self
        lo = hi = 0
        if self.raw is not None:
            lo, hi = self._line_offset(start), self._line_offset(stop)
        sizes = None
        if self._payloads is not None:
            sizes = [0, *accumulate(map(len, self._payloads[start:stop]))]
        return self._cut(start, stop, lo, hi, 0, sizes[-1] if sizes is not None else None,
                         self._frame_offset(start, stop, sizes) if sizes else None)

    def pieces(self, target: int) -> list[Batch]:
        """The batch cut into slices of about `target` payload bytes each (a record larger
        than that is a slice of its own). Python work is per slice, not per record; one
        C-level pass over the data is needed where the form hides record boundaries: the
        payload lengths of a payload list, the line count of each slice of a lines block.
        Parsed objects alone are cut by their share of the estimated size, with no pass."""
        n = self.count
        if self.nbytes <= target or n <= 1:
            return [self]
        if self.raw is not None:
            raw = self.raw
            end = len(raw)
            cuts = [(0, 0)]
            pos = rec = 0
            while pos < end:
                nl = raw.rfind(b"\n", pos, pos + target)
                if nl < 0:  # one line longer than target
                    nl = raw.find(b"\n", pos + target)
                nxt = end if nl < 0 else nl + 1
                # The one per-byte pass the form needs: lines are counted, not split.
                rec = n if nxt == end else rec + raw.count(b"\n", pos, nxt)
                cuts.append((rec, nxt))
                pos = nxt
            return [self._cut(a, b, lo, hi, 0, None, None)
                    for (a, lo), (b, hi) in pairwise(cuts)]
        if self._payloads is not None:
            ends = list(accumulate(map(len, self._payloads)))
            out = []
            start = 0
            while start < n:
                before = ends[start - 1] if start else 0
                stop = max(start + 1, bisect_right(ends, before + target, start))
                size = ends[stop - 1] - before
                frames = None
                if self._frames is not None and self.severities is None:
                    chunk, first, _ = self._frames
                    frames = (chunk, first + 5 * start + before,
                              first + 5 * stop + ends[stop - 1])
                out.append(self._cut(start, stop, 0, 0, 0, size, frames))
                start = stop
            return out
        # Parsed objects only (HTTP): their size is the request's, spread evenly.
        step = max(1, target * n // max(1, self.nbytes))
        return [self._cut(i, min(n, i + step), 0, 0, self.nbytes * (min(n, i + step) - i) // n,
                          None, None) for i in range(0, n, step)]

    def _cut(self, start: int, stop: int, lo: int, hi: int, estimate: int,
             size: int | None, frames: tuple[bytes, int, int] | None) -> Batch:
        payloads = self._payloads[start:stop] if self._payloads is not None else None
        raw = self.raw[lo:hi] if self.raw is not None else None
        if raw is not None:
            nbytes = len(raw) - (stop - start)
        elif size is not None:
            nbytes = size
        else:
            nbytes = estimate or self.nbytes * (stop - start) // max(1, self.count)
        sevs = self.severities[start:stop] if self.severities is not None else None
        part = Batch(payloads, sevs, self.source, self.received, nbytes, raw=raw,
                     count=stop - start, frames=frames if sevs is None else None,
                     form=self.form)
        if self._fields is not None:
            part._fields = self._fields[start:stop]
        return part

    def _line_offset(self, k: int) -> int:
        """Where line k starts in the lines block."""
        if k <= 0:
            return 0
        if k >= self.count:
            return len(self.raw)  # type: ignore[arg-type]
        m = next(islice(_LF.finditer(self.raw), k - 1, k))  # type: ignore[arg-type]
        return m.end()

    def _frame_offset(self, start: int, stop: int, sizes: list[int]
                      ) -> tuple[bytes, int, int] | None:
        """The frames of records start..stop, while their severities are still unread;
        `sizes` are the cumulative payload lengths from `start`."""
        if self._frames is None or self.severities is not None:
            return None
        chunk, first, _ = self._frames
        assert self._payloads is not None  # a batch with frames has its payloads
        before = sum(map(len, self._payloads[:start]))
        lo = first + 5 * start + before
        return chunk, lo, lo + 5 * (stop - start) + sizes[-1]

    def subset(self, indices: list[int]) -> Batch:
        """A batch of the records at `indices` (for routes that pick some records)."""
        if self.raw is not None:
            # A block of lines: the part is one too (the file output writes it as is).
            if self._payloads is None:
                block = pick_lines(self.raw, indices)
            else:
                block = b"\n".join(map(self._payloads.__getitem__, indices)) + b"\n"
            sub = Batch.from_lines(block, len(indices), self.source, self.received, self.form)
            if self.severities is not None:
                sub.severities = bytes(map(self.severities.__getitem__, indices))
            if self._fields is not None:
                sub._fields = list(map(self._fields.__getitem__, indices))
            return sub
        payloads = self.payloads
        picked = list(map(payloads.__getitem__, indices))
        sevs = self.severities if self._frames is None else self.severity_bytes()
        sub = Batch(picked, None if sevs is None else bytes(sevs[i] for i in indices),
                    self.source, self.received, sum(map(len, picked)), form=self.form)
        if self._fields is not None:
            f = self._fields
            sub._fields = [f[i] for i in indices]
        return sub


def frame_severities(chunk: bytes, start: int, stop: int) -> bytes:
    """The severity byte of each frame in chunk[start:stop] (already validated frames)."""
    out = bytearray()
    off = start
    from_bytes = int.from_bytes
    while off < stop:
        out.append(chunk[off + 4])
        off += 4 + from_bytes(chunk[off:off + 4], "big")
    return bytes(out)
