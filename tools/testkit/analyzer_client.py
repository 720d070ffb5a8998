"""A test analyzer speaking the analyzer port's protocol, in a thread, with knobs for faults."""

from __future__ import annotations

import socket
import ssl
import struct
import threading


class TestAnalyzer:
    __test__ = False  # a helper, not a test class
    """Connects, sends its weight, reads messages and ACKs them (unless told not to)."""

    def __init__(self, port: int, weight: float, ack_every: int = 1,
                 ack: bool = True, keep_payloads: bool = True,
                 tls: ssl.SSLContext | None = None) -> None:
        sock = socket.create_connection(("127.0.0.1", port))
        if tls is not None:
            try:
                sock = tls.wrap_socket(sock, server_hostname="127.0.0.1")
            except OSError:
                sock.close()
                raise
        self.sock = sock
        self.sock.settimeout(0.05)
        self.sock.sendall(struct.pack(">d", weight))
        self.ack_every = ack_every
        self.ack = ack
        self.keep_payloads = keep_payloads
        self.payloads: list[bytes] = []
        self.count = 0
        self.acked = 0
        self.closed_by_server = False
        self._stop = threading.Event()
        # Guards count and payloads; notified when they grow and when the server closes.
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        buf = b""
        try:
            while not self._stop.is_set():
                try:
                    data = self.sock.recv(1 << 20)
                except TimeoutError:
                    self._send_ack(force=True)
                    continue
                if not data:
                    self._closed()
                    return
                buf += data
                off = 0
                got = []
                while len(buf) - off >= 4:
                    length = int.from_bytes(buf[off:off + 4], "big")
                    if len(buf) - off - 4 < length:
                        break
                    got.append(buf[off + 5:off + 4 + length])
                    off += 4 + length
                buf = buf[off:]
                with self._changed:
                    if self.keep_payloads:
                        self.payloads.extend(got)
                    self.count += len(got)
                    self._changed.notify_all()
                self._send_ack(force=False)
        except OSError:
            self._closed()

    def _closed(self) -> None:
        with self._changed:
            self.closed_by_server = True
            self._changed.notify_all()

    def _send_ack(self, force: bool) -> None:
        if not self.ack or self.count == self.acked:
            return
        if force or self.count - self.acked >= self.ack_every:
            seq = self.count
            try:
                self.sock.sendall(struct.pack(">BI", 0, seq & 0xFFFFFFFF))
            except OSError:
                return
            self.acked = seq

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def set_weight(self, w: float) -> None:
        self.sock.sendall(struct.pack(">Bf", 1, w))

    def stop_acking(self) -> None:
        self.ack = False

    def wait_count(self, n: int, timeout: float = 30) -> None:
        """Until at least `n` messages have arrived."""
        with self._changed:
            assert self._changed.wait_for(lambda: self.count >= n, timeout), \
                f"analyzer got {self.count}/{n}"

    def wait_closed(self, timeout: float = 10) -> None:
        """Until logd has closed this connection."""
        with self._changed:
            assert self._changed.wait_for(lambda: self.closed_by_server, timeout), \
                "logd kept the connection open"

    def close(self, abort: bool = False) -> None:
        self._stop.set()
        if abort:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._thread.join(5)
        self.sock.close()
