"""What a comparison produced: one Sample per tool, scenario and second (results.csv), the
facts of each run, and the summary table computed from them."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

CSV_HEADER = ("tool", "scenario", "second", "records", "cpu_percent", "rss_bytes")


@dataclass(frozen=True)
class Sample:
    tool: str
    scenario: str
    second: int
    records: int            # written in that second
    cpu_percent: float      # 100 = one core
    rss_bytes: int


@dataclass(frozen=True)
class RunFacts:
    """A tool's run of a scenario, apart from the per-second samples."""

    tool: str
    scenario: str
    check_sent: int         # the filter check: records sent, the same for every tool
    check_written: int      # ... and written
    sent: int               # the timed load (warm-up included): records loadgen sent
    sent_seconds: float
    written: int            # ... and what the tool wrote of them, once settled
    load_cpu_seconds: float  # CPU the tool used from the timed load's start to its end


def write_csv(path: Path, samples: Iterable[Sample]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_HEADER)
        for s in samples:
            w.writerow((s.tool, s.scenario, s.second, s.records, f"{s.cpu_percent:.1f}",
                        s.rss_bytes))


def read_csv(path: Path) -> list[Sample]:
    with open(path, newline="") as f:
        rows = csv.DictReader(f)
        if tuple(rows.fieldnames or ()) != CSV_HEADER:
            raise ValueError(f"{path}: expected the header {','.join(CSV_HEADER)}")
        return [Sample(r["tool"], r["scenario"], int(r["second"]), int(r["records"]),
                       float(r["cpu_percent"]), int(r["rss_bytes"])) for r in rows]


@dataclass(frozen=True)
class Summary:
    """One row of the report's table: a tool's measured window of one scenario."""

    tool: str
    scenario: str
    seconds: int
    sent_per_s: float            # records in: loadgen's rate over the whole timed load
    in_per_cpu_second: float     # ... per second of CPU the tool used meanwhile
    written_per_s: float         # records written per second, mean over the window
    cpu_avg: float
    cpu_peak: float
    rss_avg: float
    rss_peak: int
    per_cpu_second: float        # records written per second of CPU used, in the window


def summarize(samples: list[Sample], facts: list[RunFacts]) -> list[Summary]:
    """A Summary per (tool, scenario), in the order the samples first name them."""
    sent = {(f.tool, f.scenario): f for f in facts}
    groups: dict[tuple[str, str], list[Sample]] = {}
    for s in samples:
        groups.setdefault((s.tool, s.scenario), []).append(s)
    out = []
    for (tool, scenario), rows in groups.items():
        n = len(rows)
        records = sum(r.records for r in rows)
        cpu_seconds = sum(r.cpu_percent for r in rows) / 100.0
        f = sent.get((tool, scenario))
        out.append(Summary(
            tool=tool, scenario=scenario, seconds=n,
            sent_per_s=f.sent / f.sent_seconds if f and f.sent_seconds > 0 else 0.0,
            in_per_cpu_second=(f.sent / f.load_cpu_seconds
                               if f and f.load_cpu_seconds > 0 else 0.0),
            written_per_s=records / n,
            cpu_avg=sum(r.cpu_percent for r in rows) / n,
            cpu_peak=max(r.cpu_percent for r in rows),
            rss_avg=sum(r.rss_bytes for r in rows) / n,
            rss_peak=max(r.rss_bytes for r in rows),
            per_cpu_second=records / cpu_seconds if cpu_seconds > 0 else 0.0))
    return out


@dataclass(frozen=True)
class Agreement:
    """Whether the tools wrote the same records of the same check load."""

    scenario: str
    written: dict[str, int]      # tool -> records written of the check load
    sent: int

    @property
    def spread(self) -> float:
        """The largest difference between two tools, as a share of the largest count."""
        counts = list(self.written.values())
        top = max(counts, default=0)
        return (top - min(counts, default=0)) / top if top else 0.0


# Same records, same filter semantics: the counts are equal. The margin only forgives what
# is not the filter's doing (none seen so far).
AGREEMENT_MARGIN = 0.001


def agreements(facts: list[RunFacts]) -> list[Agreement]:
    by_scenario: dict[str, list[RunFacts]] = {}
    for f in facts:
        by_scenario.setdefault(f.scenario, []).append(f)
    return [Agreement(scenario, {f.tool: f.check_written for f in runs},
                      max(f.check_sent for f in runs))
            for scenario, runs in by_scenario.items()]
