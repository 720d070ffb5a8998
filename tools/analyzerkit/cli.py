"""The command line: options and their checks, and main()."""

from __future__ import annotations

import argparse
import json
import math
import secrets
import signal
import sys
from collections.abc import Sequence
from urllib.parse import urlsplit

from analyzerkit.client import Analyzer, ProtocolError
from analyzerkit.report import print_human
from toolargs import (
    UsageError,
    make_tls_context,
    nonneg_float,
    nonneg_int,
    os_reason,
    positive_float,
    positive_int,
)

PROG = "analyzer"

DEFAULT_TARGET = "tcp://127.0.0.1:8081"
DEFAULT_WEIGHT = 0.25
DEFAULT_ACK_EVERY = 10
CONNECT_TIMEOUT = 5.0
F32_MAX = 3.4028234663852886e38


def parse_target(value: str) -> tuple[str, int]:
    parts = urlsplit(value)
    scheme = parts.scheme.lower()
    if scheme != "tcp" or not parts.netloc:
        raise UsageError(f"--target {value!r}: expected tcp://host:port")
    try:
        port = parts.port
    except ValueError:
        raise UsageError(f"--target {value!r}: port must be a number 1-65535") from None
    host = parts.hostname
    if (not host or not port or parts.path not in ("", "/") or parts.query or parts.fragment
            or parts.username is not None):
        raise UsageError(f"--target {value!r}: expected tcp://host:port")
    return host, port


def check_weight(value: float, what: str) -> float:
    # Updates travel as float32, so a weight must fit one.
    if not math.isfinite(value) or value < 0 or value > F32_MAX:
        raise UsageError(f"{what}: weight must be a finite number >= 0, got {value!r}")
    return value


def parse_weight_plan(spec: str | None) -> list[tuple[int, float]]:
    if spec is None:
        return []
    plan: list[tuple[int, float]] = []
    for raw in spec.split(","):
        part = raw.strip()
        if not part:
            continue
        n, sep, w = part.partition(":")
        try:
            after = int(n)
            weight = float(w)
        except ValueError:
            raise UsageError(f"--set-weight-after: bad entry {part!r} (expected N:WEIGHT)") \
                from None
        if not sep or after < 0:
            raise UsageError(f"--set-weight-after: bad entry {part!r} (expected N:WEIGHT, "
                             "N >= 0)")
        plan.append((after, check_weight(weight, "--set-weight-after")))
    if not plan:
        raise UsageError("--set-weight-after: needs at least one N:WEIGHT")
    # Stable: two updates at the same N go out in the order given.
    plan.sort(key=lambda e: e[0])
    return plan


DESCRIPTION = """\
Connect to logd's analyzer port, receive the messages routed to this analyzer, acknowledge
them, and report what arrived (counts, severities, end-to-end latency).

protocol:
  analyzer -> logd  first the initial weight: 8 bytes, float64 big-endian
  logd -> analyzer  [u32 big-endian length][u8 severity][payload], length = 1 + len(payload);
                    messages are numbered 1, 2, 3, ... per connection, implicitly
  analyzer -> logd  ACK            [u8 0][u32 big-endian seq]  cumulative: 1..seq are done
                    weight update  [u8 1][f32 big-endian weight]  0 = drain: send nothing new

acks:
  A cumulative ACK goes out once --ack-every messages are unacknowledged, when nothing has
  arrived for 50 ms and something is unacked, before a weight update, and before closing.
  All messages of one read are processed together, so when a read completes more than
  --ack-every of them, a single ACK covers them all at the end of that read. With --delay or
  --verbose messages are processed one at a time and acked exactly every --ack-every
  messages; an ACK covers only messages whose delay is over.

latency:
  If the first message carries a send time from loadgen --timestamps (text "ts=<epoch-ns>",
  json "ts": <epoch-ns>), every message's latency is its arrival time (time.time_ns() when the
  read that completed it returned) minus that send time; otherwise latency is not measured.
  Up to 2,000,000 samples are kept, then a uniform sample of them; max is exact."""

