"""Syslog over UDP: one message per datagram, read in batches straight from the socket.

The loop says when the socket is readable; one call then reads every datagram queued (up to
a bound), and they go to the router as one batch. UDP cannot push back: while a buffer this
listener feeds is full under `when_full = "block"`, logd stops reading, datagrams wait in
the socket's receive buffer, and what does not fit there the kernel drops. Those drops are
read from the kernel's counters for this socket (/proc/net/udp, udp6) and reported as
`kernel_drops`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import Counter
from typing import Any

from logd.backpressure import FullBuffers
from logd.component import BuildContext, Listener, StartError
from logd.framing import invalid_utf8
from logd.listeners.syslog import SYSLOG, SyslogListenerConfig
from logd.logsetup import RateLimitedLog
from logd.record import Batch
from logd.stats import SyslogListenerStats
from logd.syslog.framing import payloads_without_pri

log = logging.getLogger("logd.syslog")

_READS_PER_WAKE = 4096  # datagrams taken at once, so one busy socket cannot starve the loop


class SyslogUdpListener(Listener):
    def __init__(self, cfg: SyslogListenerConfig, ctx: BuildContext | None = None) -> None:
        super().__init__(cfg.name)
        self.cfg = cfg
        self.router = (ctx or BuildContext()).the_router()
        self.sock: socket.socket | None = None
        self.bound: tuple[str, int] | None = None
        self.records = 0
        self.bytes_in = 0
        self.pauses = 0
        self.errors: Counter[str] = Counter()
        self.ratelog = RateLimitedLog(log)
        self.blocked_by = FullBuffers(self._start_reading)
        self._reading = False
        self._inode = 0

    async def start(self) -> None:
        host, port = self.cfg.address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.cfg.reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            _set_receive_buffer(sock, self.cfg.receive_buffer)
            sock.bind((host or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))
        except OSError as e:
            sock.close()
            raise StartError(f"listeners.{self.name}: cannot listen on {host}:{port} (udp): "
                             f"{e.strerror or e}") from None
        sock.setblocking(False)
        self.sock = sock
        name = sock.getsockname()
        self.bound = (name[0], name[1])
        self._inode = os.fstat(sock.fileno()).st_ino
        self._start_reading()
        log.info("listening", extra={"listener": self.name, "type": "syslog",
                                     "transport": "udp", "host": name[0], "port": name[1],
                                     "receive_buffer": sock.getsockopt(socket.SOL_SOCKET,
                                                                       socket.SO_RCVBUF)})

    def _start_reading(self) -> None:
        if not self._reading and self.sock is not None:
            asyncio.get_running_loop().add_reader(self.sock.fileno(), self._readable)
            self._reading = True

    def _stop_reading(self) -> None:
        if self._reading and self.sock is not None:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self._reading = False

    def _readable(self) -> None:
        sock = self.sock
        if sock is None:
            return
        limit = self.cfg.max_message_bytes
        recv = sock.recv
        payloads: list[bytes] = []
        append = payloads.append
        try:
            for _ in range(_READS_PER_WAKE):
                # Two bytes more: a datagram of the limit plus its trailing LF comes whole,
                # and any longer one shows as cut (longer than the limit plus one).
                append(recv(limit + 2))
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as e:
            self.errors["receive_error"] += 1
            self.ratelog.warning("receive_error", "reading the socket failed",
                                 listener=self.name, error=str(e))
        if payloads:
            self._deliver(payloads)

    def _deliver(self, payloads: list[bytes]) -> None:
        limit = self.cfg.max_message_bytes
        joined = b"".join(payloads)  # one C-level look at all of them, for LFs and UTF-8
        self.bytes_in += len(joined)
        if b"\n" in joined:
            # Senders' templates often end in LF; a message is one line in logd's files.
            # Only a datagram that came whole ends in its own LF: in one cut by recv, the
            # last byte is the middle of the message, and it must stay over the limit to
            # be counted as oversized.
            whole = limit + 1
            payloads = [p[:-1] if p[-1:] == b"\n" and len(p) <= whole else p
                        for p in payloads]
        nbytes = sum(map(len, payloads))
        if max(map(len, payloads)) > limit:
            cut = [p for p in payloads if len(p) > limit]
            payloads = [p[:limit] for p in payloads]
            nbytes = sum(map(len, payloads))
            self.errors["oversized"] += len(cut)
            self.ratelog.warning("oversized", "datagrams over max_message_bytes: cut to it",
                                 listener=self.name, records=len(cut),
                                 max_message_bytes=limit)
        self.records += len(payloads)
        unparsed = payloads_without_pri(payloads)
        if unparsed:
            self.errors["unparsed"] += unparsed
            self.ratelog.warning("unparsed", "messages without a valid <PRI>: kept whole as "
                                 "the message", listener=self.name, records=unparsed)
        bad = invalid_utf8(joined, lambda: payloads)
        if bad:
            self.errors["invalid_utf8"] += bad
            self.ratelog.warning("invalid_utf8", "records with invalid UTF-8 (kept as bytes)",
                                 listener=self.name, records=bad)
        batch = Batch(payloads, None, self.name, time.time(), nbytes, form=SYSLOG)
        blocked = self.router.dispatch(batch)
        if blocked:
            self._pause(blocked)

    def _pause(self, blocked: list[Any]) -> None:
        """A buffer this listener feeds is full (when_full = block): stop reading; the
        kernel's receive buffer holds what comes meanwhile."""
        if not self.blocked_by.hold(blocked):
            return
        self.pauses += 1
        self._stop_reading()

    def routes_changed(self) -> None:
        self.blocked_by.routes_changed()

    async def drain(self, deadline: float) -> None:
        """Stop reading; what is queued in the socket now is read once more and kept."""
        if self.sock is not None and not self.blocked_by:
            self._readable()
        self._stop_reading()
        self.blocked_by.cancel()

    async def close(self) -> None:
        if self.sock is not None:
            self._stop_reading()
            self.sock.close()
            self.sock = None

    def kernel_drops(self) -> int | None:
        """Datagrams the kernel dropped for this socket (its receive buffer was full), from
        /proc/net/udp or udp6; None where the kernel does not say."""
        if not self._inode:
            return None
        inode = str(self._inode)
        for path in ("/proc/net/udp", "/proc/net/udp6"):
            try:
                with open(path, "rb") as f:
                    lines = f.read().decode("ascii", "replace").splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                cols = line.split()
                if len(cols) >= 13 and cols[9] == inode:
                    try:
                        return int(cols[-1])
                    except ValueError:
                        return None
        return None

    def stats(self) -> SyslogListenerStats:
        errors = dict(self.errors)
        drops = self.kernel_drops()
        if drops:
            errors["kernel_drops"] = drops
        return {
            "type": SYSLOG,
            "transport": "udp",
            "connections": 0,
            "accepted": 0,
            "records": self.records,
            "bytes": self.bytes_in,
            "pauses": self.pauses,
            "errors": errors,
        }


def _set_receive_buffer(sock: socket.socket, size: int) -> None:
    """SO_RCVBUF of `size`; as root beyond net.core.rmem_max (SO_RCVBUFFORCE), else as much
    as the kernel allows."""
    force = getattr(socket, "SO_RCVBUFFORCE", None)
    if force is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
            return
        except OSError:
            pass
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
