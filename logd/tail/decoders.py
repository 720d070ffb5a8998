"""A read of a file -> records, and how much of the read they used.

Every read starts at a record boundary (the followed file's offset) and holds up to
`window` bytes. A decoder turns it into one batch and says how many bytes the batch used
(`consumed`): the rest (an unterminated last line, a multiline group or a partial container
line that may go on) is read again with what follows, next time. So an offset is always at
a record boundary, and a checkpoint never splits a record.

- `full`: the read filled the window. A window holding no complete record is cut: a line
  longer than the window (`max_line_bytes`) becomes records of `max_line_bytes` each,
  counted as `cut`, never dropped.
- `timeout`: the file has been quiet past the multiline timeout: a held group goes out.
- `finished`: the file will not grow any more (rotated away or deleted, and read to its
  end): everything goes out, an unterminated last line as a record of its own.
"""

from __future__ import annotations

import re
from typing import NamedTuple, Protocol

from logd.record import Batch


class Decoded(NamedTuple):
    batch: Batch | None
    consumed: int   # bytes of the read the batch holds (from its start)
    cut: int = 0    # records cut at the window (lines longer than max_line_bytes)
    bad: int = 0    # lines not in the file's format, kept as they are


NOTHING = Decoded(None, 0)


class Decoder(Protocol):
    def decode(self, data: bytes, *, full: bool, timeout: bool, finished: bool,
               source: str, received: float) -> Decoded: ...

    def reset(self) -> None:
        """The file starts over (truncated): forget what was learned of the old content."""

    @property
    def holds_groups(self) -> bool:
        """Whether it holds back complete lines (a multiline group) that a timeout flushes."""


class LinesDecoder:
    """One record per LF-terminated line, as one block: no per-line work."""

    holds_groups = False

    def reset(self) -> None:
        pass

    def decode(self, data: bytes, *, full: bool, timeout: bool, finished: bool,
               source: str, received: float) -> Decoded:
        end = len(data)
        lf = data.rfind(b"\n")
        if finished and end and lf != end - 1:
            # The last line was never completed and will not be: a record as it is.
            block = data + b"\n"
            return Decoded(Batch.from_lines(block, block.count(b"\n"), source, received), end)
        if lf >= 0:
            block = data if lf == end - 1 else data[:lf + 1]
            return Decoded(Batch.from_lines(block, block.count(b"\n"), source, received),
                           lf + 1)
        if full:
            return Decoded(Batch.from_lines(data + b"\n", 1, source, received), end, cut=1)
        return NOTHING


class MultilineDecoder:
    """Lines grouped into records: a line matching `start` begins one, the lines after it
    that do not are appended (a Java stack trace stays one record), up to `max_lines`
    lines. The last group may go on in lines not yet written: it is held until a line
    starts the next one, the window fills, the timeout passes, or the file is finished."""

    holds_groups = True

    def __init__(self, start: str, max_lines: int) -> None:
        self.start = re.compile(start.encode())
        self.max_lines = max_lines

    def reset(self) -> None:
        pass

    def decode(self, data: bytes, *, full: bool, timeout: bool, finished: bool,
               source: str, received: float) -> Decoded:
        end = len(data)
        lf = data.rfind(b"\n")
        if lf < 0:
            if full or (finished and end):
                return Decoded(Batch([data], None, source, received, end), end,
                               cut=1 if full else 0)
            return NOTHING
        lines = data[:lf + 1].split(b"\n")
        lines.pop()
        match = self.start.match
        max_lines = self.max_lines
        records: list[bytes] = []
        group: list[bytes] = []
        pos = group_at = 0
        for line in lines:
            if group and (len(group) >= max_lines or match(line)):
                records.append(b"\n".join(group))
                group = []
                group_at = pos
            group.append(line)
            pos += len(line) + 1
        consumed = group_at
        cut = 0
        if finished and lf != end - 1:
            group.append(data[lf + 1:])
            pos = end
        if group and (timeout or finished or (full and not records)):
            records.append(b"\n".join(group))
            consumed = pos
            cut = 1 if full and not (timeout or finished) else 0
        if not records:
            return NOTHING
        return Decoded(Batch(records, None, source, received, sum(map(len, records))),
                       consumed, cut=cut)
