"""Sans-io decoders for the emitter port: length-prefixed frames and LF-delimited lines.

No asyncio here: a decoder takes bytes as they arrive and returns whole records, so it can be
tested and fuzzed without sockets. One call decodes a whole socket read; the per-record loop is
the hot path of the daemon and is kept to a slice and an append per record.
"""

from __future__ import annotations

from collections.abc import Callable


class FramingError(Exception):
    """The stream broke the protocol; the connection cannot continue.

    `reason` is a short stable word for counters ("oversized", "zero_length"); `offset` is the
    byte offset in the connection's stream where the offending frame starts.
    """

    def __init__(self, reason: str, offset: int, detail: str) -> None:
        self.reason = reason
        self.offset = offset
        # Whole records decoded from the same read before the bad one: still to deliver.
        self.frames: tuple[list[bytes], bytes, int, int] | None = None
        self.lines: tuple[bytes, int] | None = None
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

    def feed(self, data: bytes) -> tuple[list[bytes], bytes, int, int]:
        """Decode what `data` completes.

        Returns (payloads, chunk, start, stop): the frames were cut from chunk[start:stop],
        where severities can be read later if anything needs them (most routes do not).
        """
        if self._chunks:
            self._chunks.append(data)
            self._have += len(data)
            if self._have < self._need:
                return [], b"", 0, 0
            data = b"".join(self._chunks)
            self._chunks = []
            self._have = 0
        payloads: list[bytes] = []
        append = payloads.append
        from_bytes = int.from_bytes
        limit = self.max_frame_bytes
        end = len(data)
        off = 0
        while end - off >= 4:
            length = from_bytes(data[off:off + 4], "big")
            if not 0 < length <= limit:
                try:
                    self._fail(length, off)
                except FramingError as e:
                    e.frames = (payloads, data, 0, off)
                    raise
            stop = off + 4 + length
            if stop > end:
                break
            append(data[off + 5:stop])
            off = stop
        if off < end:
            rest = data[off:]
            self._chunks = [rest]
            self._have = len(rest)
            self._need = 4 + from_bytes(rest[:4], "big") if len(rest) >= 4 else 4
        self._offset += off
        return payloads, data, 0, off

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
    """LF-delimited records; the LF is not part of the payload.

    Every line is a record, an empty one too: lines pass through byte-exact, and looking for
    empty lines would cost a scan of every read for what emitters rarely send.
    """

    __slots__ = ("max_line_bytes", "_chunks", "_have", "_offset")

    def __init__(self, max_line_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
        self._chunks: list[bytes] = []
        self._have = 0
        self._offset = 0

    @property
    def pending(self) -> int:
        return self._have

    def feed(self, data: bytes) -> tuple[bytes, int]:
        """Decode what `data` completes: (block of whole LF-terminated lines, line count).

        The block is the input as received; nothing is split per line.
        """
        if self._chunks:
            if b"\n" not in data:
                self._chunks.append(data)
                self._have += len(data)
                if self._have > self.max_line_bytes:
                    self._fail(self._have, 0)
                return b"", 0
            self._chunks.append(data)
            data = b"".join(self._chunks)
            self._chunks = []
            self._have = 0
        last = data.rfind(b"\n")
        if last < 0:
            block, rest = b"", data
        elif last == len(data) - 1:
            block, rest = data, b""
        else:
            block, rest = data[:last + 1], data[last + 1:]
        limit = self.max_line_bytes
        if len(block) > limit + 1:
            # Only reads longer than the limit can hold an over-long line: look at each.
            pos = 0
            for line in block.split(b"\n"):
                if len(line) > limit:
                    try:
                        self._fail(len(line), pos)
                    except FramingError as e:
                        e.lines = (block[:pos], block.count(b"\n", 0, pos))
                        raise
                pos += len(line) + 1
        if rest:
            if len(rest) > limit:
                try:
                    self._fail(len(rest), len(block))
                except FramingError as e:
                    e.lines = (block, block.count(b"\n"))
                    raise
            self._chunks = [rest]
            self._have = len(rest)
        self._offset += len(block)
        return block, block.count(b"\n")

    def finish(self) -> bytes:
        """At EOF: a last line without its LF is still a record; returns it LF-terminated."""
        if not self._chunks:
            return b""
        data = b"".join(self._chunks)
        self._chunks = []
        self._have = 0
        self._offset += len(data)
        return data + b"\n"

    def _fail(self, length: int, off: int) -> None:
        where = self._offset + off
        self._chunks = []
        self._have = 0
        raise FramingError("oversized", where, f"line of {length}+ bytes is over "
                           f"max_frame_bytes {self.max_line_bytes}")


def invalid_utf8(block: bytes, payloads: Callable[[], list[bytes]]) -> int:
    """How many records are not valid UTF-8. `block` is a read that holds them all, with only
    ASCII besides (frame headers of small lengths, LFs): an ASCII or valid block is one C-level
    scan; only a bad one is looked at record by record.
    """
    if block.isascii():
        return 0
    bad = 0
    for p in payloads():
        try:
            p.decode("utf-8")
        except UnicodeDecodeError:
            bad += 1
    return bad
