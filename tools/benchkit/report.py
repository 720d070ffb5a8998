"""report.md: how the comparison was run, the table, the winner per scenario, whether the
tools kept the same records, and the configs they ran with."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from benchkit.results import AGREEMENT_MARGIN, Agreement, Summary
from benchkit.scenarios import Scenario

MIB = 1 << 20

LOAD_SHAPE = """\
Every scenario sends LF-terminated lines over TCP with `tools/loadgen --rate 0`: as fast as
the tool reads them, so TCP backpressure sets the pace and records/s is the tool's
sustained throughput with that filter. Each tool gets the same records in the same order
(the same loadgen seed and run id). A run is: start the tool; the filter check (a fixed
count of distinct records, written counts compared between the tools); then the timed load:
a warm-up, then CPU%, RSS and records written sampled every second (psutil for the process;
bytes appended to its output files over the record length for records, and the LFs in the
files counted once it has settled, which must agree), then the load ends and the tool stops.
The tools run one after the other, never together, with a cool-down in between. Records
are the output of `loadgen --services`: `LEVEL service run-id conn seq words...` (levels
70% INFO, 20% WARN, 8% ERROR, 2% DEBUG; services payment/auth/api-gateway/notification at
30/25/25/20%; the words are drawn from a vocabulary that includes `user` and `payment`),
or JSON objects with `level`, `service` and `metadata.region` fields in `json_filter`."""


@dataclass
class Environment:
    """What a reader needs to reproduce the numbers."""

    command: str
    date: str
    versions: dict[str, str]            # tool -> version line
    python: str
    kernel: str
    cpus: int
    settings: dict[str, str]            # duration, warm-up, ...
    commands: dict[str, list[str]] = field(default_factory=dict)  # "tool scenario" -> argv


def _mib(n: float) -> str:
    return f"{n / MIB:,.1f}"


def table(summaries: list[Summary]) -> str:
    lines = ["| scenario | tool | records in/s | written/s | avg CPU % | peak CPU % | "
             "avg RSS MiB | peak RSS MiB | records in per CPU-second | "
             "written per CPU-second |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in summaries:
        lines.append(f"| {s.scenario} | {s.tool} | {s.sent_per_s:,.0f} | "
                     f"{s.written_per_s:,.0f} | {s.cpu_avg:.1f} | {s.cpu_peak:.1f} | "
                     f"{_mib(s.rss_avg)} | {_mib(s.rss_peak)} | {s.in_per_cpu_second:,.0f} | "
                     f"{s.per_cpu_second:,.0f} |")
    return "\n".join(lines)


def _best(rows: list[Summary], key: str, low: bool = False) -> str:
    """Who has the highest (or lowest) `key`, and by what factor over the next one."""
    ranked = sorted(rows, key=lambda s: float(getattr(s, key)), reverse=not low)
    top, second = float(getattr(ranked[0], key)), float(getattr(ranked[1], key))
    if top == second:
        return "tie"
    if low:
        return f"**{ranked[0].tool}** ({second / top:.2f}x less)" if top else ranked[0].tool
    return f"**{ranked[0].tool}** ({top / second:.2f}x)" if second else f"**{ranked[0].tool}**"


def winners(summaries: list[Summary]) -> str:
    """Per scenario: who took more records/s, who spent less CPU per record, who needed
    less memory."""
    lines = ["| scenario | throughput (records in/s) | efficiency (records in per CPU-second) "
             "| memory (peak RSS) |", "|---|---|---|---|"]
    for scenario in dict.fromkeys(s.scenario for s in summaries):
        rows = [s for s in summaries if s.scenario == scenario]
        if len(rows) < 2:
            continue
        lines.append(f"| {scenario} | {_best(rows, 'sent_per_s')} | "
                     f"{_best(rows, 'in_per_cpu_second')} | {_best(rows, 'rss_peak', True)} |")
    return "\n".join(lines)


def agreement_table(found: list[Agreement]) -> str:
    tools = list(dict.fromkeys(t for a in found for t in a.written))
    lines = ["| scenario | check records sent | " + " | ".join(f"written by {t}" for t in tools)
             + " | kept | verdict |",
             "|---|---:|" + "---:|" * len(tools) + "---:|---|"]
    for a in found:
        counts = " | ".join(f"{a.written.get(t, 0):,}" for t in tools)
        kept = max(a.written.values(), default=0) / a.sent if a.sent else 0.0
        verdict = "agree" if a.spread <= AGREEMENT_MARGIN else f"**DISAGREE** ({a.spread:.2%})"
        lines.append(f"| {a.scenario} | {a.sent:,} | {counts} | {kept:.1%} | {verdict} |")
    return "\n".join(lines)


def render(env: Environment, scenarios: list[Scenario], summaries: list[Summary],
           found: list[Agreement], configs: dict[str, str]) -> str:
    """The whole report; `configs` maps a file name (e.g. rsyslog.conf of a scenario) to
    the text the tool ran with."""
    versions = "\n".join(f"- {tool}: `{v}`" for tool, v in env.versions.items())
    settings = ", ".join(f"{k} {v}" for k, v in env.settings.items())
    filters = "\n".join(
        f"| {s.name} | {s.description} | `{s.logd_match}` | "
        f"`{s.rsyslog_match or '(none: every record)'}` | {s.payload}, {s.size} B, "
        f"{s.workers}x{s.connections} connections |" for s in scenarios)
    commands = "\n".join(f"# {key}\n{shlex.join(argv)}" for key, argv in env.commands.items())
    config_blocks = "\n\n".join(f"`{name}`:\n\n```\n{text.rstrip()}\n```"
                                for name, text in configs.items())
    bad = [a for a in found if a.spread > AGREEMENT_MARGIN]
    verdict = ("The tools wrote the same number of records of the check load in every "
               "scenario." if not bad else
               "**The tools disagree on what the filters keep in: "
               + ", ".join(a.scenario for a in bad) + ". The throughput figures of those "
               "scenarios compare different work.**")
    return f"""\
