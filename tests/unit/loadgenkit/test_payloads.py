"""loadgenkit.payloads: records of the size asked for, framed as the wire contract says,
each one distinct in a run, with the level / event / app mix exact."""

from __future__ import annotations

import gzip
import json
import struct
from collections import Counter
from itertools import product

import pytest

from loadgenkit.config import Config
from loadgenkit.payloads import SEVERITY_NAMES, Builder, HttpBuilder, make_filler
from toolargs import UsageError

from .support import config


def builder(cfg: Config, worker: int = 0, conn: int = 0) -> Builder:
    return Builder(cfg, worker, conn, make_filler(cfg.seed, cfg.size))


def split_frames(data: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos < len(data):
        length, sev = struct.unpack_from(">IB", data, pos)
        out.append((sev, data[pos + 5:pos + 4 + length]))
        pos += 4 + length
    assert pos == len(data)
    return out


@pytest.mark.parametrize("size", [12, 40, 256, 4000])
@pytest.mark.parametrize("payload", ["text", "json"])
def test_a_frame_holds_a_payload_of_exactly_size_bytes_and_its_severity(
        size: int, payload: str) -> None:
    cfg = config("--target", "tcp://127.0.0.1:9", "--size", str(size), "--payload", payload,
                 "--count", "500", "--workers", "2", "--connections", "2")
    b = builder(cfg, worker=1, conn=0)
    block = b.block(0, 500)
    records = split_frames(bytes(block.data))
    assert len(records) == 500
    for seq, (sev, body) in enumerate(records):
        j = seq * 4 + 2  # record seq of connection 2 of 4 is record j of the run
        assert sev == cfg.levels[j % len(cfg.levels)]
        # The filler pads to --size; a fixed part longer than that is never cut.
        if payload == "text":
            head = b"t 1-0 %d" % seq
            assert body.startswith(head)
            assert len(body) == max(size, len(head))
        else:
            obj = json.loads(body)
            assert obj["id"] == f"t-1-0-{seq}" and obj["app"] == "loadgen"
            assert obj["level"] == SEVERITY_NAMES[sev]
            assert len(body) == size or (len(body) > size and obj["message"] == "")


def test_a_size_too_small_for_the_id_keeps_the_id_whole() -> None:
    cfg = config("--target", "tcp://127.0.0.1:9", "--size", "3", "--count", "20")
    body = split_frames(bytes(builder(cfg).block(17, 1).data))[0][1]
    assert body == b"t 0-0 17"


def test_lines_end_in_lf_and_hold_no_other() -> None:
    cfg = config("--target", "tcp://127.0.0.1:9", "--size", "100", "--framing", "lines",
                 "--count", "300")
    data = bytes(builder(cfg).block(0, 300).data)
    lines = data.split(b"\n")
    assert lines[-1] == b"" and len(lines) == 301
    assert all(len(line) == 100 for line in lines[:-1])


def test_block_offsets_cut_at_record_starts() -> None:
    cfg = config("--target", "tcp://127.0.0.1:9", "--size", "90", "--count", "100")
    block = builder(cfg).block(10, 50)
    for a, z in ((0, 50), (3, 4), (17, 41)):
        part = bytes(block.data[block.offset(a):block.offset(z)])
        assert [int(body.split(b" ")[2]) for _, body in split_frames(part)] == \
            [10 + k for k in range(a, z)]


def test_every_record_of_a_run_is_distinct_across_workers_and_connections() -> None:
    cfg = config("--target", "tcp://127.0.0.1:9", "--size", "64", "--count", "6000",
                 "--workers", "3", "--connections", "2")
    payloads = [body for w, c in product(range(3), range(2))
                for _, body in split_frames(bytes(builder(cfg, w, c).block(0, 1000).data))]
    assert len(payloads) == 6000 and len(set(payloads)) == 6000


def test_send_times_are_carried_when_asked() -> None:
    cfg = config("--target", "tcp://127.0.0.1:9", "--size", "80", "--timestamps",
                 "--count", "3")
    stamps = [1_795_426_800_000_000_001, 1_795_426_800_000_000_002, 1_795_426_800_000_000_003]
    bodies = [body for _, body in split_frames(bytes(builder(cfg).block(0, 3, stamps).data))]
    assert [body.split(b" ")[3] for body in bodies] == [b"ts=%d" % s for s in stamps]


def test_levels_and_events_mix_exactly_over_each_cycle() -> None:
    cfg = config("--target", "tcp://127.0.0.1:9", "--size", "120", "--count", "4000",
                 "--levels", "info:3,warn:2,error:1", "--events", "a:5,b:3,c:2")
    assert cfg.payload == "json" and len(cfg.levels) == 6 and len(cfg.events) == 10
    records = split_frames(bytes(builder(cfg).block(0, 60).data))
    levels = Counter(SEVERITY_NAMES[sev] for sev, _ in records)
    events = Counter(json.loads(body)["event"] for _, body in records)
    # 60 records are 10 cycles of the level table and 6 of the event table
    assert levels == {"info": 30, "warn": 20, "error": 10}
    assert events == {"a": 30, "b": 18, "c": 12}


def http_cfg(*args: str) -> Config:
    return config("--target", "http://127.0.0.1:9/v1/logs", *args)


def http_builder(cfg: Config, worker: int = 0, conn: int = 0) -> HttpBuilder:
    return HttpBuilder(cfg, worker, conn, make_filler(cfg.seed, cfg.size))


def test_an_http_record_is_seed_001_shaped_and_size_bytes_long() -> None:
    cfg = http_cfg("--size", "300", "--batch", "50", "--workers", "2", "--connections", "2")
    body = http_builder(cfg, worker=1, conn=1).body(100, 50)
    records = json.loads(body)
    assert len(records) == 50
    assert len(body) == 2 + 50 * 300 + 49, "[ records of 300 bytes, joined by commas ]"
    for k, r in enumerate(records):
        assert set(r) == {"app_id", "level", "message", "source", "timestamp", "metadata"}
        assert r["source"] == "loadgen" and isinstance(r["timestamp"], float)
        assert r["metadata"] == {"worker": 1, "conn": 1, "seq": 100 + k, "run": "t"}


def test_http_records_are_distinct_and_apps_and_levels_mix_exactly() -> None:
    cfg = http_cfg("--size", "200", "--batch", "100", "--apps", "a:2,b:1",
                   "--levels", "info:1,error:1", "--workers", "2", "--connections", "3")
    n = cfg.total_connections
    by_place = {}
    for w, c in product(range(2), range(3)):
        for r in json.loads(http_builder(cfg, w, c).body(0, 100)):
            j = r["metadata"]["seq"] * n + w * 3 + c
            assert j not in by_place, "two records in one place of the run"
            by_place[j] = (r["app_id"], r["level"])
    assert sorted(by_place) == list(range(600))
    # any run of len(apps) * len(levels) = 6 consecutive records holds the exact mix
    for first in range(0, 600, 6):
        mix = Counter(by_place[j] for j in range(first, first + 6))
        assert mix == {("a", "info"): 2, ("a", "error"): 2, ("b", "info"): 1,
                       ("b", "error"): 1}


def test_ndjson_and_gzip_bodies_hold_the_same_records() -> None:
    plain = json.loads(http_builder(http_cfg("--batch", "20")).body(0, 20))
    nd = http_builder(http_cfg("--batch", "20", "--ndjson")).body(0, 20)
    assert len(nd) == 20 * (256 + 1) and all(len(line) == 256 for line in nd.splitlines())
    zipped = http_builder(http_cfg("--batch", "20", "--gzip")).body(0, 20)
    for got in ([json.loads(line) for line in nd.splitlines()],
                json.loads(gzip.decompress(zipped))):
        assert [dict(r, timestamp=0) for r in got] == [dict(r, timestamp=0) for r in plain]


@pytest.mark.parametrize("payload", ["text", "json"])
def test_services_put_the_level_and_service_in_every_payload_at_their_weights(
        payload: str) -> None:
    cfg = config("--target", "tcp://127.0.0.1:9", "--framing", "lines", "--payload", payload,
                 "--services", "payment:3,auth:1", "--levels", "error:1,info:3",
                 "--size", "200", "--count", "1600")
    lines = bytes(builder(cfg).block(0, 1600).data).decode().splitlines()
    assert len(lines) == 1600 and all(len(line) == 200 for line in lines)
    pairs: Counter[tuple[str, str]] = Counter()
    for seq, line in enumerate(lines):
        level = SEVERITY_NAMES[cfg.levels[seq % len(cfg.levels)]]
        if payload == "text":
            word, service, rest = line.split(" ", 2)
            assert word == level.upper() and rest.startswith(f"t 0-0 {seq} ")
        else:
            obj = json.loads(line)
            assert obj["level"] == level and obj["metadata"]["region"]
            service = obj["service"]
        pairs[level, service] += 1
    # Every level meets every service, each pair at the product of their weights.
    assert pairs == {("error", "payment"): 300, ("error", "auth"): 100,
                     ("info", "payment"): 900, ("info", "auth"): 300}


def test_services_are_refused_for_http_targets() -> None:
    with pytest.raises(UsageError, match="--services applies to tcp:// targets only"):
        config("--target", "http://127.0.0.1:9/v1/logs", "--services", "a:1")
