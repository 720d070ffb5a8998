"""Taps (logctl tail): matching records are copied; a slow reader only loses its own copy."""

from __future__ import annotations

from logd.config import RouteConfig
from logd.filters import compile_filter
from logd.record import Batch
from logd.router import Router
from logd.tap import Tap


def batch(*payloads: bytes, sevs: bytes | None = None) -> Batch:
    return Batch(list(payloads), sevs, "emitters", 12.5, sum(map(len, payloads)))


def test_a_tap_sees_what_its_filter_matches_before_routing() -> None:
    router = Router({"r": RouteConfig(to=("nowhere",))}, {})
    tap = Tap(compile_filter("level >= warn"))
    router.taps.append(tap)
    router.dispatch(batch(b"a", b"b", b"\xff", sevs=bytes([3, 6, 4])))
    records, dropped = tap.take()
    assert dropped == 0
    assert records == [
        {"time": 12.5, "source": "emitters", "level": "error", "payload": "a"},
        {"time": 12.5, "source": "emitters", "level": "warn", "payload": "\ufffd"},
    ]
    assert router.unrouted == 3, "the tap takes copies: routing is unchanged"
    assert tap.take() == ([], 0)


def test_a_full_tap_drops_and_counts() -> None:
    tap = Tap(compile_filter("*"), max_records=3, max_bytes=1000)
    tap.offer(batch(b"1", b"2", b"3", b"4", b"5"))
    tap.offer(batch(b"x" * 2000))  # over max_bytes on its own
    records, dropped = tap.take(limit=2)
    assert [r["payload"] for r in records] == ["1", "2"] and dropped == 3
    records, dropped = tap.take()
    assert [r["payload"] for r in records] == ["3"] and dropped == 0
