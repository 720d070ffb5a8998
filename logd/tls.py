"""TLS on the TCP-based listeners: the `tls = { ... }` table, the server side context, and
the TLS layer of the emitter and analyzer ports.

The protocols inside TLS are unchanged (frames, lines, the analyzer protocol, HTTP). With
`client_ca`, a client proves who it is with a certificate that CA signed; its subject CN is
logged with the connection.

Event loops say nothing when a handshake fails (uvloop and asyncio log it only in debug
mode), so every connection's SSLObject reports how its handshake ended: failures are counted
by the listener and logged rate-limited, one line each, never as a traceback.

The emitter and analyzer ports do TLS in `TlsProtocol` rather than with the event loop's:
uvloop discards what it has read from a connection but not yet handed over when the
client's FIN arrives while the listener has paused reading it (MagicStack/uvloop#661), and
the emitter port pauses reading whenever a `block` buffer is full. Here reading pauses at
the socket, so the kernel keeps what the listener has not read, as without TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import ssl
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import MISSING, dataclass
from typing import Any

from logd.component import StartError
from logd.config import setting, to_nonempty_str, to_str
from logd.logsetup import RateLimitedLog

log = logging.getLogger("logd.tls")

# A client that has not finished its handshake by then is dropped (and counted): a silent or
# slow connection must not hold a slot for long.
HANDSHAKE_TIMEOUT = 10.0


@dataclass(frozen=True)
class TlsConfig:
    cert: str = setting(MISSING, to_nonempty_str,
                        "PEM certificate chain the listener presents, its own first")
    key: str = setting(MISSING, to_nonempty_str, "PEM private key of `cert`, unencrypted")
    client_ca: str = setting("", to_str,
                             "PEM CA certificates; when set, clients must present a "
                             "certificate one of them signed")


class TlsError(Exception):
    """A certificate, key or CA file that cannot be used; the message names the key path."""


# (reason code, what it means, the client's address when known)
HandshakeErrorHandler = Callable[[str, str, str | None], None]


class ServerTls:
    """The server side SSLContext of one listener, built from its TlsConfig.

    `key` is the listener's key path ("listeners.emitters"), for messages. Files that cannot
    be used at construction are a StartError naming the key and the reason. `reload()` reads
    the files again into a new context: handshakes that start later use it (certificate,
    key and trusted client CAs alike), connections already open keep theirs.
    """

    def __init__(self, cfg: TlsConfig, key: str,
                 on_handshake_error: HandshakeErrorHandler | None = None) -> None:
        self.cfg = cfg
        self.key = key
        self.on_handshake_error = on_handshake_error
        self.handshake_errors = 0
        self.fingerprint = ""  # SHA-256 of the certificate presented, as openssl prints it
        # The context servers are given. Each handshake moves to the context of the latest
        # load (the SNI callback runs for every ClientHello, with or without SNI): a load
        # builds a context of its own, so a CA removed from client_ca is forgotten, which a
        # live context cannot do.
        self.context = _new_context(cfg)
        self.context.sslobject_class = type("ReportingSSLObject", (_ReportingSSLObject,),
                                            {"_tls": self})
        self.context.sni_callback = self._use_current
        if cfg.client_ca:
            # Resumption from the server's session cache only: a session refused below is
            # dropped from it (its connection ends unshut), so the client's next try is a
            # full handshake; a ticket would be offered, and refused, until it expires (2 h).
            self.context.options |= ssl.OP_NO_TICKET
        self._current = self.context
        self._revoked_at: float | None = None  # monotonic: the latest load that removed a CA
        self._trusted: set[bytes] = set()  # client CA certificates (DER) of the latest load
        self._handshakes: dict[weakref.ref[Any], float] = {}  # in progress: started at
        self._loop: asyncio.AbstractEventLoop | None = None
        try:
            self._load()
        except TlsError as e:
            raise StartError(str(e)) from None

    def reload(self) -> None:
        """Read the files again. Raises TlsError naming the key and the reason, and then the
        context is unchanged: the certificate in use stays."""
        self._load()

    # -- loading --

    def _load(self) -> None:
        cert_pem = self._read("cert")
        key_pem = self._read("key")
        ca_pem = self._read("client_ca") if self.cfg.client_ca else None
        certs = _pem_certificates(cert_pem)
        if not certs:
            raise TlsError(f"{self.key}.tls.cert: {self.cfg.cert} holds no PEM certificate")
        if b"PRIVATE KEY-----" not in key_pem:
            raise TlsError(f"{self.key}.tls.key: {self.cfg.key} holds no PEM private key")
        cas: list[bytes] = []
        if ca_pem is not None:
            cas = _pem_certificates(ca_pem)
            if not cas:
                raise TlsError(f"{self.key}.tls.client_ca: {self.cfg.client_ca} holds no PEM "
                               "certificate")
        # A cert and key are renewed as two files: a pair that does not fit (or a CA file
        # that does not load) fails here, on a context no handshake uses yet, and the one in
        # use stays.
        fresh = _new_context(self.cfg)
        self._apply(fresh, cert_pem, key_pem, cas)
        if self._current is self.context:
            # The first load: the context servers hold serves as it is, should a handshake
            # ever not reach the callback.
            self._apply(self.context, cert_pem, key_pem, cas)
        self._current = fresh
        self.fingerprint = ":".join(f"{b:02X}" for b in hashlib.sha256(certs[0]).digest())
        removed = self._trusted - set(cas)
        if removed:  # only a CA taken out makes sessions from before unsafe
            self._revoked_at = time.monotonic()
        self._trusted = set(cas)
        log.info("tls certificate loaded", extra={
            "key": f"{self.key}.tls", "cert": self.cfg.cert, "fingerprint": self.fingerprint,
            "client_ca": self.cfg.client_ca or None})
        if removed:
            log.info("client CA certificates removed from client_ca: no longer trusted by "
                     "new connections", extra={"key": f"{self.key}.tls.client_ca",
                                               "file": self.cfg.client_ca,
                                               "certificates": len(removed)})

    def _use_current(self, sslobj: Any, server_name: str | None,
                     ctx: ssl.SSLContext) -> None:
        if self._current is not ctx:
            sslobj.context = self._current

    def _read(self, name: str) -> bytes:
        path = getattr(self.cfg, name)
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as e:
            raise TlsError(f"{self.key}.tls.{name}: cannot read {path}: "
                           f"{e.strerror or e}") from None

    def _apply(self, ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes,
               cas: list[bytes]) -> None:
        cfg = self.cfg
        with _memory_file(cert_pem, cfg.cert) as cert_path, \
                _memory_file(key_pem, cfg.key) as key_path:
            try:
                ctx.load_cert_chain(cert_path, key_path, password=_no_password)
            except _EncryptedKey:
                raise TlsError(f"{self.key}.tls.key: {cfg.key} is encrypted; logd needs an "
                               "unencrypted key (readable by logd only)") from None
            except ssl.SSLError as e:
                if e.reason == "KEY_VALUES_MISMATCH":
                    raise TlsError(f"{self.key}.tls.key: {cfg.key} does not match the "
                                   f"certificate in {cfg.cert}") from None
                if not _parses(_pem_certificates(cert_pem)[0]):
                    raise TlsError(f"{self.key}.tls.cert: {cfg.cert}: not a valid "
                                   f"certificate ({_reason(e)})") from None
                raise TlsError(f"{self.key}.tls.key: {cfg.key}: not a valid private key "
                               f"({_reason(e)})") from None
            except OSError as e:
                raise TlsError(f"{self.key}.tls: cannot load {cfg.cert} and {cfg.key}: "
                               f"{e.strerror or e}") from None
        if cas:
            try:
                ctx.load_verify_locations(cadata=b"".join(cas))
            except ssl.SSLError as e:
                raise TlsError(f"{self.key}.tls.client_ca: {cfg.client_ca}: not valid "
                               f"certificates ({_reason(e)})") from None

    # -- handshakes --

    def _started(self, obj: ssl.SSLObject) -> weakref.ref[Any]:
        if self._loop is None:
            with contextlib.suppress(RuntimeError):
                self._loop = asyncio.get_running_loop()
        ref = weakref.ref(obj, self._gone)
        self._handshakes[ref] = time.monotonic()
        return ref

    def _ended(self, ref: weakref.ref[Any], error: ssl.SSLError | None,
               peer: str | None) -> None:
        if self._handshakes.pop(ref, None) is not None and error is not None:
            self._report(*_describe(error), peer)

    def _abandoned(self, ref: weakref.ref[Any], detail: str, peer: str | None) -> None:
        if self._handshakes.pop(ref, None) is not None:
            self._report("incomplete", detail, peer)

    def _gone(self, ref: weakref.ref[Any]) -> None:
        """A connection the event loop ran went away mid-handshake: the client closed it, or
        the loop dropped it at the handshake timeout. Nothing else tells of it."""
        started = self._handshakes.pop(ref, None)
        if started is None or self._loop is None:
            return
        detail = (f"no handshake: the client closed the connection or did not finish within "
                  f"the timeout (after {time.monotonic() - started:.1f}s)")
        # The last reference may go in any thread (a garbage collection): report on the loop.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._report, "incomplete", detail, None)

    def _report(self, reason: str, detail: str, peer: str | None) -> None:
        self.handshake_errors += 1
        if self.on_handshake_error is not None:
            self.on_handshake_error(reason, detail, peer)


class _ReportingSSLObject(ssl.SSLObject):
    """The SSLObject of each connection; it tells its ServerTls how the handshake ended.
    `_tls` is set on the subclass each ServerTls makes; `peer` by TlsProtocol."""

    _tls: ServerTls
    _handshake: weakref.ref[Any] | None = None
    peer: str | None = None

    def do_handshake(self) -> None:
        tls = self._tls
        ref = self._handshake
        if ref is None:
            ref = self._handshake = tls._started(self)
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise  # more bytes to come
        except ssl.SSLError as e:
            tls._ended(ref, e, self.peer)
            raise
        if tls.cfg.client_ca and self.session_reused and tls._revoked_at is not None:
            # A resumed session skips the client certificate check, and Python cannot turn
            # off the server's session cache: one from before a reload that removed a CA
            # may carry a certificate that CA signed. Refused (and so dropped from the
            # cache): the client's next connection makes a full handshake. The removal's
            # time in today's wall clock: a clock stepped since moves both alike.
            revoked = time.time() - (time.monotonic() - tls._revoked_at)
            session = self.session
            if session is None or session.time <= revoked:
                error = ssl.SSLError(1, "[SSL] a session resumed from before a reload of "
                                        "the certificates")
                error.reason = "STALE_SESSION"
                tls._ended(ref, error, self.peer)
                raise error
        tls._ended(ref, None, self.peer)

    def abandon(self, detail: str) -> None:
        """The connection ended before the handshake did, for the reason `detail` says."""
        if self._handshake is not None:
            self._tls._abandoned(self._handshake, detail, self.peer)


def count_handshake_errors(errors: Counter[str], ratelog: RateLimitedLog,
                           listener: str) -> HandshakeErrorHandler:
    """The usual handler: `errors["tls_handshake"]` of the listener's stats, and a log line
    per failure, at most a few per reason every few seconds."""
    def failed(reason: str, detail: str, peer: str | None) -> None:
        errors["tls_handshake"] += 1
        where = {"peer": peer} if peer is not None else {}
        ratelog.warning(f"tls_handshake:{reason}", f"TLS handshake failed: {detail}",
                        listener=listener, **where, reason=reason)
    return failed


READ_SIZE = 1 << 16  # per SSLObject.read: more than a TLS record (16 KiB) holds


class TlsProtocol(asyncio.Protocol):
    """TLS between a TCP transport and a listener's protocol (`app`), server side.

    `app` sees a transport (`TlsTransport`) once the handshake is done, and everything a read
    of the socket decrypts in one data_received call. Pausing reading pauses the socket;
    what was decrypted is always handed over before, so nothing waits in here that a close
    could lose. A close_notify or a FIN is the app's eof_received, delivered once it reads.
    """

    def __init__(self, app: asyncio.Protocol, context: ssl.SSLContext,
                 handshake_timeout: float) -> None:
        self.app = app
        self.context = context
        self.handshake_timeout = handshake_timeout
        self.raw: asyncio.Transport | None = None
        self.sslobj: ssl.SSLObject | None = None
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.transport: TlsTransport | None = None  # the app's, after the handshake
        self._timer: asyncio.TimerHandle | None = None
        self._timed_out = False
        self._eof = False           # close_notify or FIN seen
        self._eof_delivered = False
        self._closing = False

    # -- from the TCP transport --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.raw = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self.sslobj = self.context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        if isinstance(self.sslobj, _ReportingSSLObject):
            self.sslobj.peer = _address(transport.get_extra_info("peername"))
        self._timer = asyncio.get_running_loop().call_later(self.handshake_timeout,
                                                             self._too_slow)
        self._handshake()

    def data_received(self, data: bytes) -> None:
        self.incoming.write(data)
        if self.transport is None and not self._handshake():
            return
        self._read()

    def eof_received(self) -> bool:
        if self.transport is None:
            return False  # mid-handshake: connection_lost says what happened
        # A FIN without close_notify: for a log stream, the end like any other (the kernel
        # delivered everything before it, and it was all decrypted and handed over).
        self._eof = True
        self._deliver_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        sslobj = self.sslobj
        if self.transport is None:
            if isinstance(sslobj, _ReportingSSLObject):
                sslobj.abandon(
                    f"no handshake within {self.handshake_timeout:g}s" if self._timed_out
                    else "the client closed the connection during the handshake")
        else:
            self.transport._closing = True
            self.app.connection_lost(exc)
        self.raw = None

    def pause_writing(self) -> None:
        if self.transport is not None:
            self.app.pause_writing()

    def resume_writing(self) -> None:
        if self.transport is not None:
            self.app.resume_writing()

    # -- TLS --

    def _handshake(self) -> bool:
        assert self.sslobj is not None and self.raw is not None
        try:
            self.sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return False
        except ssl.SSLError:
            # Reported by the SSLObject; the client gets the alert, if the socket takes it.
            self._flush()
            self.raw.close()
            return False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._flush()
        self.transport = TlsTransport(self)
        self.app.connection_made(self.transport)
        return True

    def _too_slow(self) -> None:
        self._timer = None
        if self.transport is None and self.raw is not None:
            self._timed_out = True
            self.raw.abort()

    def _read(self) -> None:
        assert self.sslobj is not None and self.raw is not None
        if self._eof or self._closing or self.raw.is_closing():
            return  # after close_notify, or a close by the app: nothing more is read
        read = self.sslobj.read
        chunks = []
        try:
            while True:
                chunk = read(READ_SIZE)
                if not chunk:
                    self._eof = True
                    break
                chunks.append(chunk)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            self._eof = True
        except ssl.SSLError:
            # A broken record after the handshake: the stream cannot go on.
            if chunks:
                self.app.data_received(b"".join(chunks))
            self.raw.abort()
            return
        if chunks:
            self.app.data_received(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        self._flush()  # TLS 1.3 may answer (key updates)
        if self._eof:
            self._deliver_eof()

    def _deliver_eof(self) -> None:
        """The app's eof_received, once it reads again (as the socket would give it)."""
        tr = self.transport
        if tr is None or self._eof_delivered or not tr._reading or self.raw is None:
            return
        self._eof_delivered = True
        self.app.eof_received()
        tr.close()  # our close_notify, and the end of the connection

    def _flush(self) -> None:
        if self.outgoing.pending and self.raw is not None and not self.raw.is_closing():
            self.raw.write(self.outgoing.read())

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        assert self.sslobj is not None
        view = memoryview(data)
        try:
            while view:
                view = view[self.sslobj.write(view):]  # into a memory BIO: whole, in practice
        except ssl.SSLError:
            # The session ended under us (an alert from the client): nothing more goes out.
            if self.raw is not None:
                self.raw.abort()
            return
        self._flush()

    def _close(self) -> None:
        if self._closing or self.raw is None:
            return
        self._closing = True
        assert self.sslobj is not None
        with contextlib.suppress(ssl.SSLError):
            self.sslobj.unwrap()  # sends close_notify; the client's is not waited for
        self._flush()
        self.raw.close()


