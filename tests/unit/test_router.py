"""Routes: filters, unions, weighted groups (with real FileOutput destinations, not started)."""

from __future__ import annotations

from pathlib import Path

import pytest

from logd.config import ConfigError, loads
from logd.outputs.file import FileOutput
from logd.record import Batch
from logd.router import Router


def build(tmp_path: Path, routes: str) -> tuple[Router, dict[str, FileOutput]]:
    cfg = loads(f"""
[listeners.e]
type = "tcp"
[outputs.a]
type = "file"
path = "{tmp_path}/a.log"
[outputs.b]
type = "file"
path = "{tmp_path}/b.log"
[outputs.c]
type = "file"
path = "{tmp_path}/c.log"
{routes}
""")
    outputs = {n: FileOutput(c) for n, c in cfg.outputs.items()}
    return Router(cfg.routes, outputs), outputs


def batch(payloads: list[bytes], sevs: bytes | None = None) -> Batch:
    return Batch(payloads, sevs, "e", 0.0, sum(map(len, payloads)))


def taken(out: FileOutput) -> int:
    return out.buffer.accepted_records


def test_without_routes_every_output_gets_everything(tmp_path: Path) -> None:
    router, outs = build(tmp_path, "")
    router.dispatch(batch([b"x"] * 10))
    assert [taken(o) for o in outs.values()] == [10, 10, 10]


def test_routes_union_once_and_unrouted_counted(tmp_path: Path) -> None:
    router, outs = build(tmp_path, """
[routes.errors]
match = "level >= error"
to = ["a"]
[routes.auth]
match = "auth"
to = ["a", "b"]
""")
    router.dispatch(batch([b"auth fail", b"ok", b"auth ok", b"boom"], bytes([3, 6, 6, 2])))
    assert taken(outs["a"]) == 3  # "auth fail" matched both routes: delivered once
    assert taken(outs["b"]) == 2
    assert taken(outs["c"]) == 0
    assert router.unrouted == 1


def test_weighted_group_sends_each_record_to_one_member_by_weight(tmp_path: Path) -> None:
    router, outs = build(tmp_path, """
[routes.split]
to = ["a", "b", "c"]
weights = [0.5, 0.3, 0.2]
""")
    for _ in range(100):
        router.dispatch(batch([b"r"] * 1000))
    got = [taken(outs[n]) for n in "abc"]
    assert sum(got) == 100_000
    for share, weight in zip(got, (0.5, 0.3, 0.2), strict=True):
        assert abs(share / 100_000 - weight) <= 0.01


def test_weights_must_match_the_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"routes\.split\.weights: expected 2 weights"):
        build(tmp_path, '[routes.split]\nto = ["a", "b"]\nweights = [1]\n')
    with pytest.raises(ConfigError, match="weights must be finite"):
        build(tmp_path, '[routes.split]\nto = ["a", "b"]\nweights = [1, -1]\n')


def test_an_output_that_cannot_take_a_batch_does_not_keep_it_from_the_others() -> None:
    from logd.config import MemoryBufferConfig
    from logd.outputs.base import Output

    class Broken(Output):
        def submit(self, batch: Batch, receipt: object = None) -> bool:
            raise ValueError("a bug")

    broken = Broken("broken", "test", MemoryBufferConfig())
    fine = Output("fine", "test", MemoryBufferConfig())
    router = Router({}, {"broken": broken, "fine": fine})
    router.dispatch(Batch([b"a", b"b"], None, "e", 0.0, 2))
    assert fine.buffer.queued_records == 2
    assert broken.buffer.dropped_records == 2 and router.submit_errors == 2
