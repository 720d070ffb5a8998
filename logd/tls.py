"""TLS on the TCP-based listeners: the `tls = { ... }` table and the server side context.

The protocols inside TLS are unchanged (frames, lines, the analyzer protocol, HTTP). With
`client_ca`, a client proves who it is with a certificate that CA signed; its subject CN is
logged with the connection.

The event loop runs the handshakes and says nothing when one fails (uvloop and asyncio log
those only in debug mode), so every connection's SSLObject reports how its handshake ended:
failures are counted by the listener and logged rate-limited, one line each, never as a
traceback.
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


HandshakeErrorHandler = Callable[[str, str], None]  # (reason code, what it means)


class ServerTls:
    """The server side SSLContext of one listener, built from its TlsConfig.

    `key` is the listener's key path ("listeners.emitters"), for messages. Files that cannot
    be used at construction are a StartError naming the key and the reason. `reload()` reads
    the files again into the same context: handshakes that start later use them, connections
    already open keep theirs.
    """

    def __init__(self, cfg: TlsConfig, key: str,
                 on_handshake_error: HandshakeErrorHandler | None = None) -> None:
        self.cfg = cfg
        self.key = key
        self.on_handshake_error = on_handshake_error
        self.handshake_errors = 0
        self.fingerprint = ""  # SHA-256 of the certificate presented, as openssl prints it
        self.context = _new_context(cfg)
        self.context.sslobject_class = type("ReportingSSLObject", (_ReportingSSLObject,),
                                            {"_tls": self})
        self._trusted: set[bytes] = set()  # client CA certificates (DER) ever loaded
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
        # OpenSSL drops the key in use as soon as a certificate it does not match is set, and
        # a cert and key are renewed as two files: a pair that does not fit must never reach
        # the live context. Try the bytes on a scratch context first, then load those same
        # bytes (not the files again, which may have changed meanwhile).
        self._apply(_new_context(self.cfg), cert_pem, key_pem, cas)
        self._apply(self.context, cert_pem, key_pem, cas)
        self.fingerprint = ":".join(f"{b:02X}" for b in hashlib.sha256(certs[0]).digest())
        stale = self._trusted - set(cas)
        self._trusted.update(cas)
        log.info("tls certificate loaded", extra={
            "key": f"{self.key}.tls", "cert": self.cfg.cert, "fingerprint": self.fingerprint,
            "client_ca": self.cfg.client_ca or None})
        if stale:
            # An SSLContext can add trusted CAs but never forget one.
            log.warning("client CA certificates removed from client_ca stay trusted until "
                        "logd restarts", extra={"key": f"{self.key}.tls.client_ca",
                                                 "file": self.cfg.client_ca,
                                                 "certificates": len(stale)})

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
        ref = weakref.ref(obj, self._abandoned)
        self._handshakes[ref] = time.monotonic()
        return ref

    def _ended(self, ref: weakref.ref[Any], error: ssl.SSLError | None) -> None:
        self._handshakes.pop(ref, None)
        if error is not None:
            self._report(*_describe(error))

    def _abandoned(self, ref: weakref.ref[Any]) -> None:
        """A connection went away mid-handshake: the client closed it, or the loop dropped it
        at the handshake timeout. Nothing else tells of it."""
        started = self._handshakes.pop(ref, None)
        if started is None or self._loop is None:
            return
        detail = (f"no handshake: the client closed the connection or did not finish within "
                  f"the timeout (after {time.monotonic() - started:.1f}s)")
        # The last reference may go in any thread (a garbage collection): report on the loop.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._report, "incomplete", detail)

    def _report(self, reason: str, detail: str) -> None:
        self.handshake_errors += 1
        if self.on_handshake_error is not None:
            self.on_handshake_error(reason, detail)


class _ReportingSSLObject(ssl.SSLObject):
    """The SSLObject the event loop drives for each connection; it tells its ServerTls how
    the handshake ended. `_tls` is set on the subclass each ServerTls makes."""

    _tls: ServerTls
    _handshake: weakref.ref[Any] | None = None

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
            tls._ended(ref, e)
            raise
        tls._ended(ref, None)


def count_handshake_errors(errors: Counter[str], ratelog: RateLimitedLog,
                           listener: str) -> HandshakeErrorHandler:
    """The usual handler: `errors["tls_handshake"]` of the listener's stats, and a log line
    per failure, at most a few per reason every few seconds."""
    def failed(reason: str, detail: str) -> None:
        errors["tls_handshake"] += 1
        ratelog.warning(f"tls_handshake:{reason}", f"TLS handshake failed: {detail}",
                        listener=listener, reason=reason)
    return failed


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