class TlsTransport(asyncio.Transport):
    """The transport a listener's protocol sees on a TLS connection."""

    def __init__(self, proto: TlsProtocol) -> None:
        super().__init__()
        self._proto = proto
        self._reading = True
        self._closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._closing:
            self._proto._write(data)

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        self._closing = True
        self._proto._close()

    def abort(self) -> None:
        self._closing = True
        if self._proto.raw is not None:
            self._proto.raw.abort()

    def is_closing(self) -> bool:
        raw = self._proto.raw
        return self._closing or raw is None or raw.is_closing()

    def pause_reading(self) -> None:
        self._reading = False
        if self._proto.raw is not None:
            self._proto.raw.pause_reading()

    def resume_reading(self) -> None:
        self._reading = True
        proto = self._proto
        if proto.raw is not None:
            proto.raw.resume_reading()
            if proto._eof:
                asyncio.get_running_loop().call_soon(proto._deliver_eof)

    def is_reading(self) -> bool:
        return self._reading

    def get_write_buffer_size(self) -> int:
        raw = self._proto.raw
        return raw.get_write_buffer_size() if raw is not None else 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self._proto.raw is not None:
            self._proto.raw.set_write_buffer_limits(high, low)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        sslobj = self._proto.sslobj
        if sslobj is not None:
            if name == "peercert":
                return sslobj.getpeercert()
            if name == "ssl_object":
                return sslobj
            if name == "cipher":
                return sslobj.cipher()
        raw = self._proto.raw
        return raw.get_extra_info(name, default) if raw is not None else default


