"""Sans-io codec for the analyzer port (seed 003's protocol).

Analyzer -> logd: first its initial weight (8 bytes, float64 big-endian), then 5-byte control
messages: `[u8 0][u32 seq]` cumulative ACK, `[u8 1][f32 weight]` weight update (0 = drain).
logd -> analyzer: `[u32 length][u8 severity][payload]`, numbered 1, 2, 3 ... per connection.
"""

from __future__ import annotations

import math
import struct
from collections import deque
from typing import Any

ACK = 0
WEIGHT = 1

_F64 = struct.Struct(">d")
_F32 = struct.Struct(">f")
_FRAME_HEADER = struct.Struct(">IB")


class AnalyzerProtocolError(Exception):
    """The analyzer broke the protocol; `reason` is a stable word for counters."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.events: list[tuple[str, float]] = []  # the valid messages before the bad one
        super().__init__(detail)


def _valid_weight(w: float, what: str) -> float:
    if math.isnan(w):
        raise AnalyzerProtocolError("bad_weight", f"{what} is NaN")
    if math.isinf(w):
        raise AnalyzerProtocolError("bad_weight", f"{what} is infinite")
    if w < 0:
        raise AnalyzerProtocolError("bad_weight", f"{what} is negative ({w})")
    return w


class ControlDecoder:
    """Feeds bytes from the analyzer; returns events as ("weight", w) and ("ack", seq)."""

    __slots__ = ("_buf", "_have_weight")

    def __init__(self) -> None:
        self._buf = b""
        self._have_weight = False

    def feed(self, data: bytes) -> list[tuple[str, float]]:
        buf = self._buf + data if self._buf else data
        events: list[tuple[str, float]] = []
        try:
            return self._decode(buf, events)
        except AnalyzerProtocolError as e:
            e.events = events
            raise

    def _decode(self, buf: bytes, events: list[tuple[str, float]]) -> list[tuple[str, float]]:
        off = 0
        if not self._have_weight:
            if len(buf) < 8:
                self._buf = buf
                return events
            (w,) = _F64.unpack_from(buf, 0)
            events.append(("weight", _valid_weight(w, "initial weight")))
            self._have_weight = True
            off = 8
        end = len(buf)
        while end - off >= 5:
            kind = buf[off]
            if kind == ACK:
                events.append(("ack", int.from_bytes(buf[off + 1:off + 5], "big")))
            elif kind == WEIGHT:
                (w,) = _F32.unpack_from(buf, off + 1)
                events.append(("weight", _valid_weight(w, "weight update")))
            else:
                raise AnalyzerProtocolError("unknown_type",
                                            f"unknown control message type {kind}")
            off += 5
        self._buf = buf[off:]
        return events

    @property
    def pending(self) -> int:
        return len(self._buf)


def encode_frames(payloads: list[bytes], severities: bytes) -> bytes:
    """Messages to an analyzer, one `[u32 length][u8 severity][payload]` per record."""
    pack = _FRAME_HEADER.pack
    return b"".join([pack(len(p) + 1, s) + p for p, s in zip(payloads, severities,
                                                                strict=True)])


def encode_weight(w: float) -> bytes:
    return _F64.pack(w)


def encode_ack(seq: int) -> bytes:
    return bytes([ACK]) + seq.to_bytes(4, "big")


def encode_weight_update(w: float) -> bytes:
    return bytes([WEIGHT]) + _F32.pack(w)


_U32 = 0xFFFFFFFF


class AckWindow:
    """What was sent to one analyzer and not yet acknowledged, in order.

    Messages on a connection are numbered 1, 2, 3 ...; they are sent in chunks, each with a
    tag of the caller's (a receipt). An ACK is cumulative and carries the number mod 2**32 (a
    connection can outlive 4 billion messages: two hours at 600k/s): it means the one number
    within the window that matches it.
    """

    __slots__ = ("acked", "chunks", "next_seq")

    def __init__(self) -> None:
        self.next_seq = 1
        self.acked = 0
        # [first seq, payloads, severities, tag], oldest first
        self.chunks: deque[list[Any]] = deque()

    @property
    def in_flight(self) -> int:
        return self.next_seq - 1 - self.acked

    def sent(self, payloads: list[bytes], severities: bytes, tag: Any) -> None:
        self.chunks.append([self.next_seq, payloads, severities, tag])
        self.next_seq += len(payloads)

    def ack(self, wire: int) -> list[tuple[Any, int]]:
        """Take an ACK; returns (tag, messages) of what it acknowledged (nothing for an old
        or repeated one). AnalyzerProtocolError for an ACK beyond what was sent."""
        ahead = (wire - self.acked) & _U32
        if ahead == 0 or ahead >= 1 << 31:
            return []  # cumulative: an old ACK says nothing new
        if ahead > self.in_flight:
            raise AnalyzerProtocolError(
                "ack_beyond_sent",
                f"ACK {wire} for messages up to {(self.next_seq - 1) & _U32} only")
        seq = self.acked + ahead
        self.acked = seq
        done: list[tuple[Any, int]] = []
        q = self.chunks
        while q:
            first, chunk, sevs, tag = q[0]
            last = first + len(chunk) - 1
            if last <= seq:
                q.popleft()
                done.append((tag, len(chunk)))
                continue
            if first <= seq:
                cut = seq - first + 1
                q[0] = [seq + 1, chunk[cut:], sevs[cut:], tag]
                done.append((tag, cut))
            break
        return done

    def unacked(self) -> list[tuple[list[bytes], bytes, Any]]:
        """Everything not acknowledged (payloads, severities, tag), oldest first; the window
        is empty afterwards (the analyzer is gone: the others get these)."""
        out = [(chunk, sevs, tag) for _, chunk, sevs, tag in self.chunks]
        self.chunks.clear()
        return out
