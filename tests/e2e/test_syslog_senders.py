"""Real syslog senders into logd's syslog listener: util-linux `logger` (RFC 5424 and
RFC 3164, TCP with LF or octet counting, UDP) and rsyslogd forwarding (omfwd, both
framings); the fields are checked in the file output's JSON."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from testkit.harness import read_all_lines
from testkit.inprocess import RunningDaemon, run_daemon
from testkit.syslog import Rsyslog, free_udp_port, syslog_file_config


@pytest.fixture
def out(tmp_path: Path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


def logger(port: int, *args: str) -> None:
    subprocess.run(["logger", "--server", "127.0.0.1", "--port", str(port), *args],
                   check=True, timeout=30)


def records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in read_all_lines(out, "all.log")]


async def wait_records(logd: RunningDaemon, n: int, timeout: float = 30) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while logd.stats()["listeners"]["syslog"]["records"] < n:
        assert loop.time() < end, "the records did not arrive"
        await asyncio.sleep(0.02)  # another process sends: polled


@pytest.mark.parametrize("transport, args", [
    ("tcp", ["--tcp", "--rfc5424"]),
    ("tcp", ["--tcp", "--rfc5424", "--octet-count"]),
    ("udp", ["--udp", "--rfc5424"])])
async def test_logger_rfc5424(tmp_path: Path, out: Path, transport: str,
                              args: list[str]) -> None:
    config = syslog_file_config(out, transport=transport, path="all.log")
    async with run_daemon(config, tmp_path) as logd:
        await asyncio.to_thread(
            logger, logd.port("syslog"), *args, "-t", "billing", "-p", "auth.err",
            "--msgid", "PAY1", "--sd-id", "order@32473", "--sd-param", 'id="7"',
            "--sd-param", 'note="a \\"quoted\\" b"', "payment failed")
        await wait_records(logd, 1)
        assert await logd.stop() == 0
    [rec] = records(out)
    print(rec)
    assert rec["app"] == "billing" and rec["level"] == "err" and rec["severity"] == "error"
    assert rec["message"] == "payment failed"
    md = rec["metadata"]
    assert md["facility"] == "auth" and md["msgid"] == "PAY1" and md["host"]
    assert md["sd"]["order@32473"] == {"id": "7", "note": 'a "quoted" b'}
    assert logd.stats()["listeners"]["syslog"]["errors"] == {}


@pytest.mark.parametrize("transport", ["tcp", "udp"])
async def test_logger_rfc3164(tmp_path: Path, out: Path, transport: str) -> None:
    config = syslog_file_config(out, transport=transport, path="all.log")
    async with run_daemon(config, tmp_path) as logd:
        await asyncio.to_thread(logger, logd.port("syslog"), f"--{transport}", "--rfc3164",
                                "-t", "cron", "-p", "cron.warning", "job 42 done")
        await wait_records(logd, 1)
        assert await logd.stop() == 0
    [rec] = records(out)
    assert rec["app"] == "cron" and rec["level"] == "warning"
    assert rec["message"] == "job 42 done"
    assert rec["metadata"]["facility"] == "cron" and rec["metadata"]["host"]


@pytest.mark.parametrize("framing, template, given", [
    ("octet-counted", "RSYSLOG_SyslogProtocol23Format", "--rfc5424"),
    ("traditional", "RSYSLOG_SyslogProtocol23Format", "--rfc5424"),
    ("octet-counted", "RSYSLOG_TraditionalForwardFormat", "--rfc3164"),
    ("traditional", "RSYSLOG_ForwardFormat", "--rfc3164")])
async def test_rsyslog_forwards_to_logd(tmp_path: Path, out: Path, framing: str,
                                        template: str, given: str) -> None:
    """rsyslogd takes logger's messages over UDP and forwards them to logd over TCP, as
    RFC 5424 or in rsyslog's two BSD-style forwarding formats. (rsyslog forwards a BSD
    message's MSG with the space after its TAG: RFC 5424 input keeps the messages exact.)"""
    config = syslog_file_config(out, path="all.log")
    async with run_daemon(config, tmp_path) as logd:
        rsyslog = Rsyslog(tmp_path, logd.port("syslog"), framing, template=template)
        try:
            rsyslog.start(free_udp_port())
            await asyncio.to_thread(rsyslog.wait_ready)
            for i in range(20):
                await asyncio.to_thread(logger, rsyslog.input_port, "--udp", given,
                                        "-t", "web", "-p", "local3.notice", f"request {i}")
            await wait_records(logd, 20)
        finally:
            await asyncio.to_thread(rsyslog.stop)
        assert await logd.stop() == 0
    recs = records(out)
    assert sorted(r["message"] for r in recs) == sorted(f"request {i}" for i in range(20))
    for r in recs:
        assert r["app"] == "web" and r["level"] == "notice"
        assert r["metadata"]["facility"] == "local3" and r["metadata"]["host"]
    assert logd.stats()["listeners"]["syslog"]["errors"] == {}