def _address(peer: Any) -> str:
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)


def peer_cn(transport: Any) -> str | None:
    """The subject CN of the client's certificate, if it presented one that was verified."""
    cert = transport.get_extra_info("peercert")
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return str(value)
    return None


# -- helpers --

_NOT_TLS = {"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "HTTPS_PROXY_REQUEST", "UNKNOWN_PROTOCOL",
            "PACKET_LENGTH_TOO_LONG", "RECORD_LENGTH_MISMATCH", "UNEXPECTED_RECORD",
            "VERSION_TOO_LOW", "UNSUPPORTED_PROTOCOL"}
_NO_CLIENT_CERT = {"PEER_DID_NOT_RETURN_A_CERTIFICATE", "TLSV13_ALERT_CERTIFICATE_REQUIRED"}


def _describe(e: ssl.SSLError) -> tuple[str, str]:
    reason = e.reason or type(e).__name__
    if reason in _NOT_TLS:
        return reason, f"not a TLS client (plaintext on a TLS port?): {_reason(e)}"
    if reason in _NO_CLIENT_CERT:
        return reason, "the client presented no certificate; client_ca requires one"
    if isinstance(e, ssl.SSLCertVerificationError):
        return reason, f"client certificate refused: {e.verify_message}"
    if reason.startswith(("TLSV1_ALERT_", "SSLV3_ALERT_")):
        return reason, f"the client refused the handshake: {_reason(e)}"
    return reason, _reason(e)


