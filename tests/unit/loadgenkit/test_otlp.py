"""loadgenkit.otlp: the hand-written protobuf is an ExportLogsServiceRequest the official
classes read, its OTLP/JSON twin maps to the same records in logd, and the level and app mix
is HttpBuilder's."""

from __future__ import annotations

import gzip
from collections import Counter

import orjson
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from loadgenkit.cli import main
from loadgenkit.otlp import OtlpBuilder, rejected_of
from loadgenkit.payloads import make_filler
from logd.otlp.otlp_json import from_json
from logd.otlp.protobuf import decode_protobuf

from .support import config


def builder(*args: str, worker: int = 0, conn: int = 0) -> OtlpBuilder:
    cfg = config("--target", "http://127.0.0.1:9/v1/logs", "--workers", "2",
                 "--connections", "2", *args)
    return OtlpBuilder(cfg, worker, conn, make_filler(cfg.seed, cfg.size))


def test_protobuf_bodies_are_requests_of_every_record_grouped_by_app_and_scope() -> None:
    b = builder("--otlp", "protobuf", "--apps", "a:1,b:1,c:2", "--levels", "info:3,error:1",
                worker=1, conn=1)
    req = ExportLogsServiceRequest.FromString(b.body(40, 200))
    recs = [(rl, sl, r) for rl in req.resource_logs for sl in rl.scope_logs
            for r in sl.log_records]
    assert len(recs) == 200
    assert {sl.scope.name for _, sl, _ in recs} == {"io.loadgen.http", "io.loadgen.db"}
    seqs = sorted(next(a.value.int_value for a in r.attributes if a.key == "loadgen.seq")
                  for _, _, r in recs)
    assert seqs == list(range(40, 240))
    apps = Counter(next(a.value.string_value for a in rl.resource.attributes
                        if a.key == "service.name") for rl, _, _ in recs)
    assert apps == {"a": 50, "b": 50, "c": 100}
    # Levels mix over the run's connections, as for logd's JSON (record j: levels[j % L]).
    levels: Counter[str] = Counter()
    for w in (0, 1):
        for c in (0, 1):
            other = builder("--otlp", "protobuf", "--levels", "info:3,error:1", worker=w,
                            conn=c)
            levels.update(r.severity_text
                          for rl in ExportLogsServiceRequest.FromString(other.body(0, 100))
                          .resource_logs for sl in rl.scope_logs for r in sl.log_records)
    assert levels == {"INFO": 300, "ERROR": 100}
    assert all(len(r.trace_id) == 16 and len(r.span_id) == 8 and r.flags == 1
               and r.time_unix_nano > 0 for _, _, r in recs)


@pytest.mark.parametrize("size", [400, 40_000])
def test_records_are_about_size_bytes_in_protobuf(size: int) -> None:
    b = builder("--otlp", "protobuf", "--size", str(size))
    req = ExportLogsServiceRequest.FromString(b.body(0, 100))
    sizes = [r.ByteSize() for rl in req.resource_logs for sl in rl.scope_logs
             for r in sl.log_records]
    assert all(0.9 * size <= s <= 1.1 * size for s in sizes), sizes


def test_json_bodies_map_to_the_records_of_the_protobuf_ones() -> None:
    pb = decode_protobuf(builder("--otlp", "protobuf").body(0, 60))
    js = from_json(orjson.loads(builder("--otlp", "json").body(0, 60)))
    assert (pb.rejected, js.rejected, len(pb.objs)) == (0, 0, 60)
    for o in pb.objs + js.objs:
        del o["timestamp"]  # each body is stamped when built
    assert js.objs == pb.objs
    assert js.severities == pb.severities


def test_gzip_compresses_the_body() -> None:
    b = builder("--otlp", "protobuf", "--gzip")
    assert len(ExportLogsServiceRequest.FromString(gzip.decompress(b.body(0, 10)))
               .resource_logs) >= 1


def test_rejected_counts_are_read_from_both_encodings() -> None:
    resp = ExportLogsServiceResponse()
    assert rejected_of(resp.SerializeToString(), "protobuf") == 0
    resp.partial_success.rejected_log_records = 300
    resp.partial_success.error_message = "x" * 200  # a length of two varint bytes
    assert rejected_of(resp.SerializeToString(), "protobuf") == 300
    resp.partial_success.rejected_log_records = 0
    assert rejected_of(resp.SerializeToString(), "protobuf") == 0
    assert rejected_of(b"{}", "json") == 0
    assert rejected_of(b'{"partialSuccess": {"rejectedLogRecords": "4"}}', "json") == 4
    assert rejected_of(b"<html>", "json") is None
    assert rejected_of(b"\xff", "protobuf") is None


def test_otlp_is_for_http_targets_and_not_with_ndjson(capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    with pytest.raises(SystemExit):
        main(["--target", "tcp://127.0.0.1:9", "--otlp", "json"])
    assert "--otlp applies to http:// targets only" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--target", "http://127.0.0.1:9/v1/logs", "--otlp", "json", "--ndjson"])
    assert "choose one body format" in capsys.readouterr().err
