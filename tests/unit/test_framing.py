"""logd.framing: frame and line decoders fed arbitrary chunkings of a stream."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from logd.framing import FrameDecoder, FramingError, LineDecoder, invalid_utf8
from logd.record import Batch


def frame(severity: int, payload: bytes) -> bytes:
    return (len(payload) + 1).to_bytes(4, "big") + bytes([severity]) + payload


def sample_frames(n: int, seed: int) -> list[tuple[int, bytes]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        size = rng.choice([0, 1, 2, 3, 7, 50, 300, 1000])
        body = f"rec{i}-".encode() + rng.randbytes(size)
        out.append((rng.randrange(8), body[:size]))
    return out


def chunkings(data: bytes, seed: int, rounds: int) -> Iterator[list[bytes]]:
    """Random ways to cut `data` into consecutive pieces (sizes 1 .. 40 bytes)."""
    rng = random.Random(seed)
    for _ in range(rounds):
        pieces, pos = [], 0
        while pos < len(data):
            step = rng.randint(1, 40)
            pieces.append(data[pos:pos + step])
            pos += step
        yield pieces


def decode_frames(pieces: list[bytes], max_frame: int = 1 << 20) -> tuple[list[bytes], bytes]:
    """(payloads, severities) from feeding `pieces` in order, severities read from the chunks."""
    dec = FrameDecoder(max_frame)
    payloads: list[bytes] = []
    sevs = b""
    for piece in pieces:
        got, chunk, start, stop = dec.feed(piece)
        payloads.extend(got)
        batch = Batch(got, None, "t", 0.0, sum(map(len, got)), frames=(chunk, start, stop))
        sevs += batch.severity_bytes()
    assert dec.pending == 0
    return payloads, sevs


def test_frames_fed_byte_by_byte_decode_in_order() -> None:
    frames = sample_frames(40, seed=1)
    stream = b"".join(frame(s, p) for s, p in frames)
    payloads, sevs = decode_frames([stream[i:i + 1] for i in range(len(stream))])
    assert payloads == [p for _, p in frames]
    assert sevs == bytes(s for s, _ in frames)


def test_frames_in_random_chunkings_decode_in_order() -> None:
    frames = sample_frames(60, seed=2)
    stream = b"".join(frame(s, p) for s, p in frames)
    for pieces in chunkings(stream, seed=3, rounds=50):
        payloads, sevs = decode_frames(pieces)
        assert payloads == [p for _, p in frames]
        assert sevs == bytes(s for s, _ in frames)


def test_frames_split_at_every_single_boundary_decode_in_order() -> None:
    frames = sample_frames(12, seed=4)
    stream = b"".join(frame(s, p) for s, p in frames)
    for cut in range(len(stream) + 1):
        payloads, sevs = decode_frames([stream[:cut], stream[cut:]])
        assert payloads == [p for _, p in frames], cut
        assert sevs == bytes(s for s, _ in frames), cut


def test_length_one_frame_is_an_empty_payload() -> None:
    payloads, chunk, start, stop = FrameDecoder(100).feed(frame(3, b"") + frame(5, b"x"))
    assert payloads == [b"", b"x"]
    batch = Batch(payloads, None, "t", 0.0, 1, frames=(chunk, start, stop))
    assert batch.severity_bytes() == bytes([3, 5])


def test_pending_counts_bytes_of_an_incomplete_frame() -> None:
    dec = FrameDecoder(100)
    assert dec.feed(frame(6, b"hello")[:6])[0] == []
    assert dec.pending == 6
    assert dec.feed(b"ello")[0] == [b"hello"]
    assert dec.pending == 0
    dec.feed(b"\x00\x00")
    assert dec.pending == 2


def test_zero_length_frame_reports_stream_offset_across_feeds() -> None:
    dec = FrameDecoder(100)
    first = frame(6, b"abc")            # 8 bytes
    second = frame(6, b"0123456789")    # 15 bytes
    dec.feed(first + second[:5])
    dec.feed(second[5:] + frame(1, b"z")[:3])
    with pytest.raises(FramingError) as info:
        dec.feed(frame(1, b"z")[3:] + b"\x00\x00\x00\x00" + frame(6, b"after"))
    assert info.value.reason == "zero_length"
    assert info.value.offset == 8 + 15 + 6
    assert str(29) in str(info.value)


def test_oversized_frame_fails_as_soon_as_its_header_arrives() -> None:
    dec = FrameDecoder(16)
    dec.feed(frame(6, b"ok"))           # 7 bytes, fine
    header = (17).to_bytes(4, "big")
    dec.feed(header[:2])
    with pytest.raises(FramingError) as info:
        dec.feed(header[2:])            # no body byte has arrived yet
    assert info.value.reason == "oversized"
    assert info.value.offset == 7
    assert "17" in str(info.value)


def test_frame_of_exactly_max_length_is_accepted() -> None:
    payloads, _, _, _ = FrameDecoder(16).feed(frame(6, b"x" * 15))
    assert payloads == [b"x" * 15]


def test_lines_split_across_feeds_rejoin() -> None:
    dec = LineDecoder(100)
    assert dec.feed(b"hel") == (b"", 0)
    assert dec.feed(b"lo\nwor") == (b"hello\n", 1)
    assert dec.feed(b"ld") == (b"", 0)
    assert dec.feed(b"\nagain\n") == (b"world\nagain\n", 2)
    assert dec.pending == 0


def test_empty_lines_are_records_passed_through_byte_exact() -> None:
    dec = LineDecoder(100)
    assert dec.feed(b"\n\na\n\n\nb\n") == (b"\n\na\n\n\nb\n", 6)
    assert dec.feed(b"\n") == (b"\n", 1)
    assert dec.feed(b"c") == (b"", 0)
    assert dec.feed(b"\n\nd\n") == (b"c\n\nd\n", 3)
    batch = Batch.from_lines(b"c\n\nd\n", 3, "lines", 0.0)
    assert batch.payloads == [b"c", b"", b"d"]


def test_finish_returns_last_unterminated_line_with_lf() -> None:
    dec = LineDecoder(100)
    assert dec.feed(b"one\ntw") == (b"one\n", 1)
    dec.feed(b"o")
    assert dec.finish() == b"two\n"
    assert dec.finish() == b""
    assert LineDecoder(100).finish() == b""


def test_line_over_max_without_lf_fails_across_small_feeds() -> None:
    dec = LineDecoder(10)
    assert dec.feed(b"ok\n") == (b"ok\n", 1)
    dec.feed(b"abcd")
    dec.feed(b"efgh")
    with pytest.raises(FramingError) as info:
        dec.feed(b"ijk")                # 11 bytes, still no LF
    assert info.value.reason == "oversized"
    assert info.value.offset == 3


def test_line_over_max_with_its_lf_in_one_read_fails() -> None:
    dec = LineDecoder(10)
    with pytest.raises(FramingError) as info:
        dec.feed(b"short\n" + b"y" * 11 + b"\nz\n")
    assert info.value.reason == "oversized"
    assert info.value.offset == 6


def test_line_of_exactly_max_is_accepted() -> None:
    dec = LineDecoder(10)
    dec.feed(b"x" * 6)
    assert dec.feed(b"x" * 4 + b"\n") == (b"x" * 10 + b"\n", 1)


def test_line_blocks_equal_joined_lines_in_random_chunkings() -> None:
    rng = random.Random(5)
    lines = [f"line {i} ".encode() + b"w" * rng.randrange(0, 60) if rng.random() < 0.9 else b""
             for i in range(200)]
    stream = b"\n".join(lines) + b"\n"
    for pieces in chunkings(stream, seed=6, rounds=30):
        dec = LineDecoder(1000)
        blocks, count = [], 0
        for piece in pieces:
            block, n = dec.feed(piece)
            assert block.count(b"\n") == n
            blocks.append(block)
            count += n
        assert b"".join(blocks) == stream
        assert count == len(lines)
        assert dec.finish() == b""
        batch = Batch.from_lines(b"".join(blocks), count, "lines", 0.0)
        assert batch.payloads == lines


def test_invalid_utf8_counts_bad_records() -> None:
    good = ["plain", "caf\u00e9", "\u65e5\u672c"]
    payloads = [s.encode() for s in good] + [b"\xff\xfe", b"ok\xc3", b"fine"]
    block = b"\n".join(payloads) + b"\n"
    assert invalid_utf8(block, lambda: payloads) == 2


def test_invalid_utf8_is_zero_for_ascii_without_splitting() -> None:
    def never() -> list[bytes]:
        raise AssertionError("an ASCII block must not be split into records")

    assert invalid_utf8(b"abc\ndef\n", never) == 0