EPILOG = """\
exit status: 0 when the server closed (or reset) the connection between messages, --count or
--duration was reached, or SIGINT/SIGTERM stopped it; 1 cannot connect, or a broken stream
(closed mid-message, bad frame length); 2 bad options.

examples:
  analyzer --weight 0.4 --id a1
  analyzer --count 100000 --json
  analyzer --delay 0.001 --ack-every 1          # a slow analyzer
  analyzer --set-weight-after 5000:0            # drain after 5000 messages
  analyzer --no-ack-after 1000                  # stuck: keeps reading, never acks past 1000
  analyzer --tls --ca ca.pem --cert analyzer-1.pem --target tcp://logs.example.net:8081"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("connection")
    g.add_argument("--target", default=DEFAULT_TARGET, metavar="URL",
                   help="logd's analyzer port: tcp://host:port (default %(default)s)")
    g.add_argument("--connect-timeout", type=positive_float, default=CONNECT_TIMEOUT,
                   metavar="SECONDS", help="give up connecting after this long "
                                           "(default %(default)g)")
    g.add_argument("--weight", type=nonneg_float, default=DEFAULT_WEIGHT, metavar="W",
                   help="initial weight: this analyzer's share relative to the others "
                        "(default %(default)g; 0 = send me nothing)")
    g.add_argument("--id", default=None, metavar="NAME",
                   help="name shown in the output (default: random hex)")
    g = p.add_argument_group("TLS (an analyzer listener with a tls table)")
    g.add_argument("--tls", action="store_true",
                   help="connect with TLS; logd's certificate is verified against --ca, else "
                        "the system's CAs")
    g.add_argument("--ca", default=None, metavar="FILE",
                   help="PEM CA certificates to verify logd's certificate with")
    g.add_argument("--cert", default=None, metavar="FILE",
                   help="PEM client certificate (and its key, unless --key): how this "
                        "analyzer proves who it is to a listener with client_ca")
    g.add_argument("--key", default=None, metavar="FILE", help="PEM key of --cert")
    g.add_argument("--insecure", action="store_true",
                   help="do not verify logd's certificate (testing only)")
    g = p.add_argument_group("behaviour")
    g.add_argument("--ack-every", type=positive_int, default=DEFAULT_ACK_EVERY, metavar="N",
                   help="send a cumulative ACK after every N messages (default %(default)s)")
    g.add_argument("--delay", type=nonneg_float, default=0.0, metavar="SECONDS",
                   help="sleep this long per message before it counts as processed, to act "
                        "as a slow analyzer (default %(default)g)")
    g.add_argument("--set-weight-after", default=None, metavar="N:W[,N:W...]",
                   help="after receiving N messages send a weight update to W (N may be 0: "
                        "right after connecting); W=0 asks logd to drain this analyzer")
    g.add_argument("--no-ack-after", type=nonneg_int, default=None, metavar="N",
                   help="never acknowledge past message N, also not at exit; keeps reading "
                        "(a stuck analyzer)")
    g = p.add_argument_group("when to stop (default: when the server closes, or SIGINT/SIGTERM)")
    g.add_argument("--count", type=positive_int, default=None, metavar="N",
                   help="stop after N messages")
    g.add_argument("--duration", type=positive_float, default=None, metavar="SECONDS",
                   help="stop after this long connected")
    g = p.add_argument_group("output")
    g.add_argument("--json", action="store_true",
                   help="print the summary as one JSON object on stdout: id, weight (the last "
                        "one sent), received, acked, bytes (frames incl. headers), seconds, "
                        "rate, latency_ms {p50, p99, p999, max, samples} or null, severities "
                        "{\"<0-255>\": count}, first_seq, last_seq, gaps, end (why it "
                        "stopped: closed, reset, count, duration, signal, error)")
    g.add_argument("--verbose", action="store_true",
                   help="print each message's seq, severity and first 80 payload bytes to "
                        "stderr (slow)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        host, port = parse_target(args.target)
        check_weight(args.weight, "--weight")
        plan = parse_weight_plan(args.set_weight_after)
        an = Analyzer(args, host, port, plan, make_tls_context(args))
    except UsageError as exc:
        parser.error(str(exc))
    if args.id is None:
        args.id = secrets.token_hex(3)

    signal.signal(signal.SIGINT, an.on_signal)
    signal.signal(signal.SIGTERM, an.on_signal)
    try:
        an.connect()
    except OSError as exc:
        print(f"{PROG}: cannot connect to {args.target}: {os_reason(exc)}", file=sys.stderr)
        if an.sock is not None:
            an.sock.close()
        return 1

    status = 0
    try:
        end = an.run()
    except ProtocolError as exc:
        print(f"{PROG}: {args.target}: {exc}", file=sys.stderr)
        end, status = "error", 1
    except (BrokenPipeError, ConnectionResetError):
        # An ack or weight update hit a connection the server had already torn down.
        end = "reset"
    except OSError as exc:
        print(f"{PROG}: {args.target}: {os_reason(exc)}", file=sys.stderr)
        end, status = "error", 1
    if end == "reset":
        print(f"{PROG}: connection reset by {args.target} after {an.received:,} messages",
              file=sys.stderr)
    an.finish(reset=end == "reset")

    s = an.summary()
    if args.json:
        s["end"] = end
        print(json.dumps(s))
    else:
        print_human(s, args.target, end)
    return status
