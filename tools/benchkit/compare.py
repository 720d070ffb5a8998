"""`tools/bench compare`: the command line, and the order of the runs: for each scenario,
logd and then each peer, one at a time, with a cool-down in between; then results.csv, the
charts and report.md in --out."""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from benchkit.peers import PEERS, Peer, Running, peer_named
from benchkit.report import Environment, render
from benchkit.results import (
    AGREEMENT_MARGIN,
    RunFacts,
    Sample,
    agreements,
    summarize,
    write_csv,
)
from benchkit.sampler import (
    GrowthCounter,
    ProcessMeter,
    count_lines,
    sample_every_second,
    wait_until_settled,
)
from benchkit.scenarios import SCENARIOS, Scenario, pick
from benchkit.sender import Sender, command, loadgen_args
from testkit.harness import REPO

PROG = "bench compare"
# Longer than either tool's flush interval (1 s): no new line for this long means written.
SETTLE_QUIET = 3.0
SETTLE_TIMEOUT = 300.0
# The load goes on a little past the measured window, so its last second is under load too.
LOAD_TAIL = 1.0

DESCRIPTION = f"""\
The same load into logd and into a peer (rsyslog), one after the other on this machine:
lines over TCP from tools/loadgen, as fast as each tool takes them, through the scenario's
filter into a file. After a warm-up, CPU%, RSS and records written are sampled every
second. Writes results.csv, PNG charts and report.md into --out.

scenarios: {', '.join(f'{s.name} ({s.description})' for s in SCENARIOS.values())}"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=int, default=25, metavar="SEC",
                   help="seconds measured per tool and scenario, after the warm-up "
                        "(default %(default)s)")
    p.add_argument("--warmup", type=int, default=5, metavar="SEC",
                   help="seconds of load before measuring (default %(default)s)")
    p.add_argument("--cooldown", type=float, default=5.0, metavar="SEC",
                   help="pause between two runs, so one tool's writes do not load the next "
                        "(default %(default)s)")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), metavar="A,B",
                   help="comma-separated scenarios (default: all: %(default)s)")
    p.add_argument("--peers", default="rsyslog", metavar="P,Q",
                   help=f"tools compared with logd (known: {', '.join(PEERS[1:])}; "
                        "default %(default)s)")
    p.add_argument("--check-count", type=int, default=200_000, metavar="N",
                   help="distinct records of the filter check each tool gets before the "
                        "timed load; the tools must write the same number of them "
                        "(default %(default)s)")
    p.add_argument("--out", type=Path, default=REPO / "bench-results" / "compare",
                   metavar="DIR", help="folder for results.csv, the charts and report.md "
                                      "(default bench-results/compare)")
    p.add_argument("--workdir", type=Path, default=REPO / "var" / "bench", metavar="DIR",
                   help="where the tools write during a run (removed after each run); on a "
                        "disk, not tmpfs, for logd's O_DIRECT (default var/bench)")
    return p


def say(text: str) -> None:
    print(f"{PROG}: {text}", file=sys.stderr, flush=True)


class Comparison:
    """The runs of one invocation and what they produced."""

    def __init__(self, args: argparse.Namespace, peers: list[Peer]) -> None:
        self.args = args
        self.peers = peers
        self.samples: list[Sample] = []
        self.facts: list[RunFacts] = []
        self.configs: dict[str, str] = {}
        self.commands: dict[str, list[str]] = {}
        self.problems: list[str] = []

    def run_all(self, scenarios: list[Scenario]) -> None:
        first = True
        for scenario in scenarios:
            for peer in self.peers:
                if not first:
                    time.sleep(self.args.cooldown)
                first = False
                self.run_one(peer, scenario)

    def run_one(self, peer: Peer, scenario: Scenario) -> None:
        args = self.args
        args.workdir.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix=f"{peer.name}-{scenario.name}-",
                                        dir=args.workdir))
        key = f"{peer.name} {scenario.name}"
        say(f"{key}: starting")
        running = peer.start(workdir, scenario)
        try:
            self.configs[f"{scenario.name}/{running.config_name}"] = running.config_text
            self.commands[key] = running.command
            self.measure(peer, scenario, running, key)
            running.stop()
        except BaseException:
            with contextlib.suppress(Exception):
                running.stop()
            raise
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def measure(self, peer: Peer, scenario: Scenario, running: Running, key: str) -> None:
        args = self.args
        records = GrowthCounter(running.out_dir, scenario.size + 1)
        keeps_all = scenario.logd_match == "*"
        check = loadgen_args(scenario, running.port, count=args.check_count)
        self.commands[f"{key}: filter check"] = command(check)
        checked = Sender(check).wait(timeout=SETTLE_TIMEOUT)
        settled = wait_until_settled(records, SETTLE_QUIET, SETTLE_TIMEOUT,
                                     expected=checked.records if keeps_all else None)
        check_written = self.counted(key, records, settled)
        say(f"{key}: filter check: {check_written:,} of {checked.records:,} written")

        timed = loadgen_args(scenario, running.port,
                             duration=args.warmup + args.duration + LOAD_TAIL)
        self.commands[f"{key}: timed load"] = command(timed)
        meter = ProcessMeter(running.pid)
        cpu_before = meter.cpu_seconds()
        sender = Sender(timed)
        try:
            time.sleep(args.warmup)
            for tick in sample_every_second(meter, records, args.duration):
                self.samples.append(Sample(peer.name, scenario.name, tick.second,
                                           tick.records, tick.cpu_percent, tick.rss_bytes))
            sent = sender.wait(timeout=args.duration + args.warmup + SETTLE_TIMEOUT)
        finally:
            sender.kill()
        load_cpu = meter.cpu_seconds() - cpu_before
        settled = wait_until_settled(records, SETTLE_QUIET, SETTLE_TIMEOUT,
                                     expected=check_written + sent.records if keeps_all
                                     else None)
        written = self.counted(key, records, settled) - check_written
        say(f"{key}: timed load: {sent.records:,} sent in {sent.seconds:.1f} s, "
            f"{written:,} written")
        if keeps_all and (written != sent.records or check_written != checked.records):
            self.problems.append(
                f"{key}: keeps every record, but wrote {check_written:,} of "
                f"{checked.records:,} (check) and {written:,} of {sent.records:,} (timed)")
        self.facts.append(RunFacts(peer.name, scenario.name, checked.records, check_written,
                                   sent.records, sent.seconds, written, load_cpu))

    def counted(self, key: str, records: GrowthCounter, from_sizes: int) -> int:
        """The records in the output files counted by their LFs, once the tool has settled;
        a problem is noted when that is not what the sizes said (records of another length
        than the load's, or a file ending inside a record)."""
        lines = count_lines(records.folder)
        size = records.bytes_now()
        if lines != from_sizes or size != lines * records.record_bytes:
            self.problems.append(
                f"{key}: {lines:,} LFs in {size:,} bytes, but records of "
                f"{records.record_bytes} bytes: {from_sizes:,} by size")
        return lines


def environment(args: argparse.Namespace, argv: list[str], peers: list[Peer]) -> Environment:
    return Environment(
        command=shlex.join(["tools/bench", "compare", *argv]),
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        versions={p.name: p.version() for p in peers},
        python=sys.version.split()[0] + f" ({sys.executable})",
        kernel=f"{platform.system()} {platform.release()} {platform.machine()}",
        cpus=os.cpu_count() or 0,
        settings={"warm-up": f"{args.warmup} s", "measured": f"{args.duration} s",
                  "cool-down": f"{args.cooldown:g} s",
                  "filter check": f"{args.check_count:,} records"})


def write_outputs(comparison: Comparison, env: Environment, scenarios: list[Scenario],
                  out: Path) -> bool:
    """results.csv, the charts, report.md; False when the tools disagreed or lost records."""
    from benchkit import charts  # matplotlib: only once there is something to draw

    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "results.csv", comparison.samples)
    summaries = summarize(comparison.samples, comparison.facts)
    found = agreements(comparison.facts)
    charts.draw_all(comparison.samples, summaries, out)
    env.commands = comparison.commands
    text = render(env, scenarios, summaries, found, comparison.configs)
    if comparison.problems:
        text += "\n## Problems\n\n" + "\n".join(f"- {p}" for p in comparison.problems) + "\n"
    (out / "report.md").write_text(text)
    ok = True
    for a in found:
        counts = ", ".join(f"{tool} {n:,}" for tool, n in a.written.items())
        if a.spread > AGREEMENT_MARGIN:
            ok = False
            say(f"{a.scenario}: the tools kept different records of the same "
                f"{a.sent:,}: {counts}")
        else:
            say(f"{a.scenario}: filter check agrees: {counts} of {a.sent:,}")
    for p in comparison.problems:
        ok = False
        say(p)
    return ok


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.duration < 1 or args.warmup < 0 or args.cooldown < 0 or args.check_count < 1:
        parser.error("--duration and --check-count must be at least 1, --warmup and "
                     "--cooldown not negative")
    try:
        scenarios = pick(args.scenarios)
        peers: list[Peer] = [peer_named("logd")]
        peers += [peer_named(n.strip()) for n in args.peers.split(",") if n.strip()]
    except ValueError as exc:
        parser.error(str(exc))
    for peer in peers:
        problem = peer.missing()
        if problem:
            say(problem)
            return 2
    env = environment(args, argv, peers)
    comparison = Comparison(args, peers)
    try:
        comparison.run_all(scenarios)
    except (RuntimeError, TimeoutError, AssertionError) as exc:
        # A tool that would not start or stop, a sender that failed, output that never
        # settled: the run's numbers would mean nothing, so none are written.
        say(f"stopped: {exc}")
        return 1
    ok = write_outputs(comparison, env, scenarios, args.out)
    say(f"wrote {args.out / 'results.csv'}, {args.out / 'report.md'} and the charts")
    return 0 if ok else 1
