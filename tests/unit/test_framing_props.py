"""Properties of the emitter port's decoders: any chunking of a stream decodes the same way.

A model of each protocol, written from the wire contract (DESIGN.md), says what the stream
holds; the decoder, fed the stream in random pieces, must say the same.
"""

from __future__ import annotations

from hypothesis import assume, given
from hypothesis import strategies as st

from logd.framing import FrameDecoder, FramingError, LineDecoder
from logd.record import Batch
from testkit.props import examples

HEADER = 4


def frame(severity: int, payload: bytes) -> bytes:
    return (len(payload) + 1).to_bytes(4, "big") + bytes([severity]) + payload


@st.composite
def cuts(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """`data` cut into consecutive pieces, empty ones included (a read can return b"")."""
    points = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    pieces, last = [], 0
    for p in [*points, len(data)]:
        pieces.append(data[last:p])
        last = p
    return pieces


def chunked(data: st.SearchStrategy[bytes]) -> st.SearchStrategy[tuple[bytes, list[bytes]]]:
    return data.flatmap(lambda d: st.tuples(st.just(d), cuts(d)))


# -- frames --

FRAMES = st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=40)), max_size=12)
MAX_FRAME = 41  # a frame of a 40-byte payload is exactly at the limit


class FrameFeed:
    """Feeds pieces to a FrameDecoder; collects what it decoded, the error if any."""

    def __init__(self, max_frame: int) -> None:
        self.decoder = FrameDecoder(max_frame)
        self.payloads: list[bytes] = []
        self.severities = b""
        self.error: FramingError | None = None

    def take(self, got: list[bytes], chunk: bytes, start: int, stop: int) -> None:
        self.payloads.extend(got)
        batch = Batch(got, None, "t", 0.0, 0, frames=(chunk, start, stop))
        self.severities += batch.severity_bytes()

    def run(self, pieces: list[bytes]) -> FrameFeed:
        limit = self.decoder.max_frame_bytes
        for piece in pieces:
            try:
                self.take(*self.decoder.feed(piece))
            except FramingError as e:
                assert e.frames is not None
                self.take(*e.frames)
                self.error = e
                return self
            # An incomplete frame is held, never more: at most a header and a frame's bytes.
            assert self.decoder.pending < HEADER + limit
        return self


@examples(300)
@given(FRAMES.flatmap(lambda fs: st.tuples(st.just(fs),
                                           cuts(b"".join(frame(s, p) for s, p in fs)))))
def test_valid_frames_in_any_chunking_decode_to_the_frames(
        case: tuple[list[tuple[int, bytes]], list[bytes]]) -> None:
    frames, pieces = case
    feed = FrameFeed(MAX_FRAME).run(pieces)
    assert feed.error is None
    assert feed.payloads == [p for _, p in frames]
    assert feed.severities == bytes(s for s, _ in frames)
    assert feed.decoder.pending == 0


@st.composite
def broken_streams(draw: st.DrawFn) -> tuple[list[tuple[int, bytes]], bytes, int, str]:
    """Valid frames, then a bad header (length 0 or over the limit), then anything."""
    good = draw(FRAMES)
    length = draw(st.sampled_from([0, MAX_FRAME + 1, 2**32 - 1]) | st.integers(MAX_FRAME + 1,
                                                                              2**32 - 1))
    tail = draw(st.binary(max_size=60))
    head = b"".join(frame(s, p) for s, p in good)
    reason = "zero_length" if length == 0 else "oversized"
    return good, head + length.to_bytes(4, "big") + tail, len(head), reason


@examples(200)
@given(broken_streams().flatmap(lambda b: st.tuples(st.just(b), cuts(b[1]))))
def test_a_bad_length_fails_at_its_offset_after_the_frames_before_it(
        case: tuple[tuple[list[tuple[int, bytes]], bytes, int, str], list[bytes]]) -> None:
    (good, _, offset, reason), pieces = case
    feed = FrameFeed(MAX_FRAME).run(pieces)
    assert feed.error is not None
    assert (feed.error.reason, feed.error.offset) == (reason, offset)
    assert f"at byte offset {offset}" in str(feed.error)
    assert feed.payloads == [p for _, p in good]
    assert feed.severities == bytes(s for s, _ in good)
    assert feed.decoder.pending == 0


