"""The command line: write lines at a rate (open loop: each slice of lines at its scheduled
time) for a duration or a count, rotating as asked; a summary at the end."""

from __future__ import annotations

import argparse
import json
import sys
import time

from filegenkit.writer import ROTATIONS, LogFileWriter
from toolargs import nonneg_float, nonneg_int, positive_int

SLICE_S = 0.01  # lines are written in slices this often


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="filegen", description=__doc__)
    p.add_argument("--path", required=True, help="the file to write (created if absent)")
    p.add_argument("--rate", type=nonneg_float, default=1000.0,
                   help="lines per second; 0: as fast as possible (default 1000)")
    p.add_argument("--count", type=nonneg_int, default=0,
                   help="lines to write; 0: until --duration ends (default 0)")
    p.add_argument("--duration", type=nonneg_float, default=10.0,
                   help="seconds to write when --count is 0 (default 10)")
    p.add_argument("--size", type=positive_int, default=256,
                   help="bytes per line before its LF (default 256)")
    p.add_argument("--rotate", choices=ROTATIONS, default="none",
                   help="how to rotate: rename (PATH -> PATH.1, a new PATH) or copytruncate "
                        "(PATH copied to PATH.1, then cut to 0) (default none)")
    p.add_argument("--rotate-lines", type=nonneg_int, default=0,
                   help="rotate after this many lines in a file (default 0: never)")
    p.add_argument("--keep", type=nonneg_int, default=0,
                   help="rotated files kept (PATH.1 newest); 0: all (default)")
    p.add_argument("--prefix", default="", help="text each line starts with")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = p.parse_args(argv)
    if args.rotate != "none" and not args.rotate_lines:
        p.error("--rotate needs --rotate-lines")
    if args.rate == 0 and not args.count:
        p.error("--rate 0 needs --count")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    writer = LogFileWriter(args.path, args.size, args.rotate, args.rotate_lines, args.keep,
                           args.prefix.encode())
    t0 = time.perf_counter()
    try:
        if args.rate == 0:
            step = 4096
            while writer.written < args.count:
                writer.write(min(step, args.count - writer.written))
        else:
            total = args.count or int(args.rate * args.duration)
            while writer.written < total:
                due = min(total, int((time.perf_counter() - t0 + SLICE_S) * args.rate))
                if due > writer.written:
                    writer.write(due - writer.written)
                time.sleep(SLICE_S)
    finally:
        writer.close()
    elapsed = time.perf_counter() - t0
    summary = {"lines": writer.written, "rotations": writer.rotations,
               "seconds": round(elapsed, 3),
               "lines_per_s": round(writer.written / elapsed) if elapsed else 0}
    print(json.dumps(summary) if args.json else
          f"{summary['lines']} lines in {summary['seconds']} s "
          f"({summary['lines_per_s']}/s), {summary['rotations']} rotations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
