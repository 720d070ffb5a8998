"""The syslog listener: RFC 5424 and RFC 3164 messages over TCP (LF or octet-counted) or UDP.

A batch of syslog messages keeps its raw bytes, like the emitter port's lines; its payload
form is "syslog" (logd.record), so its fields (host, app, facility, level, sd, ...) are
parsed once per batch, only when a route, a path template or an output asks for them
(logd.syslog.parse). Severities come from the PRI without any parsing beyond it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from logd.component import BuildContext, Listener
from logd.config import (
    component_name,
    nested,
    one_of,
    setting,
    to_address,
    to_bool,
    to_duration,
    to_int,
    to_size,
)
from logd.tls import TlsConfig

SYSLOG = "syslog"  # the payload form of the batches this listener makes
_COUNT_HEADER = 12  # an octet count of up to 10 digits and its space, held with a message


@dataclass(frozen=True)
class SyslogListenerConfig:
    type: str = setting("syslog", one_of("syslog"))
    transport: str = setting("tcp", one_of("tcp", "udp"),
                             "tcp: LF-delimited or octet-counted (RFC 6587), told per "
                             "connection; udp: one message per datagram")
    address: tuple[str, int] = setting(("127.0.0.1", 5514), to_address,
                                       "host:port to listen on (loopback unless opened)")
    max_message_bytes: int = setting(64 * 1024, to_size(lo=64),
                                     "a longer message is cut to this size and counted "
                                     "(octet-counted: a longer count closes the connection)")
    max_connections: int = setting(10000, to_int(1), "tcp: connections beyond it are refused")
    idle_timeout: float = setting(0.0, to_duration,
                                  "tcp: close connections silent this long (0: never)")
    keepalive: bool = setting(True, to_bool, "tcp: keepalive, to find half-open connections")
    reuse_port: bool = setting(False, to_bool,
                               "SO_REUSEPORT: logd processes with it on share the address")
    max_pending_bytes: int = setting(256 * 1024**2, to_size(lo=2),
                                     "tcp: incomplete messages held across all connections; "
                                     "beyond it the connections holding most are closed")
    receive_buffer: int = setting(8 * 1024**2, to_size(lo=4096),
                                  "udp: the socket's receive buffer (SO_RCVBUF): datagrams "
                                  "wait there while logd is busy; beyond it the kernel drops "
                                  "them (counted as kernel_drops)")
    tls: TlsConfig | None = nested(TlsConfig, lambda: None,  # noqa: RUF009
                                   "tcp: cert, key and optional client_ca: TLS; none: "
                                   "plaintext")
    name: str = component_name()

    # What the emitter port's connection code reads (logd.listeners.tcp).
    @property
    def framing(self) -> str:
        return "detected per connection"

    @property
    def max_frame_bytes(self) -> int:
        return self.max_message_bytes

    def validate(self) -> list[tuple[str, str]]:
        if self.transport == "udp" and self.tls is not None:
            return [("tls", 'TLS needs transport = "tcp" (there is no TLS over UDP here)')]
        if self.max_pending_bytes < self.max_message_bytes + _COUNT_HEADER:
            return [("max_pending_bytes", "must be at least max_message_bytes + "
                     f"{_COUNT_HEADER} ({self.max_message_bytes + _COUNT_HEADER}), or no "
                     "message that long could complete")]
        return []


def syslog_listener(cfg: SyslogListenerConfig, ctx: BuildContext | None = None) -> Listener:
    """The listener for `cfg.transport` (what logd.registry builds for type = "syslog")."""
    listener: Any
    if cfg.transport == "udp":
        from logd.listeners.syslog_udp import SyslogUdpListener
        listener = SyslogUdpListener(cfg, ctx)
    else:
        from logd.listeners.syslog_tcp import SyslogTcpListener
        listener = SyslogTcpListener(cfg, ctx)
    return listener
