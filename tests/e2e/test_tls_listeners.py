"""TLS on the emitter, analyzer and HTTP ports, with certificates made by trustme."""

from __future__ import annotations

import contextlib
import json
import random
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from testkit.analyzer_client import TestAnalyzer
from testkit.harness import REPO, LogdProcess, logctl, read_all_lines, run_loadgen
from testkit.wire import frame, random_payloads


class Pki:
    """A CA and the server certificate files logd's tls tables name; clients' contexts."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.ca = trustme.CA()
        self.cert = directory / "server.crt"
        self.key = directory / "server.key"
        self.ca_file = directory / "ca.pem"
        self.clients_ca = trustme.CA()  # signs analyzers' certificates
        self.clients_file = directory / "clients.pem"
        self.renew(self.ca)
        self.clients_ca.cert_pem.write_to_path(str(self.clients_file))

    def renew(self, ca: trustme.CA) -> None:
        """Replace the server's certificate and key in place with ones `ca` signed."""
        leaf = ca.issue_cert("127.0.0.1", "localhost", common_name="logd")
        leaf.cert_chain_pems[0].write_to_path(str(self.cert))
        leaf.private_key_pem.write_to_path(str(self.key))
        ca.cert_pem.write_to_path(str(self.ca_file))

    def table(self, client_ca: bool = False) -> str:
        extra = f', client_ca = "{self.clients_file}"' if client_ca else ""
        return f'tls = {{ cert = "{self.cert}", key = "{self.key}"{extra} }}'

    def client(self, ca: trustme.CA | None = None,
               cert: trustme.LeafCert | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        (ca or self.ca).configure_trust(ctx)
        if cert is not None:
            cert.configure_cert(ctx)
        return ctx

    def write_client_pem(self, cert: trustme.LeafCert, name: str) -> Path:
        path = self.dir / f"{name}.pem"
        cert.private_key_and_cert_chain_pem.write_to_path(str(path))
        return path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    d = tmp_path / "tls"
    d.mkdir()
    return Pki(d)


@pytest.fixture
def start(tmp_path: Path) -> Iterator:
    started: list[LogdProcess] = []

    def run(config: str) -> LogdProcess:
        p = LogdProcess(config, tmp_path).start()
        started.append(p)
        return p

    yield run
    for p in started:
        if p.alive():
            p.stop(signal.SIGKILL)


def config(out: Path, listeners: str, outputs: bool = True) -> str:
    text = f"""
[daemon]
state_dir = "{out}/state"
control_socket = "{out}/control.sock"
stats_interval = "0s"
shutdown_timeout = "20s"
{listeners}
"""
    if outputs:
        text += f"""
[outputs.files]
type = "file"
path = "{out}/{{app}}.log"
flush_interval = "50ms"
"""
    return text


def emitters(pki: Pki, framing: str = "frames") -> str:
    return f"""
[listeners.emitters]
type = "tcp"
address = "127.0.0.1:0"
framing = "{framing}"
{pki.table()}
"""


def tls_connect(port: int, ctx: ssl.SSLContext) -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        return ctx.wrap_socket(sock, server_hostname="127.0.0.1")
    except OSError:
        sock.close()
        raise


def finish(s: ssl.SSLSocket) -> None:
    """End a TLS connection the clean way: close_notify, and logd's after it has read
    everything sent before."""
    plain = s.unwrap()
    assert plain.recv(1) == b""
    plain.close()


def no_tracebacks(p: LogdProcess) -> None:
    assert not [e for e in p.logs if "exc" in e]
    assert not [line for line in p.raw_stderr if "Traceback" in line]


def test_frames_over_tls_are_written_byte_exact(start, pki: Pki, tmp_path: Path) -> None:
    rng = random.Random(7)
    payloads = random_payloads(rng, 2000)
    data = b"".join(frame(p, rng.randrange(8)) for p in payloads)
    p = start(config(tmp_path, emitters(pki)))
    port = p.port("emitters")
    with tls_connect(port, pki.client()) as s:
        pos = 0
        while pos < len(data):  # TLS records cut frames anywhere, and so do these writes
            k = rng.choice((1, 7, 100, 4096, 65536, 300_000))
            s.sendall(data[pos:pos + k])
            pos += k
        finish(s)
    summary = run_loadgen("--target", f"tcp://127.0.0.1:{port}", "--tls", "--ca",
                          str(pki.ca_file), "--rate", "0", "--count", "50000", "--size", "150",
                          "--connections", "2", "--framing", "frames")
    assert summary["sent"] == 50_000 and summary["errors"] == 0
    assert p.stop() == 0
    written = (tmp_path / "emitters.log").read_bytes()
    mine = b"".join(x + b"\n" for x in payloads)
    assert written[:len(mine)] == mine
    generated = written[len(mine):].split(b"\n")[:-1]
    assert len(generated) == 50_000 and len(set(generated)) == 50_000
    assert all(len(line) == 150 for line in generated)
    assert p.listener_stats("emitters")["errors"] == {}


def test_a_plaintext_client_is_refused_counted_and_others_unaffected(
        start, pki: Pki, tmp_path: Path) -> None:
    p = start(config(tmp_path, emitters(pki, framing="lines")))
    port = p.port("emitters")
    before = tls_connect(port, pki.client())
    before.sendall(b"tls one\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as plain:
        plain.sendall(b"plaintext one\nplaintext two\n")
        with contextlib.suppress(ConnectionResetError):
            assert plain.recv(100) == b""  # closed without a byte of an answer
    failed = p.wait_for(lambda e: e.get("msg", "").startswith("TLS handshake failed"))
    assert failed["listener"] == "emitters"
    assert failed["reason"] == "WRONG_VERSION_NUMBER"
    assert "plaintext" in failed["msg"]
    before.sendall(b"tls two\n")  # the connection made before goes on
    after = tls_connect(port, pki.client())
    after.sendall(b"tls three\n")
    finish(after)
    finish(before)
    counted = json.loads(logctl("--socket", str(tmp_path / "control.sock"), "listeners",
                                "--json").stdout)["emitters"]["errors"]
    assert p.stop() == 0
    assert counted == {"tls_handshake": 1}
    assert sorted(read_all_lines(tmp_path, "emitters.log")) == [b"tls one", b"tls three",
                                                                 b"tls two"]
    assert len(p.entries("TLS handshake failed")) == 1
    no_tracebacks(p)


def test_an_emitter_closing_while_logd_is_paused_loses_nothing(start, pki: Pki,
                                                               tmp_path: Path) -> None:
    """A full `block` buffer pauses the emitter port; an emitter that sends and closes then
    (a FIN, no close_notify) still has every record taken once the buffer has room."""
    p = start(config(tmp_path, emitters(pki, framing="lines") + """
[listeners.pool]
type = "analyzer"
address = "127.0.0.1:0"
buffer = { max_bytes = "4KiB", when_full = "block" }
""", outputs=False))
    lines = [b"line %06d %s" % (i, b"x" * 50) for i in range(20_000)]
    with tls_connect(p.port("emitters"), pki.client()) as s:
        s.sendall(b"\n".join(lines) + b"\n")
        sock = str(tmp_path / "control.sock")
        deadline = time.monotonic() + 30
        while json.loads(logctl("--socket", sock, "listeners", "--json").stdout)[
                "emitters"]["pauses"] == 0:
            assert time.monotonic() < deadline, "the emitter port never paused"
            time.sleep(0.05)  # polling logd's counters: no event to await from outside
    reader = TestAnalyzer(p.port("pool"), 1.0, ack_every=100)
    try:
        reader.wait_count(len(lines))
        assert reader.payloads == lines
    finally:
        reader.close()
    assert p.stop() == 0


def pool_config(pki: Pki, out: Path) -> str:
    return config(out, f"""
[listeners.emitters]
type = "tcp"
address = "127.0.0.1:0"

[listeners.analyzers]
type = "analyzer"
address = "127.0.0.1:0"
ack_timeout = "30s"
{pki.table(client_ca=True)}
""", outputs=False)


def refused_analyzer(port: int, ctx: ssl.SSLContext) -> TestAnalyzer | None:
    """An analyzer logd must refuse; with TLS 1.3 the client's handshake may finish before
    logd's verdict on its certificate arrives, so it can get as far as a connection."""
    try:
        return TestAnalyzer(port, 1.0, tls=ctx)
    except (ssl.SSLError, ConnectionError):
        return None


def test_analyzers_need_a_certificate_client_ca_signed(start, pki: Pki,
                                                       tmp_path: Path) -> None:
    p = start(pool_config(pki, tmp_path))
    port = p.port("analyzers")
    stranger = trustme.CA().issue_cert("analyzer-x", common_name="analyzer-x")
    refused = [refused_analyzer(port, pki.client()),              # no client certificate
               refused_analyzer(port, pki.client(cert=stranger))]  # another CA's
    for reason in ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "CERTIFICATE_VERIFY_FAILED"):
        p.wait_for(lambda e, r=reason: e.get("msg", "").startswith("TLS handshake failed")
                   and e.get("reason") == r)
    good_cert = pki.clients_ca.issue_cert("analyzer-1", common_name="analyzer-1")
    good = TestAnalyzer(port, 1.0, ack_every=20, tls=pki.client(cert=good_cert))
    try:
        connected = p.wait_for(lambda e: e.get("msg") == "analyzer connected")
        assert connected["client_cn"] == "analyzer-1"
        with socket.create_connection(("127.0.0.1", p.port("emitters"))) as e:
            e.sendall(b"".join(frame(b"rec %d" % i) for i in range(5000)))
        good.wait_count(5000)
        assert sorted(good.payloads) == sorted(b"rec %d" % i for i in range(5000))
        sock = str(tmp_path / "control.sock")
        deadline = time.monotonic() + 30
        while True:
            pool = json.loads(logctl("--socket", sock, "stats", "--json").stdout)[
                "listeners"]["analyzers"]
            if pool["acked"] == 5000:
                break
            assert time.monotonic() < deadline, f"acked {pool['acked']}/5000"
            time.sleep(0.05)  # polling logd's counters: no event to await from outside
        table = json.loads(logctl("--socket", sock, "analyzers", "--json").stdout)
        assert [a["client_cn"] for a in table["analyzers"]] == ["analyzer-1"]
        assert pool["errors"] == {"tls_handshake": 2}
        assert pool["connections"] == 1
        for a in refused:
            if a is not None:
                a.wait_closed()  # logd refused it
                assert a.count == 0
    finally:
        good.close()
        for a in refused:
            if a is not None:
                a.close()
    assert p.stop() == 0
    no_tracebacks(p)


def test_reference_analyzer_over_tls_with_a_client_certificate(start, pki: Pki,
                                                               tmp_path: Path) -> None:
    p = start(pool_config(pki, tmp_path))
    pem = pki.write_client_pem(pki.clients_ca.issue_cert("a2", common_name="a2"), "a2")
    tool = subprocess.Popen([sys.executable, "tools/analyzer", "--tls", "--ca",
                             str(pki.ca_file), "--cert", str(pem), "--target",
                             f"tcp://127.0.0.1:{p.port('analyzers')}", "--count", "3000",
                             "--json"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        p.wait_for(lambda e: e.get("msg") == "analyzer connected" and e["client_cn"] == "a2")
        run_loadgen("--target", f"tcp://127.0.0.1:{p.port('emitters')}", "--rate", "0",
                    "--count", "3000", "--size", "100")
        out, err = tool.communicate(timeout=60)
    finally:
        tool.kill()
        tool.wait()
    assert tool.returncode == 0, err.decode()
    summary = json.loads(out)
    assert summary["received"] == 3000 and summary["acked"] == 3000
    assert p.stop() == 0


def test_https_ingest_answers_202_and_the_records_land(start, pki: Pki,
                                                       tmp_path: Path) -> None:
    p = start(config(tmp_path, f"""
[listeners.http]
type = "http"
address = "127.0.0.1:0"
{pki.table()}
"""))
    port = p.port("http")
    records = [{"app_id": "billing", "level": "warn", "message": f"m{i}"} for i in range(10)]
    req = urllib.request.Request(f"https://127.0.0.1:{port}/v1/logs", method="POST",
                                 data=json.dumps(records).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10, context=pki.client()) as r:
        assert r.status == 202
        assert json.loads(r.read()) == {"accepted": 10}
    with pytest.raises(OSError):  # plain HTTP on the HTTPS port gets no answer
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10)
    p.wait_for(lambda e: e.get("msg", "").startswith("TLS handshake failed")
               and e.get("reason") == "HTTP_REQUEST")
    summary = run_loadgen("--target", f"http://127.0.0.1:{port}/api/logs", "--tls", "--ca",
                          str(pki.ca_file), "--rate", "0", "--count", "4000", "--batch",
                          "500", "--apps", "loadgen:1")
    assert summary["sent"] == 4000 and summary["errors"] == 0
    assert p.stop() == 0
    billing = read_all_lines(tmp_path, "billing.log")
    assert [json.loads(line)["message"] for line in billing] == [f"m{i}" for i in range(10)]
    assert len(read_all_lines(tmp_path, "loadgen.log")) == 4000
    assert p.listener_stats("http")["errors"] == {"tls_handshake": 1}
    no_tracebacks(p)


def served_certificate(port: int, ctx: ssl.SSLContext) -> bytes:
    with tls_connect(port, ctx) as s:
        cert = s.getpeercert(binary_form=True)
        assert cert is not None
        finish(s)
        return cert


def test_sighup_reloads_certificates_for_new_connections_old_ones_go_on(
        start, pki: Pki, tmp_path: Path) -> None:
    p = start(config(tmp_path, emitters(pki, framing="lines") + f"""
[listeners.analyzers]
type = "analyzer"
address = "127.0.0.1:0"
{pki.table()}

[routes.files]
to = ["files"]
"""))
    port, pool_port = p.port("emitters"), p.port("analyzers")
    first = served_certificate(port, pki.client())
    old = tls_connect(port, pki.client())
    old.sendall(b"before\n")
    old_ca = pki.ca
    new_ca = trustme.CA()
    pki.renew(new_ca)
    assert p.proc is not None
    p.proc.send_signal(signal.SIGHUP)
    reloaded = p.wait_for(lambda e: e.get("msg") == "reloaded")
    assert reloaded["changes"] == ["tls reloaded: emitters", "tls reloaded: analyzers"]
    assert reloaded["problems"] == []
    second = served_certificate(port, pki.client(new_ca))  # verified with the new CA
    assert second != first
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_connect(port, pki.client(old_ca))
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_connect(pool_port, pki.client(old_ca))
    tls_connect(pool_port, pki.client(new_ca)).close()
    old.sendall(b"after\n")  # the connection from before the reload carries on
    finish(old)

    # Half a renewal (a new certificate, the old key): refused, and the last good pair stays.
    trustme.CA().issue_cert("127.0.0.1").cert_chain_pems[0].write_to_path(str(pki.cert))
    result = logctl("--socket", str(tmp_path / "control.sock"), "reload", "--json")
    answer = json.loads(result.stdout)
    assert answer["applied"] is True and answer["changes"] == []
    assert len(answer["problems"]) == 2
    assert all(".tls.key: " in x and "does not match the certificate" in x
               for x in answer["problems"])
    assert served_certificate(port, pki.client(new_ca)) == second
    errors = [e for e in p.logs if e.get("level") == "error"]
    assert [e["msg"] for e in errors] == ["tls reload failed; the old certificate stays"] * 2
    assert p.stop() == 0
    assert read_all_lines(tmp_path, "emitters.log") == [b"before", b"after"]
    no_tracebacks(p)


def test_a_bad_cert_path_is_a_clear_start_error(pki: Pki, tmp_path: Path) -> None:
    missing = pki.dir / "missing.crt"
    text = config(tmp_path, emitters(pki).replace(str(pki.cert), str(missing)))
    (tmp_path / "logd.toml").write_text(text)
    proc = subprocess.run([sys.executable, "-m", "logd", "--config",
                           str(tmp_path / "logd.toml")], capture_output=True, text=True,
                          timeout=30, cwd=REPO)
    assert proc.returncode == 1
    lines = [json.loads(line) for line in proc.stderr.splitlines()]
    errors = [e for e in lines if e["level"] == "error"]
    assert len(errors) == 1
    assert errors[0]["reason"] == (f"listeners.emitters.tls.cert: cannot read {missing}: "
                                   "No such file or directory")
    assert "Traceback" not in proc.stderr