def model_frames(data: bytes, limit: int) -> tuple[list[bytes], tuple[str, int] | None, int]:
    """(payloads, (reason, offset) of the first bad header or None, bytes left incomplete)."""
    payloads, off = [], 0
    while len(data) - off >= HEADER:
        length = int.from_bytes(data[off:off + HEADER], "big")
        if length == 0:
            return payloads, ("zero_length", off), 0
        if length > limit:
            return payloads, ("oversized", off), 0
        if off + HEADER + length > len(data):
            break
        payloads.append(data[off + HEADER + 1:off + HEADER + length])
        off += HEADER + length
    return payloads, None, len(data) - off


@examples(300)
@given(chunked(st.binary(max_size=120)), st.integers(1, 64))
def test_any_bytes_decode_as_the_model_says(case: tuple[bytes, list[bytes]],
                                            limit: int) -> None:
    data, pieces = case
    payloads, error, left = model_frames(data, limit)
    feed = FrameFeed(limit).run(pieces)
    assert feed.payloads == payloads
    if error is None:
        assert feed.error is None
        assert feed.decoder.pending == left
    else:
        assert feed.error is not None
        assert (feed.error.reason, feed.error.offset) == error


@examples(100)
@given(chunked(st.binary(min_size=1, max_size=60).map(
    lambda b: (2**31).to_bytes(4, "big") + b)))
def test_garbage_with_a_huge_length_fails_without_waiting_for_the_body(
        case: tuple[bytes, list[bytes]]) -> None:
    _, pieces = case
    feed = FrameFeed(1 << 20).run(pieces)
    assert feed.error is not None and feed.error.reason == "oversized"
    assert feed.error.offset == 0 and feed.payloads == []


# -- lines --

LINE_BYTES = st.lists(st.sampled_from([b"a", b"b", b"\n", b"\r", b"\xff", b" "]),
                      max_size=80).map(b"".join)


def model_lines(data: bytes, limit: int) -> tuple[list[bytes], int | None, bytes]:
    """(LF-terminated lines before the first over-long one, the offset of that line or None,
    the unterminated rest)."""
    *lines, rest = data.split(b"\n")
    off = 0
    for n, line in enumerate([*lines, rest]):
        if len(line) > limit:
            return lines[:n], off, b""
        off += len(line) + 1
    return lines, None, rest


class LineFeed:
    def __init__(self, limit: int) -> None:
        self.decoder = LineDecoder(limit)
        self.blocks: list[bytes] = []
        self.count = 0
        self.error: FramingError | None = None

    def take(self, block: bytes, count: int) -> None:
        assert block.count(b"\n") == count
        assert block == b"" or block.endswith(b"\n")
        self.blocks.append(block)
        self.count += count

    def run(self, pieces: list[bytes]) -> LineFeed:
        for piece in pieces:
            try:
                self.take(*self.decoder.feed(piece))
            except FramingError as e:
                if e.lines is not None:
                    self.take(*e.lines)
                self.error = e
                return self
            assert self.decoder.pending <= self.decoder.max_line_bytes
        return self

    @property
    def lines(self) -> list[bytes]:
        batch = Batch.from_lines(b"".join(self.blocks), self.count, "lines", 0.0)
        return batch.payloads


@examples(300)
@given(chunked(LINE_BYTES), st.integers(1, 30))
def test_lines_in_any_chunking_are_the_stream_split_on_lf(case: tuple[bytes, list[bytes]],
                                                          limit: int) -> None:
    data, pieces = case
    lines, bad_offset, rest = model_lines(data, limit)
    feed = LineFeed(limit).run(pieces)
    assert feed.lines == lines
    if bad_offset is None:
        assert feed.error is None
        assert feed.decoder.finish() == (rest + b"\n" if rest else b"")
        assert feed.decoder.pending == 0
    else:
        assert feed.error is not None
        assert feed.error.reason == "oversized" and feed.error.offset == bad_offset


@examples(100)
@given(chunked(LINE_BYTES.filter(lambda b: b.count(b"\n") < 6)))
def test_without_a_limit_in_reach_every_line_passes_byte_exact(
        case: tuple[bytes, list[bytes]]) -> None:
    data, pieces = case
    assume(data)
    feed = LineFeed(1 << 20).run(pieces)
    tail = feed.decoder.finish()
    assert b"".join(feed.blocks) + tail == (data if data.endswith(b"\n") else data + b"\n")
    assert feed.decoder.finish() == b""
