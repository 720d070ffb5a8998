"""Sans-io decoders for syslog over a stream (RFC 6587): LF-delimited, or octet-counted.

No asyncio here: a decoder takes bytes as they arrive and returns whole messages, so it can be
tested and fuzzed without sockets. A connection's framing is told by its first byte: a digit
starts an octet count (`LEN SP MSG`), anything else is a line.

Unlike the emitter port's decoders, an over-long message is not a reason to close the
connection here: syslog senders cannot know logd's limit, so a line is cut at
`max_message_bytes` (the rest up to its LF skipped) and counted. An octet count that cannot
be followed (not digits, over the limit) leaves no way to find the next message: that is a
FramingError, and only that connection is closed.
"""

from __future__ import annotations

import re

from logd.framing import FramingError

_MAX_COUNT_DIGITS = 10
# A valid PRI (0-191) at the start of a message; see logd.syslog.parse.
_PRI = rb"<(?:\d\d?|0\d\d|1[0-8]\d|19[01])>"
PRI_AT_START = re.compile(_PRI)
_PRI_AFTER_LF = re.compile(rb"\n" + _PRI)


def octet_counted(first: bytes) -> bool:
    """Whether a connection whose first bytes are `first` uses octet counting."""
    return first[:1].isdigit()


def lines_without_pri(block: bytes, count: int) -> int:
    """How many of the `count` LF-terminated lines in `block` lack a valid PRI: two C-level
    scans of the block (the pattern starts with a literal, so the search skips ahead)."""
    found = (1 if PRI_AT_START.match(block) else 0) + len(_PRI_AFTER_LF.findall(block))
    return count - found


def payloads_without_pri(payloads: list[bytes]) -> int:
    return len(payloads) - sum(1 for _ in filter(None, map(PRI_AT_START.match, payloads)))


class SyslogLineDecoder:
    """LF-delimited messages; an over-long one is cut at `max_message_bytes` and counted."""

    __slots__ = ("max_message_bytes", "cut", "_chunks", "_have", "_skipping")

    def __init__(self, max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes
        self.cut = 0  # messages cut so far (the caller reads and resets it)
        self._chunks: list[bytes] = []
        self._have = 0
        self._skipping = False  # inside the rest of a line that was cut

    @property
    def pending(self) -> int:
        return self._have

    def feed(self, data: bytes) -> tuple[bytes, int]:
        """What `data` completes: (a block of LF-terminated lines, how many)."""
        limit = self.max_message_bytes
        if self._skipping:
            nl = data.find(b"\n")
            if nl < 0:
                return b"", 0
            self._skipping = False
            data = data[nl + 1:]
        if self._chunks:
            if b"\n" not in data:
                self._chunks.append(data)
                self._have += len(data)
                if self._have <= limit:
                    return b"", 0
                data = b"".join(self._chunks)
                self._chunks = []
                self._have = 0
                self.cut += 1
                self._skipping = True
                return data[:limit] + b"\n", 1
            self._chunks.append(data)
            data = b"".join(self._chunks)
            self._chunks = []
            self._have = 0
        last = data.rfind(b"\n")
        if last == len(data) - 1:
            block, rest = data, b""
        elif last < 0:
            block, rest = b"", data
        else:
            block, rest = data[:last + 1], data[last + 1:]
        count = block.count(b"\n")
        if len(block) > limit + 1:
            # Only a read longer than the limit can hold an over-long line: look at each.
            lines = block.split(b"\n")
            if any(len(line) > limit for line in lines):
                cut = [line[:limit] for line in lines]
                self.cut += sum(len(line) > limit for line in lines)
                block = b"\n".join(cut)
        if rest:
            if len(rest) > limit:
                block += rest[:limit] + b"\n"
                count += 1
                self.cut += 1
                self._skipping = True
            else:
                self._chunks = [rest]
                self._have = len(rest)
        return block, count

    def finish(self) -> bytes:
        """At EOF: a last line without its LF is still a message; returns it LF-terminated."""
        if not self._chunks:
            return b""
        data = b"".join(self._chunks)
        self._chunks = []
        self._have = 0
        return data + b"\n"


class OctetCountDecoder:
    """`LEN SP MSG` frames (RFC 6587 octet counting); LFs between frames are tolerated, and
    a LF that ends a frame is dropped (a message is one line in logd's files)."""

    __slots__ = ("max_message_bytes", "_buf", "_offset")

    def __init__(self, max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes
        self._buf = b""
        self._offset = 0  # stream offset of _buf's first byte

    @property
    def pending(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """The messages `data` completes. Raises FramingError (with the messages before the
        bad count in `.frames`) when a count cannot be followed."""
        buf = self._buf + data if self._buf else data
        out: list[bytes] = []
        append = out.append
        end = len(buf)
        limit = self.max_message_bytes
        off = 0
        while off < end:
            c = buf[off]
            if c == 10 or c == 13:  # LF (or CR LF) some senders put between frames
                off += 1
                continue
            sp = buf.find(b" ", off, off + _MAX_COUNT_DIGITS + 1)
            if sp < 0:
                if end - off > _MAX_COUNT_DIGITS or not buf[off:end].isdigit():
                    self._fail(buf, off, out, "bad_octet_count",
                               f"expected an octet count, got {buf[off:off + 12]!r}")
                break
            digits = buf[off:sp]
            if not digits.isdigit() or not digits.isascii():
                self._fail(buf, off, out, "bad_octet_count",
                           f"expected an octet count, got {buf[off:sp + 1]!r}")
            n = int(digits)
            if n > limit:
                self._fail(buf, off, out, "octet_count_over_limit",
                           f"octet count {n} is over max_message_bytes {limit}")
            stop = sp + 1 + n
            if stop > end:
                break
            # Senders' templates often end in LF, counted in the frame; not the message's.
            last = stop - 1 if n and buf[stop - 1] == 10 else stop
            append(buf[sp + 1:last])
            off = stop
        self._buf = buf[off:] if off < end else b""
        self._offset += off
        return out

    def finish(self) -> bytes | None:
        """At EOF: the message the connection closed inside, as far as it came (None if
        there is none)."""
        buf, self._buf = self._buf.lstrip(b"\r\n"), b""
        if not buf:
            return None
        sp = buf.find(b" ")
        return buf[sp + 1:] if sp > 0 and buf[:sp].isdigit() else buf

    def _fail(self, buf: bytes, off: int, good: list[bytes], reason: str, detail: str) -> None:
        e = FramingError(reason, self._offset + off, detail)
        e.frames = (good, buf, 0, off)
        self._buf = b""
        raise e
