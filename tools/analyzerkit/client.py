"""The analyzer's connection: the weight it announces, the messages it reads and numbers,
the ACKs and weight updates it sends back."""

from __future__ import annotations

import argparse
import math
import socket
import ssl
import struct
import sys
import time
from typing import Any

from analyzerkit.latency import MIN_TS_NS, TS_DIGITS, TS_TEXT, Latencies, detect_timestamps
from analyzerkit.report import Progress

BUF_BYTES = 1 << 20
MAX_FRAME = 256 << 20          # a length beyond this is a desynchronised stream, not a message
IDLE_ACK = 0.05                # socket timeout: no message for this long flushes pending acks
DRAIN_SECONDS = 0.5
NEVER = -1
NO_CAP = 1 << 62

HEADER = struct.Struct(">IB")
ACK = struct.Struct(">BI")
WEIGHT_UPDATE = struct.Struct(">Bf")
MSG_ACK, MSG_WEIGHT = 0, 1

CONTROL_ESCAPES = {c: f"\\x{c:02x}" for c in range(32)} | {
    10: "\\n", 13: "\\r", 9: "\\t", 127: "\\x7f"}


class ProtocolError(Exception):
    """The server sent something that is not a frame stream."""


class Analyzer:
    def __init__(self, args: argparse.Namespace, host: str, port: int,
                 weight_plan: list[tuple[int, float]], tls: ssl.SSLContext | None) -> None:
        self.args = args
        self.host = host
        self.port = port
        self.target: str = args.target
        self.weight: float = args.weight
        self.plan = weight_plan            # (after N messages, weight), sorted by N
        self.plan_i = 0
        self.ack_every: int = args.ack_every
        # Acks never go past this seq: --no-ack-after freezes the analyzer's progress there.
        self.ack_cap: int = args.no_ack_after if args.no_ack_after is not None else NO_CAP
        self.count: int | None = args.count
        # Whether each --ack-every point gets its own ACK, or the points that fall within one
        # read are covered by a single ACK at the end of that read; see run().
        self.exact_acks = args.delay > 0 or args.verbose
        self.sock: socket.socket | None = None
        self.tls = tls              # --tls: how the connection is wrapped
        self.received = 0
        self.acked = 0
        self.nbytes = 0
        self.severities = [0] * 256
        self.latencies = Latencies()
        self.stop_reason: str | None = None
        self.start = 0.0
        self.end = 0.0
        self.deadline = math.inf

    # -- control messages ---------------------------------------------------------------------

    def send(self, data: bytes) -> bool:
        """sendall that outlasts the 50 ms receive timeout: a send only blocks while logd is
        not reading its socket, which is worth waiting for unless we are stopping anyway.
        False: gave up because of a stop."""
        assert self.sock is not None
        while True:
            try:
                self.sock.sendall(data)
                return True
            except TimeoutError:
                # Nothing of a 5-byte message goes out when the send buffer is full, so
                # retrying cannot duplicate or split it.
                if self.stop_reason is not None:
                    return False

    def ack(self, seq: int) -> None:
        upto = min(seq, self.ack_cap)
        if upto > self.acked and self.send(ACK.pack(MSG_ACK, upto & 0xFFFFFFFF)):  # seq mod 2**32
            self.acked = upto

    def send_weight(self, weight: float) -> None:
        if self.send(WEIGHT_UPDATE.pack(MSG_WEIGHT, weight)):
            self.weight = weight

    def events(self, seq: int) -> int:
        """Everything due after message `seq` was processed; returns the seq of the next event
        (NEVER if none), and sets stop_reason when --count is reached."""
        if (self.exact_acks and seq - self.acked >= self.ack_every) or seq == self.ack_cap:
            self.ack(seq)
        plan = self.plan
        if self.plan_i < len(plan) and plan[self.plan_i][0] <= seq:
            # logd sees the update with everything before it acknowledged, as if the analyzer
            # had finished those messages before deciding to change its weight.
            self.ack(seq)
        while self.plan_i < len(plan) and plan[self.plan_i][0] <= seq:
            self.send_weight(plan[self.plan_i][1])
            self.plan_i += 1
        if self.count is not None and seq >= self.count:
            self.stop_reason = self.stop_reason or "count"
            return NEVER
        due = []
        if self.acked < self.ack_cap:
            if self.exact_acks:
                due.append(self.acked + self.ack_every)
            if seq < self.ack_cap < NO_CAP:
                due.append(self.ack_cap)
        if self.plan_i < len(plan):
            due.append(plan[self.plan_i][0])
        if self.count is not None:
            due.append(self.count)
        return min(due) if due else NEVER

    # -- main loop ------------------------------------------------------------------------------

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port),
                                        timeout=self.args.connect_timeout)
        # Acks are tiny and logd may hold back messages until it sees them: never delay them.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            try:
                # The protocol is the same inside TLS; the handshake is within the timeout.
                sock = self.tls.wrap_socket(sock, server_hostname=self.host)
            except BaseException:
                sock.close()
                raise
        self.sock = sock
        sock.sendall(struct.pack(">d", self.weight))
        sock.settimeout(IDLE_ACK)

    def on_signal(self, signum: int, frame: object) -> None:
        if self.stop_reason is None:
            self.stop_reason = "signal"

    def run(self) -> str:
        """Receive until something ends the run; returns why ("closed", "reset", "count",
        "duration", "signal"). Raises ProtocolError or OSError on a broken stream."""
        args = self.args
        sock = self.sock
        assert sock is not None
        self.start = time.monotonic()
        if args.duration is not None:
            self.deadline = self.start + args.duration
        deadline = self.deadline
        progress = Progress(sys.stderr.isatty() and not args.verbose)
        next_tick = self.start + 1.0

        buf = bytearray(BUF_BYTES)
        mv = memoryview(buf)
        have = 0
        seq = 0
        counts = self.severities
        unpack = HEADER.unpack_from
        recv_into = sock.recv_into
        mono = time.monotonic
        time_ns = time.time_ns
        sleep = time.sleep
        delay: float = args.delay
        verbose: bool = args.verbose
        slow = self.exact_acks
        ack_every = self.ack_every
        detected = False
        lat = False
        needle = TS_TEXT
        nlen = len(needle)
        find = buf.find
        digits = TS_DIGITS.match
        window_max: int | None = None

        stop_at = self.events(0)
        if self.stop_reason is not None:
            return self.stop_reason
        try:
            while self.stop_reason is None:
                try:
                    n = recv_into(mv[have:])
                except TimeoutError:
                    # Nothing for IDLE_ACK seconds: ack the tail so it is not held forever.
                    self.ack(seq)
                    now = mono()
                    if now >= deadline:
                        self.stop_reason = "duration"
                    elif now >= next_tick:
                        next_tick = now + 1.0
                        progress.show(now - self.start, seq, self.acked, window_max)
                        window_max = None
                    continue
                except ConnectionResetError:
                    if have:
                        raise ProtocolError(
                            f"connection reset in the middle of a message ({have} bytes of an "
                            f"incomplete frame after message {seq})") from None
                    return "reset"
                if not n:
                    if have:
                        raise ProtocolError(
                            f"server closed the connection in the middle of a message ({have} "
                            f"bytes of an incomplete frame after message {seq})")
                    return "closed"
                have += n
                now_ns = time_ns()
                if not detected and have >= 5:
                    first_len = HEADER.unpack_from(buf, 0)[0]
                    if have >= 4 + first_len:
                        detected = True
                        lat, needle = detect_timestamps(bytes(buf[5:4 + first_len]))
                        nlen = len(needle)
                lats: list[int] = []
                add = lats.append
                pos = 0
                while have - pos >= 5:
                    length, sev = unpack(buf, pos)
                    end = pos + 4 + length
                    if end > have:
                        break
                    if not length:
                        raise ProtocolError(f"message {seq + 1}: frame length 0 (no severity)")
                    if slow:
                        if self.stop_reason is not None:
                            break
                        if verbose:
                            print(f"{seq + 1} sev={sev} {preview(buf, pos + 5, end)}",
                                  file=sys.stderr)
                        if delay:
                            sleep(delay)
                    seq += 1
                    counts[sev] += 1
                    if lat:
                        i = find(needle, pos + 5, end)
                        if i >= 0:
                            m = digits(buf, i + nlen, end)
                            if m is not None:
                                ts = int(m.group(1))
                                if ts >= MIN_TS_NS:
                                    add(now_ns - ts)
                    pos = end
                    if seq == stop_at:
                        stop_at = self.events(seq)
                        if self.stop_reason is not None:
                            break
                    if slow and mono() >= deadline:
                        self.stop_reason = "duration"
                        break
                self.nbytes += pos
                if not slow and seq - self.acked >= ack_every:
                    # A read delivers up to thousands of messages at once, all processed within
                    # microseconds; one ACK for the lot tells logd the same as one per
                    # --ack-every messages, at a fraction of the syscalls and of logd's work.
                    self.ack(seq)
                self.received = seq
                if lats:
                    self.latencies.add_many(lats)
                    top = max(lats)
                    window_max = top if window_max is None else max(window_max, top)
                rest = have - pos
                if rest and pos:
                    buf[:rest] = buf[pos:have]
                have = rest
                if have >= 4:
                    need = 4 + int.from_bytes(buf[:4], "big")
                    if need > MAX_FRAME:
                        raise ProtocolError(f"message {seq + 1}: frame length {need - 4} is "
                                            f"over {MAX_FRAME} bytes")
                    if need > len(buf):
                        # One message bigger than the buffer: grow to fit it (views must go
                        # first, or the bytearray refuses to resize).
                        mv.release()
                        buf.extend(bytes(need - len(buf)))
                        mv = memoryview(buf)
                        find = buf.find
                now = mono()
                if now >= deadline and self.stop_reason is None:
                    self.stop_reason = "duration"
                if now >= next_tick:
                    next_tick = now + 1.0
                    progress.show(now - self.start, seq, self.acked, window_max)
                    window_max = None
            return self.stop_reason or "signal"
        finally:
            self.received = seq
            self.end = mono()
            progress.clear()
            mv.release()

    def finish(self, reset: bool) -> None:
        """Ack what was processed, then half-close and give logd a moment to read that before
        the socket goes: closing with unread data makes the kernel reset the connection, which
        can drop the last ack still queued for sending."""
        sock = self.sock
        if sock is None:
            return
        try:
            if not reset:
                if self.stop_reason is None:
                    # The server ended the stream; a send that blocks now would block forever.
                    self.stop_reason = "closed"
                self.ack(self.received)
                sock.shutdown(socket.SHUT_WR)
                until = time.monotonic() + DRAIN_SECONDS
                while time.monotonic() < until:
                    try:
                        if not sock.recv(1 << 16):
                            break
                    except TimeoutError:
                        continue
        except OSError:
            pass
        finally:
            sock.close()

    def summary(self) -> dict[str, Any]:
        seconds = max(self.end - self.start, 0.0)
        rec = self.received
        return {
            "id": self.args.id,
            "weight": self.weight,
            "received": rec,
            "acked": self.acked,
            "bytes": self.nbytes,
            "seconds": round(seconds, 6),
            "rate": round(rec / seconds, 3) if seconds > 0 else 0.0,
            "latency_ms": self.latencies.summary(),
            "severities": {str(s): c for s, c in enumerate(self.severities) if c},
            "first_seq": 1 if rec else None,
            "last_seq": rec if rec else None,
            # Seqs are implicit, so on TCP nothing can be missing; kept so that summaries from
            # transports with explicit numbering have the same shape.
            "gaps": 0,
        }


def preview(buf: bytearray, start: int, end: int) -> str:
    head = bytes(buf[start:min(end, start + 80)])
    text = head.decode("utf-8", "backslashreplace").translate(CONTROL_ESCAPES)
    return text + ("..." if end - start > 80 else "")