# logd compared with rsyslog

Run on {env.date} with `{env.command}`.

## Table

{table(summaries)}

records in/s: what loadgen sent over the whole timed load (warm-up included) divided by its
length, the rate at which the tool took records in; records in per CPU-second: those records
over the CPU seconds the tool used meanwhile. written/s, CPU %, RSS and written per
CPU-second: the measured window ({settings}); in a filter scenario only the kept records
are written. CPU % is of one core (200 = two cores busy).

## Winner per scenario

Throughput and efficiency count every record taken in, kept or not: the work a filter
scenario asks for is reading and testing them all.

{winners(summaries)}

## Same records kept

{agreement_table(found)}

{verdict}

## Load shape

{LOAD_SHAPE}

| scenario | what | logd route `match` | rsyslog condition | records |
|---|---|---|---|---|
{filters}

## Versions and machine

{versions}
- Python: `{env.python}`
- kernel: `{env.kernel}`
- CPUs: {env.cpus}

## Commands

```
{commands}
```

## Configurations

Both tools write each kept record as it was received plus LF, to one file, flushed each
second, never fsynced; both read lines from 127.0.0.1 over TCP; both slow the sender down
rather than drop when full (logd: a 64 MiB memory buffer, `when_full = "block"`; rsyslog: a
main queue of as many records as 64 MiB holds, and the input waits up to 60 s for room).
rsyslog runs in the foreground (`-n`) with its own pid file and work folder, and parses JSON
with mmjsonparse (`cookie=""` and `useRawMsg="on"`: Debian 12's 8.2302 has no find-json
mode) only in `json_filter`; its conditions test `$rawmsg`, the line as received, as logd's
bare words test the payload (case-sensitive substrings). imptcp's `flowControl` is off: it
sleeps the sender while the queue is only near full, to keep room for inputs that cannot
wait (UDP), and halved rsyslog's throughput in trials here; with it off the input waits
only when the queue is full, as logd's listeners do. The rest are rsyslog's defaults: one
main queue worker thread (two were slower on two cores), imptcp's two input threads.

logd writes with O_DIRECT (its default), so its records reach the disk within the run;
rsyslog writes through the page cache, and the kernel writes them out later (after its
run, when the run is short). On a slow disk that favours rsyslog.

{config_blocks}
"""
