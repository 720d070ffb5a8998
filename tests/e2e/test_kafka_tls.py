"""Kafka over TLS, client certificates included: logd's Kafka output and input talk TLS to a
real broker (tansu, which serves no TLS itself, behind a TLS terminator that tansu
advertises as its address, so every connection, metadata's included, is TLS)."""

from __future__ import annotations

import signal
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from testkit.harness import LogdProcess, free_port, post_records, wait_for_lines
from testkit.kafka import EXTERNAL, KafkaBroker
from testkit.tls_proxy import TlsProxy

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(bool(EXTERNAL), reason="tansu behind a TLS proxy only")]



@dataclass
class TlsKafka:
    address: str        # what clients connect to: the TLS terminator
    clients: trustme.CA  # the CA client certificates are issued by
    ca: Path            # the brokers' CA
    client_cert: Path   # a client certificate the terminator requires, and its key
    client_key: Path
    proxy: TlsProxy


@pytest.fixture
def tls_kafka(tmp_path: Path) -> Iterator[TlsKafka]:
    ca, clients = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.configure_cert(ctx)
    clients.configure_trust(ctx)
    ctx.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: logd must show a certificate
    client = clients.issue_cert("logd", common_name="logd-1")
    paths = {"ca": tmp_path / "kafka-ca.pem", "cert": tmp_path / "logd.pem",
             "key": tmp_path / "logd.key"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    client.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    client.private_key_pem.write_to_path(str(paths["key"]))
    port = free_port()
    broker = KafkaBroker(advertised=f"127.0.0.1:{port}")
    broker.start()
    host, backend = broker.bootstrap.rsplit(":", 1)
    proxy = TlsProxy(ctx, (host, int(backend)), port).start()
    try:
        yield TlsKafka(f"127.0.0.1:{port}", clients, paths["ca"], paths["cert"], paths["key"],
                       proxy)
    finally:
        proxy.stop()
        broker.stop()


def round_trip_config(out: Path, k: TlsKafka, tls: str) -> str:
    """HTTP -> the Kafka output -> the broker -> the Kafka input -> a file, all over TLS."""
    return f"""
[daemon]
state_dir = "{out}/state"
control_socket = "{out}/control.sock"
stats_interval = "0s"
shutdown_timeout = "30s"

[listeners.http]
type = "http"
address = "127.0.0.1:0"

[listeners.from_kafka]
type = "kafka"
brokers = ["{k.address}"]
topics = ["tls-logs"]
group = "tls-test"
commit_interval = "200ms"
session_timeout = "3s"
tls = {tls}

[outputs.kafka]
type = "kafka"
brokers = ["{k.address}"]
topic = "tls-logs"
batch_timeout = "50ms"
retry_max = "1s"
tls = {tls}

[outputs.files]
type = "file"
path = "{out}/{{app}}.log"
flush_interval = "50ms"

[routes.to_kafka]
match = 'listener == "http"'
to = ["kafka"]

[routes.from_kafka]
match = 'listener == "from_kafka"'
to = ["files"]
"""


def test_records_go_to_kafka_and_back_over_mutual_tls(tmp_path: Path,
                                                      tls_kafka: TlsKafka) -> None:
    out = tmp_path / "out"
    out.mkdir()
    k = tls_kafka
    tls = f'{{ ca = "{k.ca}", cert = "{k.client_cert}", key = "{k.client_key}" }}'
    p = LogdProcess(round_trip_config(out, k, tls), tmp_path).start()
    try:
        p.wait_for(lambda e: e.get("msg") == "consuming", timeout=60)
        post_records(p, [{"app_id": "tls", "message": f"m{i}"} for i in range(500)])
        lines = wait_for_lines(out, "tls", 500)
        assert len(lines) == 500
        assert sorted(lines) == sorted(f'{{"app_id":"tls","message":"m{i}"}}'.encode()
                                       for i in range(500))
        assert k.proxy.handshakes >= 2  # the output's and the input's connections
        assert set(k.proxy.client_cns) == {"logd-1"}
        # The client certificate renewed in place, then a reload: new connections show it.
        renewed = k.clients.issue_cert("logd", common_name="logd-2")
        renewed.cert_chain_pems[0].write_to_path(str(k.client_cert))
        renewed.private_key_pem.write_to_path(str(k.client_key))
        p.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        reloaded = p.wait_for(lambda e: e.get("msg") == "reloaded")
        assert set(reloaded["changes"]) == {"tls reloaded: kafka", "tls reloaded: from_kafka"}
        k.proxy.drop_connections()
        post_records(p, [{"app_id": "tls", "message": f"n{i}"} for i in range(100)])
        lines = wait_for_lines(out, "tls", 600)
        assert len(lines) == 600
        assert "logd-2" in k.proxy.client_cns
        assert p.stop() == 0
    finally:
        if p.alive():
            p.stop(signal.SIGKILL)



def output_only_config(out: Path, k: TlsKafka, tls: str) -> str:
    return f"""
[daemon]
state_dir = "{out}/state"
control_socket = "{out}/control.sock"
stats_interval = "0s"
shutdown_timeout = "2s"

[listeners.http]
type = "http"
address = "127.0.0.1:0"

[outputs.kafka]
type = "kafka"
brokers = ["{k.address}"]
topic = "tls-refused"
retry_max = "1s"
tls = {tls}
"""


@pytest.mark.parametrize("case", ["no client certificate", "another CA", "plaintext"])
def test_a_broker_that_refuses_the_handshake_is_retried_and_said_why(
        tmp_path: Path, tls_kafka: TlsKafka, case: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    k = tls_kafka
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    tls = {"no client certificate": f'{{ ca = "{k.ca}" }}',
           "another CA": f'{{ ca = "{other_ca}", cert = "{k.client_cert}", '
                         f'key = "{k.client_key}" }}',
           "plaintext": "{ }"}[case]
    text = output_only_config(out, k, tls)
    if case == "plaintext":
        text = text.replace("tls = { }\n", "")
    p = LogdProcess(text, tmp_path).start()
    try:
        failed = p.wait_for(lambda e: e.get("msg", "").startswith("cannot connect to"),
                            timeout=60)
        assert failed["output"] == "kafka"
        assert k.proxy.handshakes == 0 or case == "no client certificate"
    finally:
        p.stop(signal.SIGKILL)


def test_a_client_certificate_without_its_key_is_a_config_error(tmp_path: Path) -> None:
    from logd.config import ConfigError, loads
    text = output_only_config(tmp_path, TlsKafka("127.0.0.1:9", trustme.CA(), tmp_path, tmp_path,
                                                 tmp_path, None),  # type: ignore[arg-type]
                              '{ cert = "/etc/logd/c.pem" }')
    with pytest.raises(ConfigError) as info:
        loads(text)
    assert dict(info.value.problems) == {
        "outputs.kafka.tls.key": "is required with cert"}


def test_an_unreadable_ca_file_stops_the_start_naming_the_key(tmp_path: Path) -> None:
    import subprocess
    import sys
    k = TlsKafka("127.0.0.1:9", trustme.CA(), tmp_path, tmp_path, tmp_path,
                 None)  # type: ignore[arg-type]
    (tmp_path / "logd.toml").write_text(
        output_only_config(tmp_path, k, f'{{ ca = "{tmp_path}/missing.pem" }}'))
    done = subprocess.run([sys.executable, "-m", "logd", "--config", "logd.toml"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 1
    assert f"outputs.kafka.tls.ca: cannot use {tmp_path}/missing.pem" in done.stderr
