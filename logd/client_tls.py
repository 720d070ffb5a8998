"""TLS to servers logd connects to (Kafka brokers): the `tls = { ... }` table of an output or
input, and the SSLContext made from it.

    tls = {}                                           # TLS, the system's trusted CAs
    tls = { ca = "/etc/logd/kafka-ca.pem" }            # TLS, the broker's CA
    tls = { ca = "...", cert = "...", key = "..." }    # and a client certificate (mTLS)

The server's certificate must chain to `ca` (else the system's CAs) and name the host
connected to, unless `verify_hostname = false`. Files are read when the component starts (a
file that cannot be used is a start error naming the key) and again at a reload: new
connections then use them.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from logd.component import StartError
from logd.config import setting, to_bool, to_str
from logd.tls import TlsError


@dataclass(frozen=True)
class ClientTlsConfig:
    ca: str = setting("", to_str, "PEM CA certificates the server's certificate must chain "
                                  "to; empty: the system's trusted CAs")
    cert: str = setting("", to_str, "PEM client certificate chain, for servers that ask for "
                                    "one (with `key`)")
    key: str = setting("", to_str, "PEM private key of `cert`, unencrypted")
    verify_hostname: bool = setting(True, to_bool,
                                    "the server's certificate must name the host connected to")

    def validate(self) -> list[tuple[str, str]]:
        if bool(self.cert) != bool(self.key):
            missing = "key" if self.cert else "cert"
            return [(missing, "is required with " + ("cert" if self.cert else "key"))]
        return []


def client_context(cfg: ClientTlsConfig, key_path: str) -> ssl.SSLContext:
    """The context for connections to servers; StartError naming `key_path`.tls.* when a file
    cannot be used."""
    try:
        ctx = ssl.create_default_context(cafile=cfg.ca or None)
    except (OSError, ssl.SSLError) as e:
        raise StartError(f"{key_path}.tls.ca: cannot use {cfg.ca}: "
                         f"{getattr(e, 'strerror', None) or e}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not cfg.verify_hostname:
        ctx.check_hostname = False
    if cfg.cert:
        try:
            ctx.load_cert_chain(cfg.cert, cfg.key, password=_no_password)
        except _Encrypted:
            raise StartError(f"{key_path}.tls.key: {cfg.key} is encrypted; logd needs an "
                             "unencrypted key (readable by logd only)") from None
        except (OSError, ssl.SSLError) as e:
            raise StartError(f"{key_path}.tls: cannot use {cfg.cert} and {cfg.key}: "
                             f"{getattr(e, 'strerror', None) or e}") from None
    return ctx


def reload_context(ctx: ssl.SSLContext, cfg: ClientTlsConfig, key_path: str) -> None:
    """Read the files again into the context connections are made with (a reload): new
    connections present the renewed certificate and trust the renewed CA. The files are
    tried on a scratch context first: ones that cannot be used raise TlsError naming the
    key, and the context in use is left as it was."""
    try:
        client_context(cfg, key_path)
    except StartError as e:
        raise TlsError(str(e)) from None
    if cfg.ca:
        ctx.load_verify_locations(cafile=cfg.ca)  # a CA is added, none forgotten
    if cfg.cert:
        ctx.load_cert_chain(cfg.cert, cfg.key, password=_no_password)


class _Encrypted(Exception):
    pass


def _no_password() -> str:
    raise _Encrypted
