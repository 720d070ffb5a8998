"""One tcp:// connection (or udp:// socket): sends its share of the schedule from pre-built
blocks."""

from __future__ import annotations

import math
import socket
import ssl
import sys
import time

from loadgenkit.config import DRAIN_SECONDS, Config
from loadgenkit.payloads import Block, Builder
from loadgenkit.schedule import MAX_TICK, MIN_TICK, make_schedule, share
from loadgenkit.shared import (
    NFIELDS,
    ST_BYTES,
    ST_END_US,
    ST_ERRORS,
    ST_LAG_US,
    ST_MAXLAG_US,
    ST_SENT,
    ST_STATE,
    STATE_DONE,
    Shared,
)
from toolargs import os_reason

BLOCK_BYTES = 1 << 20          # one sendall per block keeps syscalls per record negligible
POOL_BYTES = 16 << 20          # cycled pool per worker, shared out over its connections


class Sender:
    """One connection: its share of the schedule and of --count, and its pre-built records."""

    # The clock the schedule runs on (time.monotonic is system-wide: the parent's start time
    # means the same here); tests drive a sender on a fake one.
    monotonic = staticmethod(time.monotonic)
    sleep = staticmethod(time.sleep)

    def __init__(self, cfg: Config, shared: Shared, worker: int, conn: int,
                 sock: socket.socket, filler: str) -> None:
        self.cfg = cfg
        self.shared = shared
        self.sock = sock
        self.name = f"{worker}-{conn}"
        self.builder = Builder(cfg, worker, conn, filler)
        self.index = self.builder.index
        self.slot = self.index * NFIELDS
        self.limit = (share(cfg.count, cfg.total_connections, self.index)
                      if cfg.count is not None else None)
        self.per_block = max(1, BLOCK_BYTES // self.builder.sample_size())
        self.blocks: list[Block] = []
        if cfg.mode == "exact":
            assert self.limit is not None
            self.blocks = [self.builder.block(s, min(self.per_block, self.limit - s))
                           for s in range(0, self.limit, self.per_block)]
        elif cfg.mode == "cycle":
            nblocks = max(1, POOL_BYTES // cfg.connections // BLOCK_BYTES)
            self.blocks = [self.builder.block(b * self.per_block, self.per_block)
                           for b in range(nblocks)]

    def run(self) -> None:
        st = self.shared.status
        try:
            self.send_loop()
        except OSError as exc:
            st[self.slot + ST_ERRORS] += 1
            self.shared.messages.put(
                f"connection {self.name} to {self.cfg.target}: {os_reason(exc)} "
                f"after {st[self.slot + ST_SENT]} records")
            self.sock.close()
            st[self.slot + ST_STATE] = STATE_DONE
            return
        self.drain()
        st[self.slot + ST_STATE] = STATE_DONE

    def send_loop(self) -> None:
        cfg = self.cfg
        st = self.shared.status
        slot = self.slot
        stop = self.shared.stop
        start = self.shared.start.value
        wall0 = self.shared.wall_ns.value
        sched = make_schedule(cfg)
        n = cfg.total_connections
        i = self.index
        later = n - 1 - i
        limit = self.limit if self.limit is not None else sys.maxsize
        duration = cfg.duration if cfg.duration is not None else math.inf
        sendall = self.send
        mono = self.monotonic
        sleep = self.sleep
        blocks = self.blocks
        builder = self.builder
        cap = self.per_block
        bi = ri = 0
        sent = nbytes = 0
        max_lag = 0.0
        wake_at = 0.0
        lead = start - mono()
        if lead > 0:
            sleep(lead)
        while not stop.value:
            now = mono() - start
            if sched is None:
                if now >= duration:
                    break
                todo = limit - sent
                if todo <= 0:
                    break
                lag = 0.0
            else:
                if now < wake_at:
                    sleep(min(wake_at - now, MAX_TICK))
                    continue
                todo = min((int(sched.due(min(now, duration)) + 1e-7) + later) // n,
                           limit) - sent
                if todo <= 0:
                    if sent >= limit or now >= duration:
                        break
                    wake_at = min(max(sched.time_of(sent * n + i + 1),
                                      (now // MIN_TICK + 1) * MIN_TICK), duration)
                    continue
                lag = max(now - sched.time_of(sent * n + i + 1), 0.0)
            if blocks:
                blk = blocks[bi]
                take = min(todo, blk.count - ri)
                a = blk.offset(ri)
                b = blk.offset(ri + take)
                sendall(blk, ri, take, a, b)
                ri += take
                if ri == blk.count:
                    ri = 0
                    bi = (bi + 1) % len(blocks)
            else:
                take = min(todo, cap)
                stamps = None
                if cfg.timestamps:
                    if sched is None:
                        stamps = [time.time_ns()] * take
                    else:
                        tof = sched.time_of
                        stamps = [wall0 + int(tof(s * n + i + 1) * 1e9)
                                  for s in range(sent, sent + take)]
                blk = builder.block(sent, take, stamps)
                b = len(blk.data)
                a = 0
                sendall(blk, 0, take, a, b)
            sent += take
            nbytes += b - a
            st[slot + ST_SENT] = sent
            st[slot + ST_BYTES] = nbytes
            st[slot + ST_LAG_US] = int(lag * 1e6)
            if lag > max_lag:
                max_lag = lag
                st[slot + ST_MAXLAG_US] = int(lag * 1e6)
            st[slot + ST_END_US] = int((mono() - start) * 1e6)
            if take == todo:
                # Caught up: let ~1 ms of records accumulate instead of spinning on tiny writes.
                # Ticks sit on a fixed grid so that sleep overshoot does not add up into lag.
                wake_at = min((now // MIN_TICK + 1) * MIN_TICK, duration)
        st[slot + ST_END_US] = int(min(mono() - start, duration) * 1e6)

    def send(self, blk: Block, first: int, count: int, a: int, b: int) -> None:
        """Records first .. first + count of a block, bytes a..b of it: one write."""
        self.sock.sendall(blk.data[a:b])

    def drain(self) -> None:
        """Half-close and wait for the server's EOF, so everything sent was read by the server
        before the run counts as done."""
        sock = self.sock
        st = self.shared.status
        deadline = time.monotonic() + DRAIN_SECONDS
        try:
            if isinstance(sock, ssl.SSLSocket) and not self.close_tls(sock, deadline):
                return
            sock.shutdown(socket.SHUT_WR)
            while self.shared.stop.value < 2:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                sock.settimeout(min(left, 0.2))
                try:
                    if not sock.recv(65536):
                        break
                except TimeoutError:
                    continue
        except OSError as exc:
            st[self.slot + ST_ERRORS] += 1
            self.shared.messages.put(
                f"connection {self.name} to {self.cfg.target}: {os_reason(exc)} "
                "while waiting for the server to read everything")
        finally:
            sock.close()

    def close_tls(self, sock: ssl.SSLSocket, deadline: float) -> bool:
        """Send TLS close_notify and wait for the server's: a bare FIN would not tell it that
        the stream ended whole, and it answers only once it has read everything before.
        False when the deadline or a second stop signal came first."""
        while self.shared.stop.value < 2:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(min(left, 0.2))
            try:
                sock.unwrap()
                return True
            except TimeoutError:
                continue
        return False


class UdpSender(Sender):
    """udp://: each record is a datagram of its own (syslog over UDP)."""

    def send(self, blk: Block, first: int, count: int, a: int, b: int) -> None:
        send = self.sock.send
        data = blk.data
        offset = blk.offset
        start = a
        for k in range(first + 1, first + count + 1):
            stop = offset(k)
            try:
                send(data[start:stop])
            except ConnectionRefusedError:
                # An ICMP port unreachable for an earlier datagram: nobody listens (yet).
                send(data[start:stop])
            start = stop

    def drain(self) -> None:
        """Nothing tells a UDP sender what was read: done once sent."""
        self.sock.close()
