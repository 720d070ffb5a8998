"""Syslog over TCP: the emitter port's connection handling (flow control, TLS, bounds on
pending bytes, drain), with syslog's framings told apart per connection (RFC 6587)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from logd.framing import FramingError
from logd.listeners.syslog import SYSLOG, SyslogListenerConfig
from logd.listeners.tcp import TcpListener, _Connection
from logd.record import Batch
from logd.stats import SyslogListenerStats
from logd.syslog.framing import (
    OctetCountDecoder,
    SyslogLineDecoder,
    lines_without_pri,
    octet_counted,
    payloads_without_pri,
)

if TYPE_CHECKING:
    from logd.component import BuildContext


class _SyslogConnection(_Connection):
    __slots__ = ("stream",)

    def __init__(self, listener: TcpListener) -> None:
        super().__init__(listener)
        # Chosen by the first byte the peer sends.
        self.stream: SyslogLineDecoder | OctetCountDecoder | None = None

    def data_received(self, data: bytes) -> None:
        lst = self.listener
        lst.bytes_in += len(data)
        self.last_data = time.monotonic()
        stream = self.stream
        if stream is None:
            if not data:
                return
            limit = lst.cfg.max_frame_bytes
            stream = self.stream = (OctetCountDecoder(limit) if octet_counted(data)
                                    else SyslogLineDecoder(limit))
        try:
            if isinstance(stream, SyslogLineDecoder):
                block, count = stream.feed(data)
                if stream.cut:
                    self._count_cut(stream.cut)
                    stream.cut = 0
                if not count:
                    return
                batch = Batch.from_lines(block, count, lst.name, time.time(), SYSLOG)
                unparsed = lines_without_pri(block, count)
            else:
                payloads = stream.feed(data)
                if not payloads:
                    return
                batch, block = self._batch(payloads)
                unparsed = payloads_without_pri(payloads)
        except FramingError as e:
            if e.frames is not None and e.frames[0]:
                self._deliver_messages(e.frames[0])
            self._protocol_error(e)
            return
        finally:
            self._account_held()
        self._deliver_syslog(batch, block, unparsed)

    def _batch(self, payloads: list[bytes]) -> tuple[Batch, bytes]:
        # The records joined: what the UTF-8 check scans in one pass.
        block = b"\n".join(payloads)
        batch = Batch(payloads, None, self.listener.name, time.time(),
                      len(block) - len(payloads) + 1, form=SYSLOG)
        return batch, block

    def _deliver_messages(self, payloads: list[bytes]) -> None:
        batch, block = self._batch(payloads)
        self._deliver_syslog(batch, block, payloads_without_pri(payloads))

    def _deliver_syslog(self, batch: Batch, block: bytes, unparsed: int) -> None:
        if unparsed:
            lst = self.listener
            lst.errors["unparsed"] += unparsed
            lst.ratelog.warning("unparsed", "messages without a valid <PRI>: kept whole as "
                                "the message", listener=lst.name, **self.who,
                                records=unparsed)
        self._deliver(batch, block)

    def _count_cut(self, n: int) -> None:
        lst = self.listener
        lst.errors["oversized"] += n
        lst.ratelog.warning("oversized", "messages over max_message_bytes: cut to it",
                            listener=lst.name, **self.who, records=n,
                            max_message_bytes=lst.cfg.max_frame_bytes)

    def _account_held(self) -> None:
        lst = self.listener
        held = self.stream.pending if self.stream is not None else 0
        if held != self.held:
            lst.pending_bytes += held - self.held
            self.held = held
            if lst.pending_bytes > lst.cfg.max_pending_bytes:
                lst.shed_pending()

    def deliver_unterminated_line(self) -> None:
        """What the peer sent last without its end (at EOF, or when logd stops): kept."""
        stream = self.stream
        if isinstance(stream, SyslogLineDecoder):
            block = stream.finish()
            if block:
                self._deliver_syslog(Batch.from_lines(block, 1, self.listener.name,
                                                      time.time(), SYSLOG),
                                     block, lines_without_pri(block, 1))
        elif isinstance(stream, OctetCountDecoder):
            partial = stream.finish()
            if partial is not None:
                lst = self.listener
                lst.errors["truncated"] += 1
                lst.ratelog.warning("truncated", "connection closed inside an octet-counted "
                                    "message; kept as far as it came", listener=lst.name,
                                    **self.who, bytes=len(partial))
                self._deliver_messages([partial])
        self._account_held()

    def eof_received(self) -> bool:
        self.deliver_unterminated_line()
        return False


class SyslogTcpListener(TcpListener):
    protocol = _SyslogConnection

    def __init__(self, cfg: SyslogListenerConfig, ctx: BuildContext | None = None) -> None:
        # The emitter port's code reads the keys both configs have, and framing (a property).
        super().__init__(cfg, ctx)  # type: ignore[arg-type]

    def stats(self) -> SyslogListenerStats:
        out: SyslogListenerStats = {**super().stats(), "type": SYSLOG, "transport": "tcp"}
        return out
