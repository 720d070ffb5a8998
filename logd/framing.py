"""Sans-io decoders for the emitter port: length-prefixed frames and LF-delimited lines.

No asyncio here: a decoder takes bytes as they arrive and returns whole records, so it can be
tested and fuzzed without sockets. One call decodes a whole socket read; the per-record loop is
the hot path of the daemon and is kept to a slice and an append per record.
"""

from __future__ import annotations


class FramingError(Exception):
    """The stream broke the protocol; the connection cannot continue.

    `reason` is a short stable word for counters ("oversized", "zero_length"); `offset` is the
    byte offset in the connection's stream where the offending frame starts.
    """

    def __init__(self, reason: str, offset: int, detail: str) -> None:
        self.reason = reason
        self.offset = offset
        super().__init__(f"{detail} at byte offset {offset}")


class FrameDecoder:
    """`[u32 big-endian length][u8 severity][payload]`; length counts severity + payload."""

    __slots__ = ("max_frame_bytes", "_chunks", "_have", "_need", "_offset")

    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._chunks: list[bytes] = []
        self._have = 0
        self._need = 0
        self._offset = 0  # stream offset of the first byte not yet consumed

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back (nonzero at EOF means a truncated frame)."""
        return self._have

    def feed(self, data: bytes) -> tuple[list[bytes], bytearray, int]:
        """Decode what `data` completes: (payloads, severities, payload byte count)."""
        if self._chunks:
            self._chunks.append(data)
            self._have += len(data)
            if self._have < self._need:
                return [], bytearray(), 0
            data = b"".join(self._chunks)
            self._chunks = []
            self._have = 0
        payloads: list[bytes] = []
        sevs = bytearray()
        append = payloads.append
        sev_append = sevs.append
        from_bytes = int.from_bytes
        limit = self.max_frame_bytes
        end = len(data)
        off = 0
        while end - off >= 4:
            length = from_bytes(data[off:off + 4], "big")
            if length == 0 or length > limit:
                self._fail(length, off)
            stop = off + 4 + length
            if stop > end:
                break
            sev_append(data[off + 4])
            append(data[off + 5:stop])
            off = stop
        if off < end:
            rest = data[off:]
            self._chunks = [rest]
            self._have = len(rest)
            self._need = 4 + from_bytes(rest[:4], "big") if len(rest) >= 4 else 4
        self._offset += off
        return payloads, sevs, off - 5 * len(payloads)

    def _fail(self, length: int, off: int) -> None:
        where = self._offset + off
        self._chunks = []
        self._have = 0
        if length == 0:
            raise FramingError("zero_length", where, "frame length 0 (a frame needs at least "
                               "the severity byte)")
        raise FramingError("oversized", where, f"frame length {length} is over "
                           f"max_frame_bytes {self.max_frame_bytes}")


class LineDecoder:
    """LF-delimited records; empty lines are skipped; the LF is not part of the payload."""

    __slots__ = ("max_line_bytes", "_chunks", "_have", "_offset")

    def __init__(self, max_line_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
        self._chunks: list[bytes] = []
        self._have = 0
        self._offset = 0

    @property
    def pending(self) -> int:
        return self._have

    def feed(self, data: bytes) -> tuple[list[bytes], None, int]:
        if self._chunks:
            if b"\n" not in data:
                self._chunks.append(data)
                self._have += len(data)
                if self._have > self.max_line_bytes:
                    self._fail(self._have, 0)
                return [], None, 0
            self._chunks.append(data)
            data = b"".join(self._chunks)
            self._chunks = []
            self._have = 0
        lines = data.split(b"\n")
        rest = lines.pop()
        consumed = len(data) - len(rest)
        # Payload bytes: everything consumed minus one LF per line, before dropping empties.
        nbytes = consumed - len(lines)
        if lines and max(map(len, lines)) > self.max_line_bytes:
            pos = 0
            for line in lines:
                if len(line) > self.max_line_bytes:
                    self._fail(len(line), pos)
                pos += len(line) + 1
        if b"" in lines:
            lines = [line for line in lines if line]
        if rest:
            if len(rest) > self.max_line_bytes:
                self._fail(len(rest), consumed)
            self._chunks = [rest]
            self._have = len(rest)
        self._offset += consumed
        return lines, None, nbytes

    def finish(self) -> tuple[list[bytes], None, int]:
        """At EOF: a last line without its LF is still a record."""
        if not self._chunks:
            return [], None, 0
        data = b"".join(self._chunks)
        self._chunks = []
        self._have = 0
        self._offset += len(data)
        return [data], None, len(data)

    def _fail(self, length: int, off: int) -> None:
        where = self._offset + off
        self._chunks = []
        self._have = 0
        raise FramingError("oversized", where, f"line of {length}+ bytes is over "
                           f"max_frame_bytes {self.max_line_bytes}")


def count_invalid_utf8(chunk: bytes, payloads: list[bytes]) -> int:
    """How many payloads are not valid UTF-8. ASCII reads (the common case) cost one scan."""
    if chunk.isascii():
        return 0
    try:
        b"\n".join(payloads).decode("utf-8")
        return 0
    except UnicodeDecodeError:
        pass
    bad = 0
    for p in payloads:
        try:
            p.decode("utf-8")
        except UnicodeDecodeError:
            bad += 1
    return bad
