"""analyzerkit.latency: nearest-rank percentiles, an exact maximum past the sample cap, and
which token of loadgen's payloads carries a send time."""

from __future__ import annotations

from analyzerkit.latency import TS_JSON, TS_TEXT, Latencies, detect_timestamps


def test_percentiles_are_nearest_rank_in_milliseconds() -> None:
    lat = Latencies()
    lat.add_many([ms * 1_000_000 for ms in range(1, 1001)])  # 1 .. 1000 ms
    assert lat.summary() == {"p50": 500.0, "p99": 990.0, "p999": 999.0, "max": 1000.0,
                             "samples": 1000}


def test_past_the_cap_samples_are_a_reservoir_and_the_maximum_stays_exact() -> None:
    lat = Latencies(cap=100)
    lat.add_many([1_000_000] * 5000 + [7_000_000_000] + [1_000_000] * 5000)
    summary = lat.summary()
    assert summary is not None
    assert len(lat.samples) == 100 and summary["samples"] == 10_001
    assert summary["max"] == 7000.0 and summary["p50"] == 1.0


def test_no_samples_no_summary() -> None:
    assert Latencies().summary() is None


def test_send_times_are_found_in_text_and_json_payloads_only_as_nanoseconds() -> None:
    assert detect_timestamps(b"run 0-0 12 ts=1795426800000000000 filler") == (True, TS_TEXT)
    assert detect_timestamps(b'{"ts": 1795426800000000000, "level": "info"}') == \
        (True, TS_JSON)
    # loadgen's json without --timestamps: epoch seconds, not a send time
    assert detect_timestamps(b'{"ts": 1795426800.123456, "level": "info"}')[0] is False
    assert detect_timestamps(b"plain text")[0] is False
