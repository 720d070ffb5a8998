"""What emitters send: frames of the emitter port, random payloads, sends cut anywhere."""

from __future__ import annotations

import random
import socket
import struct


def frame(payload: bytes, severity: int = 6) -> bytes:
    """One frame of the emitter port: [u32 length][u8 severity][payload]."""
    return struct.pack(">IB", len(payload) + 1, severity) + payload


def random_payloads(rng: random.Random, n: int, max_len: int = 3000) -> list[bytes]:
    """`n` payloads of printable ASCII (no LF), 0 .. max_len - 1 bytes each."""
    alphabet = bytes(range(32, 127))
    return [bytes(rng.choices(alphabet, k=rng.randrange(0, max_len))) for _ in range(n)]


def send_in_random_chunks(port: int, data: bytes, rng: random.Random) -> None:
    """Send `data` to 127.0.0.1:`port` in writes of random sizes, half-close, and return once
    logd closes the connection: it has read everything."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        pos = 0
        while pos < len(data):
            k = rng.choice((1, 7, 100, 4096, 65536, 300_000))
            s.sendall(data[pos:pos + k])
            pos += k
        s.shutdown(socket.SHUT_WR)
        s.recv(1)  # wait for logd to close: it has read everything
