"""logd.tls: the tls table, start errors, reloads for new handshakes, handshake reports.

Servers run on uvloop, as in logd; certificates come from trustme.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
import trustme
import uvloop

from logd.component import StartError
from logd.config import ConfigError, loads
from logd.tls import ServerTls, TlsConfig, TlsError

pytestmark = pytest.mark.timeout(30)

LISTENERS = """
[listeners.emitters]
type = "tcp"
address = "127.0.0.1:0"
{tls}

[listeners.web]
type = "http"
address = "127.0.0.1:0"

[listeners.pool]
type = "analyzer"
address = "127.0.0.1:0"
"""


def problems_of(tls: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        loads(LISTENERS.format(tls=tls))
    return dict(info.value.problems)


# -- config --

def test_no_tls_table_means_plaintext_on_every_listener_type() -> None:
    cfg = loads(LISTENERS.format(tls=""))
    assert [c.tls for c in cfg.listeners.values()] == [None, None, None]


def test_a_tls_table_is_built_with_client_ca_optional() -> None:
    cfg = loads(LISTENERS.format(tls='tls = { cert = "/c.pem", key = "/k.pem" }'))
    assert cfg.listeners["emitters"].tls == TlsConfig(cert="/c.pem", key="/k.pem", client_ca="")
    full = 'tls = { cert = "/c", key = "/k", client_ca = "/ca" }'
    for kind in ("emitters", "web", "pool"):
        text = LISTENERS.format(tls="").replace(f"[listeners.{kind}]\n",
                                                f"[listeners.{kind}]\n{full}\n")
        assert loads(text).listeners[kind].tls == TlsConfig("/c", "/k", "/ca")


def test_cert_and_key_are_required_and_named_by_key_path() -> None:
    assert problems_of("tls = {}") == {"listeners.emitters.tls.cert": "is required",
                                      "listeners.emitters.tls.key": "is required"}


def test_bad_tls_values_name_their_key_path() -> None:
    got = problems_of('tls = { cert = "", key = 7, client_ca = ["a"], ca = "x" }')
    assert got["listeners.emitters.tls.cert"] == "expected a non-empty string"
    assert got["listeners.emitters.tls.key"] == "expected a string, got an integer"
    assert got["listeners.emitters.tls.client_ca"] == "expected a string, got an array"
    assert "unknown key" in got["listeners.emitters.tls.ca"]
    assert "client_ca" in got["listeners.emitters.tls.ca"]


def test_tls_must_be_a_table() -> None:
    assert problems_of("tls = true") == {
        "listeners.emitters.tls": "expected a table, got a boolean"}


# -- files --

class Pki:
    """A CA, and the files a listener's tls table names."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.ca = trustme.CA()
        self.cert = directory / "server.crt"
        self.key = directory / "server.key"
        self.client_ca = directory / "clients.pem"
        self.issue(self.ca)
        self.ca.cert_pem.write_to_path(str(self.client_ca))

    def issue(self, ca: trustme.CA) -> None:
        """Write a server certificate `ca` signed (as certbot would renew it in place)."""
        leaf = ca.issue_cert("127.0.0.1", common_name="logd")
        leaf.cert_chain_pems[0].write_to_path(str(self.cert))
        leaf.private_key_pem.write_to_path(str(self.key))

    def config(self, client_ca: bool = False) -> TlsConfig:
        return TlsConfig(str(self.cert), str(self.key),
                         str(self.client_ca) if client_ca else "")

    def client(self, ca: trustme.CA, cert: trustme.LeafCert | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        if cert is not None:
            cert.configure_cert(ctx)
        return ctx


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


def start_error(cfg: TlsConfig) -> str:
    with pytest.raises(StartError) as info:
        ServerTls(cfg, "listeners.emitters")
    return str(info.value)


def test_an_unreadable_cert_is_a_start_error_naming_the_key_and_reason(pki: Pki) -> None:
    cfg = TlsConfig(str(pki.dir / "nope.crt"), str(pki.key))
    assert start_error(cfg) == (f"listeners.emitters.tls.cert: cannot read {pki.dir}/nope.crt: "
                                "No such file or directory")


def test_files_that_hold_the_wrong_thing_are_named(pki: Pki) -> None:
    swapped = TlsConfig(str(pki.key), str(pki.cert))
    assert start_error(swapped) == (f"listeners.emitters.tls.cert: {pki.key} holds no PEM "
                                    "certificate")
    no_key = TlsConfig(str(pki.cert), str(pki.cert))
    assert start_error(no_key) == (f"listeners.emitters.tls.key: {pki.cert} holds no PEM "
                                   "private key")
    (pki.dir / "junk.pem").write_text("not a CA\n")
    junk_ca = TlsConfig(str(pki.cert), str(pki.key), str(pki.dir / "junk.pem"))
    assert start_error(junk_ca) == (f"listeners.emitters.tls.client_ca: {pki.dir}/junk.pem "
                                    "holds no PEM certificate")


def test_a_key_of_another_certificate_is_named(pki: Pki) -> None:
    other = trustme.CA().issue_cert("127.0.0.1")
    other.private_key_pem.write_to_path(str(pki.dir / "other.key"))
    cfg = TlsConfig(str(pki.cert), str(pki.dir / "other.key"))
    assert start_error(cfg) == (f"listeners.emitters.tls.key: {pki.dir}/other.key does not "
                                f"match the certificate in {pki.cert}")


def test_an_encrypted_key_is_refused_without_prompting(pki: Pki) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(pki.key.read_bytes(), None)
    pki.key.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")))
    assert "tls.key: " in start_error(pki.config())
    assert "is encrypted" in start_error(pki.config())


# -- handshakes, on a real server --

def uv(coro: Coroutine[Any, Any, Any]) -> Any:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


class Server:
    """A TLS server that records what connects and the handshake errors reported. Its TLS is
    done by the event loop ("loop", as for HTTP) or by logd.tls.TlsProtocol ("logd", as on
    the emitter and analyzer ports)."""

    def __init__(self, tls: ServerTls, layer: str = "loop") -> None:
        self.tls = tls
        self.layer = layer
        self.errors: list[tuple[str, str, str | None]] = []
        self.error_seen = asyncio.Event()
        self.client_cns: list[str | None] = []
        tls.on_handshake_error = self._error
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    def _error(self, reason: str, detail: str, peer: str | None) -> None:
        self.errors.append((reason, detail, peer))
        self.error_seen.set()

    async def start(self, handshake_timeout: float = 10.0) -> Server:
        from logd.tls import peer_cn

        server = self

        class Proto(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                server.client_cns.append(peer_cn(transport))

        if self.layer == "loop":
            self.server = await asyncio.get_running_loop().create_server(
                Proto, "127.0.0.1", 0, ssl=self.tls.context,
                ssl_handshake_timeout=handshake_timeout)
            self.port = self.server.sockets[0].getsockname()[1]
        else:
            from logd.listeners.serve import open_server
            self.server, (_, self.port) = await open_server(
                "t", ("127.0.0.1", 0), Proto, ssl=self.tls.context,
                ssl_handshake_timeout=handshake_timeout)
        return self

    async def connect(self, ctx: ssl.SSLContext) -> tuple[asyncio.StreamReader,
                                                           asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port, ssl=ctx,
                                             server_hostname="127.0.0.1")

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def served_cert(writer: asyncio.StreamWriter) -> bytes:
    return writer.get_extra_info("ssl_object").getpeercert(binary_form=True)


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    await writer.wait_closed()


LAYERS = pytest.mark.parametrize("layer", ["loop", "logd"])


@LAYERS
def test_reload_serves_the_new_certificate_to_later_handshakes_only(pki: Pki,
                                                                    layer: str) -> None:
    """load_cert_chain into the context a server already uses replaces the certificate for
    the handshakes that start afterwards; a connection made before keeps its session."""
    tls = ServerTls(pki.config(), "listeners.emitters")

    async def main() -> None:
        srv = await Server(tls, layer).start()
        _, old_w = await srv.connect(pki.client(pki.ca))
        before = served_cert(old_w)
        first_fingerprint = tls.fingerprint
        new_ca = trustme.CA()
        pki.issue(new_ca)
        tls.reload()
        assert tls.fingerprint != first_fingerprint
        _, new_w = await srv.connect(pki.client(new_ca))  # verifies against the new CA only
        assert served_cert(new_w) != before
        with pytest.raises(ssl.SSLCertVerificationError):
            await srv.connect(pki.client(pki.ca))
        assert served_cert(old_w) == before
        old_w.write(b"still up")  # the old session still carries data
        await old_w.drain()
        assert not old_w.is_closing()
        await close(old_w)
        await close(new_w)
        await srv.close()

    uv(main())


def test_a_reload_with_a_mismatched_pair_keeps_the_certificate_in_use(pki: Pki) -> None:
    tls = ServerTls(pki.config(), "listeners.emitters")
    fingerprint = tls.fingerprint
    # Half a renewal: the new certificate is written, its key not yet.
    trustme.CA().issue_cert("127.0.0.1").cert_chain_pems[0].write_to_path(str(pki.cert))
    with pytest.raises(TlsError, match=r"tls\.key: .* does not match the certificate"):
        tls.reload()
    assert tls.fingerprint == fingerprint
    pki.cert.unlink()
    with pytest.raises(TlsError, match=r"tls\.cert: cannot read"):
        tls.reload()

    async def main() -> None:
        srv = await Server(tls, "logd").start()
        _, w = await srv.connect(pki.client(pki.ca))  # the old pair still shakes hands
        await close(w)
        await srv.close()

    uv(main())


@LAYERS
def test_client_certificates_from_client_ca_only(pki: Pki, layer: str) -> None:
    tls = ServerTls(pki.config(client_ca=True), "listeners.pool")
    good = pki.ca.issue_cert("analyzer-1", common_name="analyzer-1")
    stranger = trustme.CA().issue_cert("analyzer-x", common_name="analyzer-x")

    async def refused(srv: Server, ctx: ssl.SSLContext) -> tuple[str, str, str | None]:
        srv.error_seen.clear()
        # TLS 1.3: the client finishes first; the server's verdict follows on its side.
        try:
            _, w = await srv.connect(ctx)
            w.close()
        except (ssl.SSLError, ConnectionError):
            pass
        await asyncio.wait_for(srv.error_seen.wait(), 10)
        return srv.errors[-1]

    async def main() -> None:
        srv = await Server(tls, layer).start()
        _, w = await srv.connect(pki.client(pki.ca, good))
        await close(w)
        assert srv.client_cns == ["analyzer-1"]
        reason, detail, peer = await refused(srv, pki.client(pki.ca))
        assert reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE"
        assert "no certificate" in detail
        # The event loop's TLS does not say who it was; logd's own does.
        assert (peer or "").startswith("127.0.0.1:") == (layer == "logd")
        reason, detail, _ = await refused(srv, pki.client(pki.ca, stranger))
        assert reason == "CERTIFICATE_VERIFY_FAILED"
        assert detail.startswith("client certificate refused: ")
        assert srv.client_cns == ["analyzer-1"]
        assert tls.handshake_errors == 2
        await srv.close()

    uv(main())


@LAYERS
def test_plaintext_silent_and_vanishing_clients_are_reported(pki: Pki, layer: str) -> None:
    tls = ServerTls(pki.config(), "listeners.emitters")

    async def main() -> None:
        srv = await Server(tls, layer).start(handshake_timeout=0.3)
        _, w = await asyncio.open_connection("127.0.0.1", srv.port)
        w.write(b"\x00\x00\x00\x06\x06hello")  # a frame, not a ClientHello
        await asyncio.wait_for(srv.error_seen.wait(), 10)
        assert srv.errors[-1][0] == "WRONG_VERSION_NUMBER"
        assert "plaintext" in srv.errors[-1][1]
        await close(w)
        srv.error_seen.clear()
        r, w = await asyncio.open_connection("127.0.0.1", srv.port)  # says nothing
        await asyncio.wait_for(srv.error_seen.wait(), 10)
        assert srv.errors[-1][0] == "incomplete"
        assert await r.read() == b""  # and was dropped
        await close(w)
        if layer == "logd":
            assert srv.errors[-1][1] == "no handshake within 0.3s"
        srv.error_seen.clear()
        _, w = await asyncio.open_connection("127.0.0.1", srv.port)
        w.write(b"\x16\x03\x01")  # the start of a ClientHello, then nothing but a FIN
        w.write_eof()
        await asyncio.wait_for(srv.error_seen.wait(), 10)
        assert srv.errors[-1][0] == "incomplete"
        if layer == "logd":
            assert srv.errors[-1][1] == "the client closed the connection during the handshake"
        await close(w)
        assert tls.handshake_errors == 3
        assert srv.client_cns == []
        await srv.close()

    uv(main())


@LAYERS
def test_a_client_ca_removed_at_reload_is_no_longer_trusted(
        pki: Pki, layer: str, caplog: pytest.LogCaptureFixture) -> None:
    """Revoking a CA by rewriting client_ca and reloading: new connections with a
    certificate it signed are refused, on the event loop's TLS (HTTP) and logd's own."""
    tls = ServerTls(pki.config(client_ca=True), "listeners.pool")
    old_client = pki.ca.issue_cert("old", common_name="old")
    new_ca = trustme.CA()
    new_client = new_ca.issue_cert("new", common_name="new")

    async def main() -> None:
        srv = await Server(tls, layer).start()
        _, before = await srv.connect(pki.client(pki.ca, old_client))
        try:
            await revoked(srv, before)
        finally:  # a failure must not leave TLS connections open for the loop's close
            before.transport.abort()
            await srv.close()

    async def revoked(srv: Server, before: asyncio.StreamWriter) -> None:
        new_ca.cert_pem.write_to_path(str(pki.client_ca))
        with caplog.at_level(logging.INFO, logger="logd.tls"):
            tls.reload()
        said = [r for r in caplog.records if "no longer trusted" in r.getMessage()]
        assert len(said) == 1 and said[0].key == "listeners.pool.tls.client_ca"  # type: ignore[attr-defined]
        _, w = await srv.connect(pki.client(pki.ca, new_client))
        await close(w)
        assert srv.client_cns == ["old", "new"]
        srv.error_seen.clear()
        try:  # TLS 1.3: the client finishes first; the server's verdict follows on its side
            _, w = await srv.connect(pki.client(pki.ca, old_client))
            w.close()
        except (ssl.SSLError, ConnectionError):
            pass
        await asyncio.wait_for(srv.error_seen.wait(), 10)
        assert srv.errors[-1][0] == "CERTIFICATE_VERIFY_FAILED"
        assert srv.client_cns == ["old", "new"]
        before.write(b"still up")  # a connection made before the reload keeps its session
        await before.drain()
        assert not before.is_closing()

    uv(main())


@pytest.mark.parametrize("ending", ["fin", "close_notify"])
def test_a_close_while_reading_is_paused_loses_nothing(pki: Pki, ending: str) -> None:
    """The client sends and closes while the protocol has paused reading (a full buffer):
    everything arrives once it reads again, then the EOF. (uvloop's own TLS drops what it
    had read ahead, and the EOF, at a FIN then: MagicStack/uvloop#661.) A close_notify is
    answered once the protocol has read up to it."""
    tls = ServerTls(pki.config(), "listeners.emitters")
    sent = bytes(range(256)) * 2000
    got = bytearray()
    eof = asyncio.Event()
    transports: list[asyncio.Transport] = []

    class Slow(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            transports.append(transport)  # type: ignore[arg-type]

        def data_received(self, data: bytes) -> None:
            got.extend(data)
            transports[0].pause_reading()

        def eof_received(self) -> bool:
            eof.set()
            return False

    def client(port: int) -> None:
        import socket
        raw = socket.create_connection(("127.0.0.1", port))
        with pki.client(pki.ca).wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(sent)
            if ending == "close_notify":
                s.settimeout(10)
                s.unwrap()  # returns with logd's close_notify
            # else: close, a FIN without close_notify

    async def main() -> None:
        from logd.listeners.serve import open_server
        server, (_, port) = await open_server("t", ("127.0.0.1", 0), Slow, ssl=tls.context)
        sender = asyncio.ensure_future(asyncio.to_thread(client, port))
        async with asyncio.timeout(10):
            while not eof.is_set():
                if transports:
                    transports[0].resume_reading()  # a buffer with room for one more read
                await asyncio.sleep(0.001)  # one read at a time until EOF: paced
            await sender
        server.close()

    uv(main())
    assert bytes(got) == sent


def bio_handshake(tls: ServerTls, client: ssl.SSLContext,
                  session: ssl.SSLSession | None = None) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """A handshake over memory BIOs between `client` and the listener's context, then one
    record from the client that the server must read."""
    si, so, ci, co = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    server = tls.context.wrap_bio(si, so, server_side=True)
    conn = client.wrap_bio(ci, co, server_hostname="127.0.0.1", session=session)
    done_s = done_c = False
    for _ in range(20):
        if not done_c:
            try:
                conn.do_handshake()
                done_c = True
            except ssl.SSLWantReadError:
                pass
        si.write(co.read())
        if not done_s:
            try:
                server.do_handshake()
                done_s = True
            except ssl.SSLWantReadError:
                pass
        ci.write(so.read())
        if done_s and done_c:
            break
    conn.write(b"x")
    si.write(co.read())
    assert server.read(10) == b"x"
    return conn, server


def ca_pair(pki: Pki) -> tuple[ServerTls, trustme.CA]:
    """A listener trusting two CAs: pki.ca (removed by the tests) and one that is kept."""
    kept_ca = trustme.CA()
    pki.client_ca.write_bytes(pki.ca.cert_pem.bytes() + kept_ca.cert_pem.bytes())
    return ServerTls(pki.config(client_ca=True), "listeners.pool"), kept_ca


def tls12_client(pki: Pki, ca: trustme.CA, name: str) -> ssl.SSLContext:
    client = pki.client(pki.ca, ca.issue_cert(name, common_name=name))
    client.maximum_version = ssl.TLSVersion.TLSv1_2  # TLS 1.3: no tickets, no resumption
    return client


def test_a_session_from_before_a_ca_was_removed_does_not_let_its_client_in(pki: Pki) -> None:
    """A resumed session skips the client certificate check. With client_ca, logd sends no
    session tickets, and a client of a CA removed since is refused at its next connection;
    one of a CA still trusted gets in."""
    tls, kept_ca = ca_pair(pki)
    assert tls.context.options & ssl.OP_NO_TICKET
    old, kept = tls12_client(pki, pki.ca, "old"), tls12_client(pki, kept_ca, "kept")
    old_session = bio_handshake(tls, old)[0].session
    kept_session = bio_handshake(tls, kept)[0].session
    errors: list[str] = []
    tls.on_handshake_error = lambda reason, detail, peer: errors.append(reason)
    pki.client_ca.write_bytes(kept_ca.cert_pem.bytes())  # the old CA removed
    tls.reload()
    with pytest.raises(ssl.SSLError):
        bio_handshake(tls, old, old_session)
    assert errors and errors[0] in ("STALE_SESSION", "CERTIFICATE_VERIFY_FAILED")
    _, conn = bio_handshake(tls, kept, kept_session)
    assert ("commonName", "kept") in [pair for rdn in conn.getpeercert()["subject"]
                                       for pair in rdn]


def test_a_resumed_session_from_before_a_ca_was_removed_is_refused(pki: Pki) -> None:
    """Were a session resumed anyway (tickets turned back on here), one made before a
    reload that removed a CA is refused as STALE_SESSION; a reload that removes no CA
    refuses none, and a session made after the removal resumes."""
    tls, kept_ca = ca_pair(pki)
    tls.context.options &= ~ssl.OP_NO_TICKET
    old = tls12_client(pki, pki.ca, "old")
    old_session = bio_handshake(tls, old)[0].session
    tls.reload()  # nothing removed
    assert bio_handshake(tls, old, old_session)[1].session_reused
    errors: list[str] = []
    tls.on_handshake_error = lambda reason, detail, peer: errors.append(reason)
    pki.client_ca.write_bytes(kept_ca.cert_pem.bytes())
    tls.reload()
    with pytest.raises(ssl.SSLError) as refused:
        bio_handshake(tls, old, old_session)
    assert refused.value.reason == "STALE_SESSION" and errors == ["STALE_SESSION"]
    assert tls._revoked_at is not None
    tls._revoked_at -= 5  # the removal a while ago (session times are whole seconds)
    kept = tls12_client(pki, kept_ca, "kept")
    session = bio_handshake(tls, kept)[0].session
    assert bio_handshake(tls, kept, session)[1].session_reused