def _reason(e: ssl.SSLError) -> str:
    """The error without OpenSSL's source location."""
    return re.sub(r" \(_ssl\.c:\d+\)$", "", str(e))


_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.S)


def _pem_certificates(pem: bytes) -> list[bytes]:
    """The DER bytes of each PEM certificate in `pem`."""
    out = []
    for m in _PEM_CERT.finditer(pem):
        text = b"-----BEGIN CERTIFICATE-----" + m.group(1) + b"-----END CERTIFICATE-----"
        try:
            out.append(ssl.PEM_cert_to_DER_cert(text.decode("ascii")))
        except ValueError:
            out.append(b"")  # bad base64: OpenSSL says why when it is loaded
    return out


def _parses(der: bytes) -> bool:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=der)
    except (ssl.SSLError, ValueError):
        return False
    return True


def _new_context(cfg: TlsConfig) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # TLS 1.3 sends session tickets after the handshake. A client that never reads (an
    # emitter) then holds unread bytes, and its close() becomes a reset, which makes the
    # kernel here discard what logd has not read yet (while a full buffer pauses reading).
    # Emitters and analyzers stay connected for long: resumption would save them little.
    ctx.num_tickets = 0
    if cfg.client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class _EncryptedKey(Exception):
    pass


def _no_password() -> str:
    # Without a callback OpenSSL would prompt on a terminal the daemon does not have.
    raise _EncryptedKey


@contextlib.contextmanager
def _memory_file(data: bytes, path: str) -> Iterator[str]:
    """A path that reads as `data` (load_cert_chain takes paths only): an anonymous memory
    file, so key material never touches a disk. Without one, `path` itself."""
    try:
        fd = os.memfd_create("logd-tls", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        yield path
        return
    try:
        with open(fd, "wb", closefd=False) as f:
            f.write(data)
        proc_path = f"/proc/self/fd/{fd}"
        yield proc_path if os.path.exists(proc_path) else path
    finally:
        os.close(fd)
