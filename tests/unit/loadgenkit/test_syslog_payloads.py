"""loadgen's syslog payloads: messages logd's parser reads, of --size bytes, framed as asked."""

from __future__ import annotations

import pytest

from loadgenkit.payloads import SEVERITY_NAMES, Builder, make_filler
from logd.syslog.framing import OctetCountDecoder
from logd.syslog.parse import SEVERITIES, parse

from .support import config


@pytest.mark.parametrize("payload", ["syslog5424", "syslog3164"])
@pytest.mark.parametrize("framing", ["lines", "octet-counted"])
def test_syslog_records_parse_with_their_level_and_id(payload: str, framing: str) -> None:
    cfg = config("--target", "tcp://127.0.0.1:9", "--payload", payload, "--framing", framing,
                 "--size", "150", "--count", "300")
    b = Builder(cfg, 0, 0, make_filler(cfg.seed, cfg.size))
    data = bytes(b.block(0, 300).data)
    lines = framing == "lines"
    msgs = data.split(b"\n")[:-1] if lines else OctetCountDecoder(1024).feed(data)
    assert len(msgs) == 300
    for seq, m in enumerate(msgs):
        assert len(m) == 150
        f = parse(m)
        sev = cfg.levels[seq % len(cfg.levels)]
        assert f["level"] == SEVERITIES[sev] and SEVERITY_NAMES[sev][:3] == f["level"][:3]
        assert f["app"] == "loadgen" and f["host"] == "loadgen-host"
        assert f["facility"] == "user" and "timestamp" in f
        assert f["message"].startswith(f"t 0-0 {seq} ")


def test_udp_sends_a_datagram_per_record() -> None:
    cfg = config("--target", "udp://127.0.0.1:9", "--payload", "syslog5424", "--size", "100",
                 "--count", "10")
    assert cfg.framing == "datagrams"
    block = Builder(cfg, 0, 0, make_filler(cfg.seed, cfg.size)).block(0, 10)
    assert [block.offset(k) for k in range(11)] == [100 * k for k in range(11)]
