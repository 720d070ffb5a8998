"""Syslog senders -> logd's syslog listener -> files, with logd in the test's event loop.

The senders are plain sockets in a thread; what real senders (logger, rsyslog) do is in
tests/e2e/test_syslog_senders.py.
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from testkit.harness import read_all_lines, run_loadgen
from testkit.inprocess import RunningDaemon, run_daemon
from testkit.syslog import syslog_file_config

RFC5424 = (b'<165>1 2003-10-11T22:14:15.003Z db1 evntslog - ID47 [exampleSDID@32473 iut="3" '
           b'eventSource="Application" eventID="1011"] \xef\xbb\xbfAn application event')
RFC3164 = b"<34>Oct 11 22:14:15 mymachine su[230]: 'su root' failed for lonvick"


def send_tcp(port: int, data: bytes, wait_close: bool = False) -> bool:
    """Send and half-close; True if logd closed the connection (read to its EOF/reset)."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(10)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        try:
            while s.recv(65536):
                pass
        except ConnectionResetError:
            return True
        return True


def send_udp(port: int, datagrams: list[bytes]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for d in datagrams:
            s.sendto(d, ("127.0.0.1", port))


def json_records(out: Path, prefix: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in read_all_lines(out, prefix)]


def octets(*messages: bytes) -> bytes:
    return b"".join(b"%d %s" % (len(m), m) for m in messages)


async def wait_records(logd: RunningDaemon, n: int, timeout: float = 15) -> None:
    """Until the listener has taken n records (UDP: nothing tells the sender)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while logd.stats()["listeners"]["syslog"]["records"] < n:
        assert loop.time() < end, "the listener did not take the records"
        await asyncio.sleep(0.01)  # datagrams have no reply to await


@pytest.mark.parametrize("framing", ["lf", "octet-counted"])
async def test_fields_of_both_formats_reach_the_json_file(tmp_path: Path, out: Path,
                                                          framing: str) -> None:
    msgs = [RFC5424, RFC3164]
    data = octets(*msgs) if framing == "octet-counted" else b"\n".join(msgs) + b"\n"
    async with run_daemon(syslog_file_config(out), tmp_path) as logd:
        await asyncio.to_thread(send_tcp, logd.port("syslog"), data)
        assert await logd.stop() == 0
    first = json_records(out, "evntslog.log")
    assert len(first) == 1
    rec = first[0]
    print(rec)
    assert rec["app"] == "evntslog" and rec["level"] == "notice"
    assert rec["ts"] == "2003-10-11T22:14:15.003000Z"
    assert rec["message"] == "An application event"
    assert rec["metadata"] == {
        "facility": "local4", "host": "db1", "msgid": "ID47",
        "sd": {"exampleSDID@32473": {"iut": "3", "eventSource": "Application",
                                     "eventID": "1011"}}}
    second = json_records(out, "su.log")
    assert len(second) == 1
    assert second[0]["level"] == "crit" and second[0]["severity"] == "crit"
    assert second[0]["metadata"] == {"facility": "auth", "host": "mymachine", "procid": "230"}
    assert second[0]["message"] == "'su root' failed for lonvick"
    assert logd.stats()["listeners"]["syslog"]["errors"] == {}


async def test_udp_datagrams_are_messages(tmp_path: Path, out: Path) -> None:
    msgs = [b"<13>1 - host%d app - - - message %d" % (i % 3, i) for i in range(300)]
    config = syslog_file_config(out, transport="udp", path="{host}.log", fmt="raw")
    async with run_daemon(config, tmp_path) as logd:
        await asyncio.to_thread(send_udp, logd.port("syslog"), msgs)
        await wait_records(logd, len(msgs))
        stats = logd.stats()["listeners"]["syslog"]
        assert await logd.stop() == 0
    assert stats["transport"] == "udp" and stats["errors"] == {}
    for h in range(3):
        lines = read_all_lines(out, f"host{h}.log")
        assert lines == [m for i, m in enumerate(msgs) if i % 3 == h]


async def test_routes_filter_on_syslog_fields(tmp_path: Path, out: Path) -> None:
    config = syslog_file_config(out, path="all.log", fmt="raw") + f"""
[outputs.auth]
type = "file"
path = "{out}/auth-db1.log"
flush_interval = "100ms"

[routes.auth]
match = 'facility == "auth" && host == "db1"'
to = ["auth"]

[routes.all]
match = "*"
to = ["files"]
"""
    msgs = [b"<34>1 - db1 sshd - - - a", b"<34>1 - db2 sshd - - - b",
            b"<14>1 - db1 sshd - - - c", b"<38>Oct 11 22:14:15 db1 sshd: d"]
    async with run_daemon(config, tmp_path) as logd:
        await asyncio.to_thread(send_tcp, logd.port("syslog"), b"\n".join(msgs) + b"\n")
        assert await logd.stop() == 0
    assert read_all_lines(out, "auth-db1.log") == [msgs[0], msgs[3]]
    assert read_all_lines(out, "all.log") == msgs


async def test_bad_input_is_counted_and_kept(tmp_path: Path, out: Path) -> None:
    """Wrong PRIs, no PRI, binary garbage, an over-long line: each kept (whole, or cut) and
    counted; the messages around them on the same connection arrive."""
    big = b"<13>1 - h app - - - " + b"x" * (1024 * 1024)
    lines = [b"<13>1 - h app - - - good 0", b"<999>1 - h app - - - wrong pri",
             b"<x>not a pri", b"no pri at all", bytes(range(256)).replace(b"\n", b""),
             big, b"<13>1 - h app - - - good 1"]
    config = syslog_file_config(out, path="all.log", fmt="json",
                                listener_extra='max_message_bytes = "4KiB"')
    async with run_daemon(config, tmp_path) as logd:
        await asyncio.to_thread(send_tcp, logd.port("syslog"), b"\n".join(lines) + b"\n")
        assert await logd.stop() == 0
    errors = logd.stats()["listeners"]["syslog"]["errors"]
    assert errors == {"unparsed": 4, "oversized": 1, "invalid_utf8": 1}
    recs = json_records(out, "all.log")
    assert [r["message"] for r in recs[:4]] == [
        "good 0", "<999>1 - h app - - - wrong pri", "<x>not a pri", "no pri at all"]
    assert all(r["app"] == "syslog" and r["level"] == "info" for r in recs[1:4])
    assert recs[5]["message"] == "x" * (4096 - len(b"<13>1 - h app - - - "))
    assert recs[6]["message"] == "good 1"
    assert len(recs) == 7


@pytest.mark.parametrize("bad, reason", [
    (b"12x <13>bad count", "bad_octet_count"),
    (b"99999999999 <13>", "bad_octet_count"),
    (b"5000 <13>1 - h app - - - too long", "octet_count_over_limit")])
async def test_an_octet_count_that_lies_closes_only_that_connection(
        tmp_path: Path, out: Path, bad: bytes, reason: str) -> None:
    good = [b"<13>1 - h app - - - good %d" % i for i in range(4)]
    config = syslog_file_config(out, path="all.log", fmt="raw",
                                listener_extra='max_message_bytes = "1KiB"')
    async with run_daemon(config, tmp_path) as logd:
        port = logd.port("syslog")
        await asyncio.to_thread(send_tcp, port, octets(*good[:2]) + bad + octets(good[2]))
        await logd.wait_for(lambda e: str(e.get("msg", "")).startswith("closing connection"))
        await asyncio.to_thread(send_tcp, port, octets(good[3]))
        assert await logd.stop() == 0
    assert read_all_lines(out, "all.log") == [good[0], good[1], good[3]]
    assert logd.stats()["listeners"]["syslog"]["errors"] == {reason: 1}


async def test_a_connection_closed_inside_a_message_keeps_what_came(tmp_path: Path,
                                                                    out: Path) -> None:
    msgs = [b"<13>1 - h app - - - whole", b"<13>1 - h app - - - cut short"]
    data = octets(*msgs)[:-6]
    async with run_daemon(syslog_file_config(out, path="all.log", fmt="raw"), tmp_path) as logd:
        await asyncio.to_thread(send_tcp, logd.port("syslog"), data)
        assert await logd.stop() == 0
    assert read_all_lines(out, "all.log") == [msgs[0], msgs[1][:-6]]
    assert logd.stats()["listeners"]["syslog"]["errors"] == {"truncated": 1}


async def test_udp_bad_datagrams_are_counted_and_kept(tmp_path: Path, out: Path) -> None:
    msgs = [b"<13>1 - h app - - - good 0", b"<x>nope", b"<13>1 - h app - - - " + b"y" * 3000,
            b"<13>1 - h app - - - good 1"]
    config = syslog_file_config(out, transport="udp", path="all.log", fmt="raw",
                                listener_extra='max_message_bytes = "1KiB"')
    async with run_daemon(config, tmp_path) as logd:
        await asyncio.to_thread(send_udp, logd.port("syslog"), msgs)
        await wait_records(logd, len(msgs))
        assert await logd.stop() == 0
    assert read_all_lines(out, "all.log") == [msgs[0], msgs[1], msgs[2][:1024], msgs[3]]
    assert logd.stats()["listeners"]["syslog"]["errors"] == {"unparsed": 1, "oversized": 1}


async def test_udp_datagram_cut_just_before_a_trailing_lf_is_oversized(tmp_path: Path,
                                                                        out: Path) -> None:
    # 1024 bytes, then the LF that recv(limit + 1) reads last, then more: the datagram is
    # over the limit even though what is left after dropping the LF fits it exactly.
    head = b"<13>1 - h app - - - "
    long = head + b"z" * (1024 - len(head)) + b"\n" + b"tail beyond the limit"
    exact = head + b"e" * (1024 - len(head)) + b"\n"  # the limit plus a trailing LF: fits
    config = syslog_file_config(out, transport="udp", path="all.log", fmt="raw",
                                listener_extra='max_message_bytes = "1KiB"')
    async with run_daemon(config, tmp_path) as logd:
        await asyncio.to_thread(send_udp, logd.port("syslog"), [long, exact])
        await wait_records(logd, 2)
        assert await logd.stop() == 0
    assert read_all_lines(out, "all.log") == [long[:1024], exact[:-1]]
    assert logd.stats()["listeners"]["syslog"]["errors"] == {"oversized": 1}


async def test_listener_counters_on_metrics(tmp_path: Path, out: Path) -> None:
    from logd.metrics import render_stats
    async with run_daemon(syslog_file_config(out, fmt="raw"), tmp_path) as logd:
        await asyncio.to_thread(send_tcp, logd.port("syslog"), b"<x>1\n<13>ok\n")
        text = render_stats(logd.stats())
        assert await logd.stop() == 0
    assert 'logd_listener_records_total{listener="syslog"} 2' in text
    assert 'logd_listener_errors_total{listener="syslog",reason="unparsed"} 1' in text


@pytest.mark.parametrize("transport, payload, framing", [
    ("tcp", "syslog5424", "lines"), ("tcp", "syslog3164", "octet-counted"),
    ("udp", "syslog5424", None)])
async def test_loadgen_syslog_arrives_exactly_once(tmp_path: Path, out: Path, transport: str,
                                                   payload: str, framing: str | None) -> None:
    count = 20_000 if transport == "udp" else 100_000
    config = syslog_file_config(out, transport=transport, path="{app}.log", fmt="raw")
    async with run_daemon(config, tmp_path) as logd:
        args = ["--target", f"{transport}://127.0.0.1:{logd.port('syslog')}",
                "--payload", payload, "--count", str(count), "--size", "200",
                "--connections", "2"]
        args += ["--framing", framing] if framing else []
        # UDP has no flow control: a rate the receive buffer absorbs on a busy machine.
        args += ["--rate", "20000"] if transport == "udp" else ["--rate", "0"]
        summary = await asyncio.to_thread(run_loadgen, *args)
        assert summary["sent"] == count
        await wait_records(logd, count, timeout=60)
        stats = logd.stats()["listeners"]["syslog"]
        assert await logd.stop() == 0
    assert stats["errors"] == {}
    lines = read_all_lines(out, "loadgen.log")
    assert len(lines) == count and len(set(lines)) == count


async def test_tls_with_octet_counting(tmp_path: Path, out: Path) -> None:
    import ssl

    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    config = syslog_file_config(out, path="all.log", fmt="raw",
                                listener_extra=f'tls = {{ cert = "{cert}", key = "{key}" }}')
    msgs = [b"<13>1 - h app - - - over tls %d" % i for i in range(100)]

    def send(port: int) -> None:
        with socket.create_connection(("127.0.0.1", port)) as raw, \
                client.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(octets(*msgs))

    async with run_daemon(config, tmp_path) as logd:
        await asyncio.to_thread(send, logd.port("syslog"))
        await wait_records(logd, len(msgs))
        assert await logd.stop() == 0
    assert read_all_lines(out, "all.log") == msgs


async def test_udp_kernel_drops_are_counted(tmp_path: Path, out: Path) -> None:
    """While logd does not read (as when a block buffer is full), what overflows the
    socket's receive buffer the kernel drops; the listener reports the kernel's count."""
    config = syslog_file_config(out, transport="udp", path="all.log", fmt="raw",
                                listener_extra='receive_buffer = "4KiB"')
    async with run_daemon(config, tmp_path) as logd:
        listener: Any = logd.daemon.listeners["syslog"]
        listener._stop_reading()
        await asyncio.to_thread(send_udp, logd.port("syslog"),
                                [b"<13>1 - h app - - - %d" % i + b"x" * 200 for i in range(2000)])
        drops = logd.stats()["listeners"]["syslog"]["errors"].get("kernel_drops", 0)
        listener._start_reading()
        assert await logd.stop() == 0
    kept = len(read_all_lines(out, "all.log"))
    print(f"kernel dropped {drops}, logd kept {kept} of 2000")
    assert drops > 0 and kept + drops == 2000
