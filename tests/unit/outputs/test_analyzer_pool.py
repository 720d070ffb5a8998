"""Analyzer ACKs carry seq mod 2**32: they stay right past 4 billion messages."""

from __future__ import annotations

from collections import deque

from logd.outputs.analyzer_pool import AnalyzerListenerConfig, AnalyzerPool, _Analyzer


def analyzer_at(acked: int, sent: int) -> tuple[AnalyzerPool, _Analyzer]:
    """An analyzer that has been sent messages 1..sent and has ACKed up to `acked`."""
    pool = AnalyzerPool(AnalyzerListenerConfig(name="analyzers"))
    a = _Analyzer(pool)
    a.id = "analyzers-1"
    a.window.acked = acked
    a.window.next_seq = sent + 1
    n = sent - acked
    a.window.chunks = deque([[acked + 1, [b"m"] * n, bytes(n), None]])
    pool.analyzers[a.id] = a
    return pool, a


def test_an_ack_past_the_wrap_counts_what_it_covers() -> None:
    pool, a = analyzer_at(acked=2**32 - 10, sent=2**32 + 90)
    pool._ack(a, 40)  # seq 2**32 + 40 on the wire
    assert a.acked == 2**32 + 40 and a.in_flight == 50
    assert pool.acked_total == 50
    assert a.window.chunks[0][0] == 2**32 + 41 and len(a.window.chunks[0][1]) == 50
    assert not pool.errors


def test_old_and_repeated_acks_say_nothing() -> None:
    pool, a = analyzer_at(acked=2**32 + 5, sent=2**32 + 100)
    pool._ack(a, 5)           # the same again
    pool._ack(a, 2**32 - 3)   # from before the wrap
    assert a.acked == 2**32 + 5 and not pool.errors and not a.closed


def test_an_ack_beyond_what_was_sent_closes_the_analyzer() -> None:
    pool, a = analyzer_at(acked=2**32 - 10, sent=2**32 + 90)
    pool._ack(a, 91)
    assert pool.errors["ack_beyond_sent"] == 1 and a.closed


def test_acks_deliver_on_the_receipt_record_by_record() -> None:
    from logd.delivery import Receipt
    pool, a = analyzer_at(acked=0, sent=0)
    receipt = Receipt()
    receipt.expect(10)
    receipt.accepted(10)
    a.window.chunks = deque([[1, [b"m"] * 6, bytes(6), receipt],
                             [7, [b"m"] * 4, bytes(4), receipt]])
    a.window.next_seq = 11
    pool._ack(a, 3)
    assert receipt.undelivered == 7
    pool._ack(a, 8)
    assert receipt.undelivered == 2 and not receipt.is_delivered
    pool._ack(a, 10)
    assert receipt.is_delivered
