"""benchkit.rsyslog_conf and the rsyslog peer: configs rsyslogd accepts, and a running
rsyslogd keeps exactly the records logd's filter of the same scenario keeps."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchkit.peers.rsyslog import RsyslogPeer, check_config, rsyslogd_path
from benchkit.rsyslog_conf import RsyslogSetup, queue_records, render
from benchkit.sampler import count_lines, wait_until_settled
from benchkit.scenarios import SCENARIOS, Scenario
from loadgenkit.cli import build_parser, make_config
from loadgenkit.payloads import Builder, make_filler
from logd.filters import compile_filter
from logd.record import Batch

RSYSLOGD = rsyslogd_path()
needs_rsyslogd = pytest.mark.skipif(
    RSYSLOGD is None, reason="rsyslogd is not installed (make bench-deps installs it)")


def setup_for(scenario: Scenario, tmp_path: Path) -> RsyslogSetup:
    return RsyslogSetup(port=40514, out_file=tmp_path / "out" / "bench.log", work_dir=tmp_path,
                        condition=scenario.rsyslog_match, parse_json=scenario.parses_json,
                        record_bytes=scenario.size + 1)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_a_config_listens_with_imptcp_and_writes_the_raw_line(name: str,
                                                              tmp_path: Path) -> None:
    scenario = SCENARIOS[name]
    text = render(setup_for(scenario, tmp_path))
    assert ('input(type="imptcp" address="127.0.0.1" port="40514" ruleset="bench"\n'
            '      flowControl="off")') in text
    assert 'string="%rawmsg%\\n"' in text and 'asyncWriting="on"' in text
    assert f'queue.size="{queue_records(scenario.size + 1)}"' in text
    assert ("mmjsonparse" in text) == (name == "json_filter")
    if scenario.rsyslog_match is None:
        assert " if " not in text
    else:
        assert f"if {scenario.rsyslog_match} then" in text


def test_the_main_queue_holds_what_logds_64_mib_buffer_holds() -> None:
    assert queue_records(257) == (64 << 20) // 257
    assert queue_records(1 << 30) == 10_000  # never below a sane minimum


@needs_rsyslogd
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_rsyslogd_accepts_the_config_of_every_scenario(name: str, tmp_path: Path) -> None:
    assert RSYSLOGD is not None
    conf = tmp_path / "rsyslog.conf"
    conf.write_text(render(setup_for(SCENARIOS[name], tmp_path)))
    assert check_config(RSYSLOGD, conf) is None


@needs_rsyslogd
def test_rsyslogd_names_what_it_refuses(tmp_path: Path) -> None:
    assert RSYSLOGD is not None
    conf = tmp_path / "rsyslog.conf"
    conf.write_text(render(setup_for(SCENARIOS["basic"], tmp_path))
                    .replace("asyncWriting", "asyncWritingg"))
    problem = check_config(RSYSLOGD, conf)
    assert problem is not None and "asyncWritingg" in problem


def loadgen_lines(payload: str, count: int) -> list[bytes]:
    """Lines as `tools/bench compare` sends them, built by loadgen's own code."""
    cfg = make_config(build_parser().parse_args([
        "--target", "tcp://127.0.0.1:9", "--framing", "lines", "--payload", payload,
        "--services", "payment-service:30,auth-service:25,api-gateway:25", "--size", "120",
        "--seed", "5", "--run-id", "t", "--count", str(count)]))
    block = Builder(cfg, 0, 0, make_filler(cfg.seed, cfg.size)).block(0, count)
    return bytes(block.data).splitlines()


class Lines:
    """Records counted by LF: these lines differ in length."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def poll(self) -> int:
        return count_lines(self.folder)


# Near misses: case, a longer word holding the word, other fields holding the value.
EDGE_LINES = [b"error user lower case", b"WARNING auth-service longer word", b"ERROR",
              b"userauthpayment", b'{"service": "payment-service"}',
              b'{"service": "payment-service-2", "x": "payment-service"}',
              b'{"metadata": {"service": "payment-service"}}', b"", b"  ERROR  user  "]


@needs_rsyslogd
@pytest.mark.parametrize("name", ["error_filter", "complex_filter", "json_filter"])
def test_rsyslog_keeps_exactly_what_logds_filter_keeps(name: str, tmp_path: Path) -> None:
    import socket

    scenario = SCENARIOS[name]
    lines = loadgen_lines(scenario.payload, 3000) + EDGE_LINES
    batch = Batch(lines, None, "emitters", 1700000000.0, sum(map(len, lines)))
    kept = [lines[i] for i in compile_filter(scenario.logd_match).select(batch)]
    assert 0 < len(kept) < len(lines)
    running = RsyslogPeer().start(tmp_path, scenario)
    try:
        with socket.create_connection(("127.0.0.1", running.port), timeout=10) as s:
            s.sendall(b"".join(line + b"\n" for line in lines))
        written = wait_until_settled(Lines(running.out_dir), quiet=3.0, timeout=30,
                                     expected=len(kept))
    finally:
        running.stop()
    assert written == len(kept)
    assert (running.out_dir / "bench.log").read_bytes().splitlines() == kept
