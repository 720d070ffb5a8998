"""logctl top's figures: rates and the rest from two samples of logd's stats."""

from __future__ import annotations

from typing import Any

import pytest

from logd.top.figures import Lag, Sample, compute, lag_of, problem_of, rate


def stats(pid: int = 100, cpu: float = 1.0, emitters: int = 0, emitted_bytes: int = 0,
          written: int = 0, **extra_listeners: dict[str, Any]) -> dict[str, Any]:
    return {
        "process": {"pid": pid, "cpu_user_s": cpu, "cpu_system_s": 0.5, "rss_bytes": 1 << 20,
                    "uptime_s": 90.0},
        "daemon": {"instance": "2", "version": "0.1.0"},
        "listeners": {"emitters": {"type": "tcp", "records": emitters,
                                   "bytes": emitted_bytes, "errors": {"oversized": 2,
                                                                      "truncated": 1}},
                      **extra_listeners},
        "outputs": {"files": {"type": "file", "accepted": written, "written": written,
                              "bytes": 10 * written, "queued_bytes": 1 << 19,
                              "queued_records": 7, "queue_limit_bytes": 1 << 21,
                              "dropped": 3, "errors": 1, "retries": 4}},
    }


def test_rates_are_the_change_over_the_time_between_two_samples() -> None:
    before = Sample(10.0, stats(cpu=1.0, emitters=1000, emitted_bytes=50_000, written=900))
    after = Sample(12.0, stats(cpu=1.5, emitters=5000, emitted_bytes=250_000, written=4900))
    v = compute(before, after)
    emitters, = v.listeners
    files, = v.outputs
    assert emitters.records == 5000 and emitters.records_per_s == 2000.0
    assert emitters.bytes_per_s == 100_000.0
    assert emitters.errors == 3  # counts by reason, summed
    assert files.records == 4900 and files.records_per_s == 2000.0  # written, not accepted
    assert files.bytes_per_s == 20_000.0
    assert files.fill_pct == 25.0 and files.queued_records == 7
    assert (files.dropped, files.errors, files.retries) == (3, 1, 4)
    assert v.in_per_s == 2000.0 and v.out_per_s == 2000.0
    assert v.cpu_pct == pytest.approx(25.0)  # 0.5 s of CPU in 2 s
    assert (v.instance, v.version, v.rss_bytes, v.uptime_s) == ("2", "0.1.0", 1 << 20, 90.0)


def test_the_first_sample_has_counts_and_no_rates() -> None:
    v = compute(None, Sample(1.0, stats(emitters=42)))
    assert v.listeners[0].records == 42
    assert v.listeners[0].records_per_s is None and v.listeners[0].bytes_per_s is None
    assert v.in_per_s is None and v.out_per_s is None and v.cpu_pct is None


def test_no_rates_across_a_restart_or_a_counter_that_went_down() -> None:
    restarted = compute(Sample(0.0, stats(pid=1, emitters=900)),
                        Sample(1.0, stats(pid=2, emitters=10)))
    assert restarted.listeners[0].records_per_s is None and restarted.cpu_pct is None
    replaced = compute(Sample(0.0, stats(emitters=900, written=900)),
                       Sample(1.0, stats(emitters=950, written=10)))
    assert replaced.listeners[0].records_per_s == 50.0
    assert replaced.outputs[0].records_per_s is None


def test_a_listener_that_delivers_counts_out_and_one_that_appeared_counts_later() -> None:
    pool = {"type": "analyzer", "records": 0, "written": 0, "queued_bytes": 0,
            "queue_limit_bytes": 100}
    before = Sample(0.0, stats(emitters=0, written=0, analyzers=pool))
    after = Sample(1.0, stats(emitters=300, written=100,
                              analyzers={**pool, "records": 300, "written": 200},
                              tail={"type": "tail", "records": 5}))
    v = compute(before, after)
    assert [r.name for r in v.listeners] == ["emitters", "analyzers", "tail"]
    assert v.in_per_s == 300.0          # emitters only: the pool delivers, tail is new
    assert v.out_per_s == 300.0         # files 100 + the pool's 200 acknowledged
    assert v.listeners[2].records_per_s is None


def test_figures_a_component_does_not_report_are_none() -> None:
    v = compute(None, Sample(0.0, stats(odd={"type": "otlp"})))
    odd = v.listeners[1]
    assert odd.records is None and odd.queued_bytes is None and odd.fill_pct is None
    assert odd.dropped is None and odd.errors is None and odd.retries is None
    assert odd.lag is None and odd.type == "otlp"


@pytest.mark.parametrize(("s", "lag"), [
    ({"lag": 12, "backlog": {"records": 12}}, Lag(12, "records")),
    ({"backlog": {"bytes": 4096, "records": 3}}, Lag(4096, "bytes")),
    ({"lag_bytes": 77}, Lag(77, "bytes")),
    ({"byte_lag": 5}, Lag(5, "bytes")),
    ({"consumer_lag": 9}, Lag(9, "records")),
    ({"flag": 1, "lagging": 3, "partitions": {"t-0": {"lag": 4}}}, None),
])
def test_lag_is_found_whatever_the_component_calls_it(s: dict[str, Any],
                                                      lag: Lag | None) -> None:
    assert lag_of(s) == lag


@pytest.mark.parametrize(("before", "after", "dt", "expected"), [
    (100, 300, 2.0, 100.0),
    (100, 100, 1.0, 0.0),
    (100, 50, 1.0, None),
    (None, 50, 1.0, None),
    (100, 200, 0.0, None),
])
def test_rate(before: int | None, after: int, dt: float, expected: float | None) -> None:
    assert rate(before, after, dt) == expected


def test_a_problem_is_what_the_component_says_or_that_it_is_not_connected() -> None:
    assert problem_of({"problem": "disk full", "connected": False}) == "disk full"
    assert problem_of({"problem": None, "connected": False}) == "not connected"
    assert problem_of({"problem": None, "connected": True}) is None
    assert problem_of({}) is None
