"""A worker process: opens its connections before the start, then runs one sender thread
per connection until they are done or the parent says stop."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import threading
from typing import Any

from loadgenkit.config import Config
from loadgenkit.http_sender import HttpSender
from loadgenkit.payloads import make_filler
from loadgenkit.shared import (
    NFIELDS,
    ST_STATE,
    STATE_FAILED,
    STATE_READY,
    Shared,
)
from loadgenkit.tcp_sender import Sender, UdpSender
from toolargs import os_reason

CONNECT_TIMEOUT = 5.0
HTTP_TIMEOUT = 60.0             # per socket operation; no answer by then is a connection error
                                # (beyond logd's default full_wait of 30 s)


def open_connection(cfg: Config) -> socket.socket | http.client.HTTPConnection:
    """One sender's connection, opened before the start so that a bad --target fails at once."""
    if cfg.http:
        if cfg.tls is not None:
            conn = http.client.HTTPSConnection(cfg.host, cfg.port, timeout=CONNECT_TIMEOUT,
                                               context=cfg.tls)
        else:
            conn = http.client.HTTPConnection(cfg.host, cfg.port, timeout=CONNECT_TIMEOUT)
        conn.connect()
        conn.sock.settimeout(HTTP_TIMEOUT)
        conn.timeout = HTTP_TIMEOUT     # for the reconnects http.client makes by itself
        return conn
    if cfg.scheme == "udp":
        family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
        udp = socket.socket(family, socket.SOCK_DGRAM)
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        udp.connect((cfg.host, cfg.port))
        return udp
    sock = socket.create_connection((cfg.host, cfg.port), timeout=CONNECT_TIMEOUT)
    # Small paced writes must leave at once, or --timestamps latency includes Nagle delay.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if cfg.tls is not None:
        try:
            sock = cfg.tls.wrap_socket(sock, server_hostname=cfg.host)  # within the timeout
        except BaseException:
            sock.close()
            raise
    sock.settimeout(None)
    return sock


def worker_main(cfg: Config, worker: int, shared: Shared) -> None:
    # The parent owns SIGINT/SIGTERM and tells workers to stop through shared memory; a
    # terminal's Ctrl-C reaches the whole process group.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = os.getppid()
    st = shared.status
    socks: list[Any] = []       # socket.socket, or http.client.HTTPConnection in http mode
    for conn in range(cfg.connections):
        slot = (worker * cfg.connections + conn) * NFIELDS
        try:
            socks.append(open_connection(cfg))
        except OSError as exc:
            shared.messages.put(f"cannot connect to {cfg.target}: {os_reason(exc)}")
            st[slot + ST_STATE] = STATE_FAILED
            for s in socks:
                s.close()
            return
    filler = make_filler(cfg.seed, cfg.size)
    senders: list[Sender | HttpSender]
    if cfg.http:
        senders = [HttpSender(cfg, shared, worker, c, s, filler) for c, s in enumerate(socks)]
    else:
        kind = UdpSender if cfg.scheme == "udp" else Sender
        senders = [kind(cfg, shared, worker, c, s, filler) for c, s in enumerate(socks)]
    for s in senders:
        st[s.slot + ST_STATE] = STATE_READY
    while not shared.go.wait(0.2):
        if os.getppid() != parent:
            return
    if shared.stop.value:
        for s in socks:
            s.close()
        return
    threads = [threading.Thread(target=s.run, name=f"conn-{s.name}", daemon=True)
               for s in senders]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.5)
            if os.getppid() != parent:
                shared.stop.value = 2
