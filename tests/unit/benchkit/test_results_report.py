"""benchkit.results, report and charts from synthetic samples: the CSV's exact shape, the
summary's arithmetic, the report's table, winners and verdicts, and the PNGs."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchkit.report import Environment, render
from benchkit.results import RunFacts, Sample, agreements, read_csv, summarize, write_csv
from benchkit.scenarios import pick

MIB = 1 << 20


def synthetic() -> tuple[list[Sample], list[RunFacts]]:
    """logd twice as fast as rsyslog on basic; rsyslog faster on error_filter."""
    samples = []
    for second in (1, 2, 3):
        samples += [
            Sample("logd", "basic", second, 200_000, 50.0, 100 * MIB),
            Sample("rsyslog", "basic", second, 100_000, 100.0, 150 * MIB + second * MIB),
            Sample("logd", "error_filter", second, 8_000, 80.0 + second, 90 * MIB),
            Sample("rsyslog", "error_filter", second, 16_000, 100.0, 120 * MIB),
        ]
    facts = [
        RunFacts("logd", "basic", 1000, 1000, 2_000_000, 10.0, 2_000_000, 5.0),
        RunFacts("rsyslog", "basic", 1000, 1000, 1_000_000, 10.0, 1_000_000, 10.0),
        RunFacts("logd", "error_filter", 1000, 80, 1_000_000, 10.0, 80_000, 8.0),
        RunFacts("rsyslog", "error_filter", 1000, 80, 2_000_000, 10.0, 160_000, 10.0),
    ]
    return samples, facts


def test_results_csv_has_the_agreed_header_and_reads_back(tmp_path: Path) -> None:
    samples, _ = synthetic()
    path = tmp_path / "results.csv"
    write_csv(path, samples)
    lines = path.read_text().splitlines()
    assert lines[0] == "tool,scenario,second,records,cpu_percent,rss_bytes"
    assert lines[1] == f"logd,basic,1,200000,50.0,{100 * MIB}"
    assert len(lines) == 1 + len(samples)
    assert read_csv(path) == samples


def test_a_csv_with_another_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    path.write_text("tool,scenario,second,records\n")
    with pytest.raises(ValueError, match="expected the header"):
        read_csv(path)


def test_the_summary_averages_peaks_and_rates() -> None:
    samples, facts = synthetic()
    rows = {(s.tool, s.scenario): s for s in summarize(samples, facts)}
    logd = rows["logd", "error_filter"]
    assert logd.seconds == 3 and logd.written_per_s == 8_000
    assert logd.cpu_avg == pytest.approx(82.0) and logd.cpu_peak == 83.0
    assert logd.per_cpu_second == pytest.approx(24_000 / 2.46)
    assert logd.sent_per_s == 100_000 and logd.in_per_cpu_second == 125_000
    rs = rows["rsyslog", "basic"]
    assert rs.rss_peak == 153 * MIB and rs.rss_avg == 152 * MIB
    assert rs.in_per_cpu_second == 100_000


def environment() -> Environment:
    return Environment(command="tools/bench compare --duration 3", date="2026-01-01 00:00 UTC",
                       versions={"logd": "logd abc123", "rsyslog": "rsyslogd  8.2302.0"},
                       python="3.11.7", kernel="Linux 6.1 x86_64", cpus=2,
                       settings={"measured": "3 s"},
                       commands={"rsyslog basic": ["/usr/sbin/rsyslogd", "-n", "-f", "a b"]})


def test_the_report_holds_the_table_winners_verdicts_and_configs() -> None:
    samples, facts = synthetic()
    text = render(environment(), pick("basic,error_filter"), summarize(samples, facts),
                  agreements(facts), {"basic/rsyslog.conf": "module(load=\"imptcp\")"})
    assert ("| basic | logd | 200,000 | 200,000 | 50.0 | 50.0 | 100.0 | 100.0 | 400,000 | "
            "400,000 |") in text
    assert "| basic | **logd** (2.00x) | **logd** (4.00x) | **logd** (1.53x less) |" in text
    assert "| error_filter | **rsyslog** (2.00x) | **rsyslog** (1.60x) |" in text
    assert "| error_filter | 1,000 | 80 | 80 | 8.0% | agree |" in text
    assert "same number of records of the check load in every scenario" in text
    assert "/usr/sbin/rsyslogd -n -f 'a b'" in text
    assert 'module(load="imptcp")' in text and "rsyslogd  8.2302.0" in text
    assert "CPUs: 2" in text and "Linux 6.1 x86_64" in text


def test_the_report_says_loudly_when_the_tools_kept_different_records() -> None:
    samples, facts = synthetic()
    facts[3] = RunFacts("rsyslog", "error_filter", 1000, 90, 2_000_000, 10.0, 160_000, 10.0)
    text = render(environment(), pick("basic,error_filter"), summarize(samples, facts),
                  agreements(facts), {})
    assert "| error_filter | 1,000 | 80 | 90 | 9.0% | **DISAGREE** (11.11%) |" in text
    assert "disagree on what the filters keep in: error_filter" in text


def test_the_charts_are_pngs_for_each_scenario_and_the_summaries(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the bench's charts: make bench-deps installs it")
    from benchkit.charts import draw_all

    samples, facts = synthetic()
    paths = draw_all(samples, summarize(samples, facts), tmp_path)
    assert sorted(p.name for p in paths) == [
        "averages_peaks.png", "records_per_cpu_second.png", "timeline_basic.png",
        "timeline_error_filter.png"]
    for p in paths:
        data = p.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
