"""The command line: options, their checks, and the Config they resolve into; main()."""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import secrets
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit

from loadgenkit.config import PROG, Config
from loadgenkit.payloads import SEVERITY_NAMES, SYSLOG_PAYLOADS
from loadgenkit.runner import run
from toolargs import (
    UsageError,
    make_tls_context,
    nonneg_float,
    nonneg_int,
    positive_float,
    positive_int,
)

LEVEL_ALIASES = {
    "emerg": 0, "emergency": 0, "panic": 0,
    "alert": 1,
    "crit": 2, "critical": 2, "fatal": 2,
    "err": 3, "error": 3,
    "warn": 4, "warning": 4,
    "notice": 5,
    "info": 6, "informational": 6,
    "debug": 7, "trace": 7,
}
DEFAULT_LEVELS = "info:70,warn:20,error:8,debug:2"
DEFAULT_EVENT = "load"
DEFAULT_TARGET = "tcp://127.0.0.1:8080"
DEFAULT_RATE = 1000.0
DEFAULT_DURATION = 10.0
DEFAULT_APPS = "payment-service:30,auth-service:25,api-gateway:25,notification-service:20"
DEFAULT_BATCH = 1000
DEFAULT_HTTP_PATH = "/v1/logs"

UNIQUE_POOL_BYTES = 64 << 20   # --count runs up to this size are pre-built record by record
EXACT_MAX_RECORDS = 2_000_000
MAX_SIZE = 16 << 20
MAX_WEIGHT_TABLE = 1_000_000
RUN_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

T = TypeVar("T")


def parse_target(value: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path); path is the http request path with its query, "" for tcp."""
    parts = urlsplit(value)
    scheme = parts.scheme.lower()
    if scheme == "https":
        raise UsageError(f"--target {value}: use http:// with --tls")
    if scheme not in ("tcp", "udp", "http") or not parts.netloc:
        raise UsageError(f"--target {value!r}: expected tcp://host:port, udp://host:port or "
                         "http://host:port/path")
    try:
        port = parts.port
    except ValueError:
        raise UsageError(f"--target {value!r}: port must be a number 1-65535") from None
    host = parts.hostname
    if scheme == "http":
        if not host or parts.fragment or parts.username is not None:
            raise UsageError(f"--target {value!r}: expected http://host[:port]/path")
        path = parts.path or DEFAULT_HTTP_PATH
        return scheme, host, port or 80, f"{path}?{parts.query}" if parts.query else path
    if (not host or not port or parts.path not in ("", "/") or parts.query or parts.fragment
            or parts.username is not None):
        raise UsageError(f"--target {value!r}: expected {scheme}://host:port")
    return scheme, host, port, ""


def parse_weights(spec: str, option: str, convert: Callable[[str], T]) -> list[tuple[T, int]]:
    out: list[tuple[T, int]] = []
    for raw in spec.split(","):
        part = raw.strip()
        if not part:
            continue
        name, sep, weight = part.rpartition(":")
        if not sep:
            name, weight = part, "1"
        try:
            w = int(weight)
        except ValueError:
            raise UsageError(f"{option}: bad weight {weight!r} in {part!r} "
                             "(expected NAME:WEIGHT)") from None
        if w < 0:
            raise UsageError(f"{option}: weight must be >= 0 in {part!r}")
        out.append((convert(name.strip()), w))
    if not out or sum(w for _, w in out) <= 0:
        raise UsageError(f"{option}: needs at least one entry with a weight > 0")
    return out


def level_number(name: str) -> int:
    if name.isdigit() and int(name) <= 7:
        return int(name)
    found = LEVEL_ALIASES.get(name.lower())
    if found is None:
        raise UsageError(f"--levels: unknown level {name!r} (use {', '.join(SEVERITY_NAMES)} "
                         "or 0-7)")
    return found


def event_name(name: str) -> str:
    if not name:
        raise UsageError("--events: empty event name")
    return json.dumps(name)


def app_name(name: str) -> str:
    if not name:
        raise UsageError("--apps: empty app name")
    return json.dumps(name)


def weighted_table(items: list[tuple[T, int]], rng: random.Random) -> tuple[T, ...]:
    """Each item repeated by its weight (reduced by the common divisor), shuffled: any run of
    len(table) consecutive records has the exact mix, and --seed fixes the order."""
    merged: dict[T, int] = {}
    for item, w in items:
        merged[item] = merged.get(item, 0) + w
    g = 0
    for w in merged.values():
        g = math.gcd(g, w)
    total = sum(merged.values()) // g
    if total > MAX_WEIGHT_TABLE:
        raise UsageError(f"weights reduce to a cycle of {total:,} records; use coarser weights")
    table = [item for item, w in merged.items() for _ in range(w // g)]
    rng.shuffle(table)
    return tuple(table)


def resolve_mode(unique: bool, timestamps: bool, count: int | None, size: int) -> str:
    """exact: every record of a --count run pre-built once (tests check each one arrives exactly
    once); batch: built as it is sent (--timestamps, or --unique with no small --count);
    cycle: a pool of pre-built blocks sent over and over (cheapest)."""
    if timestamps:
        return "batch"
    if count is not None and count * size <= UNIQUE_POOL_BYTES:
        # Tiny records would take long to pre-build; building them as they go out is as unique.
        return "exact" if count <= EXACT_MAX_RECORDS else "batch"
    return "batch" if unique else "cycle"


DESCRIPTION = """\
Send generated log records to logd's emitter port (tcp://) or to its HTTP ingest (http://)
at a fixed rate (or as fast as possible) and report what was sent.

tcp:// wire formats:
  frames  [u32 big-endian length][u8 severity][payload], length = 1 + len(payload);
          severity is syslog-style 0-7 (0 emerg .. 3 error, 4 warn, 5 notice, 6 info, 7 debug)
  lines   payload + LF (payloads never contain LF)
  octet-counted  "<len(payload)> <payload>" (syslog's RFC 6587 octet counting)
udp://: one payload per datagram (syslog over UDP; nothing says what arrived)

tcp:// payloads (exactly --size bytes):
  text    "<run-id> <worker>-<conn> <seq> [ts=<epoch-ns>] <filler>"
          the first three fields make each record unique within a run
  json    {"ts": <epoch>, "level": "info", "app": "loadgen", "event": "<event>",
           "id": "<run-id>-<worker>-<conn>-<seq>", "message": "<filler>"}
  syslog5424  <PRI>1 <RFC 3339 time> loadgen-host loadgen <conn> - - <run-id> <w>-<c> <seq> ...
  syslog3164  <PRI>Mmm dd hh:mm:ss loadgen-host loadgen[<conn>]: <run-id> <w>-<c> <seq> ...
              (facility user; the severity from --levels)
  The filler pads to --size; when the fixed part is already longer, the filler is empty and
  the payload is longer than --size (the unique id is never cut).

tcp:// record reuse:
  By default records are pre-built once into a pool of ~1 MiB blocks (16 MiB per worker) that
  is sent over and over, so sending costs almost no CPU; sequence numbers then repeat each
  cycle. With --count and count*size <= 64 MiB every record is distinct (seq 0..share-1 on
  each connection), as with --unique. --timestamps builds records per send batch.

http:// mode (--target http://host:port/path; path /v1/logs when none is given):
  Each connection is one keep-alive HTTP/1.1 connection POSTing --batch records at a time:
  a JSON array (Content-Type: application/json), or NDJSON with --ndjson
  (application/x-ndjson); --gzip compresses it (Content-Encoding: gzip), --token adds
  "Authorization: Bearer <token>". Every record is distinct, shaped like seed 001's clients:
    {"app_id": "payment-service", "level": "info", "message": "<filler>",
     "source": "loadgen", "timestamp": <epoch seconds>,
     "metadata": {"worker": W, "conn": C, "seq": N, "run": "<run-id>"}}
  written without spaces; the message pads each record to about --size bytes. run, worker,
  conn and seq identify a record within a run; timestamp is when its body was built.
  Bodies are built ahead: at --rate 0 up to 64 MiB per worker before the start, then 4 MiB
  at a time while sending; at a --rate ~0.25 s of them, topped up between POSTs.
  --otlp protobuf|json sends OpenTelemetry log requests instead (POST /v1/logs,
  application/x-protobuf or application/json): per batch one ResourceLogs per app
  (service.name, service.instance.id, host.name, deployment.environment), two scopes each,
  and per record a time, severityNumber and severityText, a string body (sized so a
  record is about --size bytes in protobuf), http.method, http.route, http.status_code,
  user.id, loadgen.seq and loadgen.run attributes, a trace id, a span id and flags; a
  200 without rejected records counts the batch as sent.
  Answers: 202 {"accepted": N}, N = records in the batch, counts the batch as sent. 503
  (and 429): the same batch is resent after Retry-After (at most 5 s; 0.1 s without one). No answer
  (connection refused/reset, 60 s timeout): an error; the batch is resent on a new
  connection after 0.1 s (a keep-alive connection found closed is reopened at once, as a
  retry). Any other answer: an error, and the batch is skipped. The first 3 errors of each
  connection are printed; a connection stops after 10 errors in a row. Resending goes on
  for up to 5 s after --duration ends, and stops at a stop signal. --give-up behaves as
  seed 001's clients: any answer but 202, or none, fails the batch for good (given_up).

schedule:
  Open loop: every ~1 ms each connection sends, in one write, all records due since start
  that it has not sent yet; when behind it sends back to back to catch up instead of lowering
  the rate. Lag = how late the oldest record of a write is; max lag is reported.
  http://: a POST is due when its last record is due, and lag is how late it is sent; the
  last POST of a --duration run carries what is due by then. At --rate 0 each connection
  POSTs back to back, waiting for each answer (closed loop).
  The rate, --count and the schedule are split exactly over workers x connections."""

EPILOG = """\
exit status: 0 success (also when stopped by SIGINT/SIGTERM; a second signal skips waiting
for the server), 1 connection refused/reset, other send error or http error, 2 bad options.

examples:
  loadgen --rate 1000
  loadgen --rate 0 --duration 30 --workers 2 --connections 4 --json
  loadgen --count 100000 --rate 0 --workers 2 --connections 3 --framing lines
  loadgen --target tcp://127.0.0.1:5514 --payload syslog5424 --framing octet-counted
  loadgen --target udp://127.0.0.1:5514 --payload syslog3164 --rate 20000
  loadgen --events login:350,search:350,checkout:300 --duration 60
  loadgen --rate 2000 --pattern burst --burst-rate 50000 --duration 120 --timestamps
  loadgen --target http://127.0.0.1:3000/api/logs --batch 1000 --workers 4 --count 1000000
  loadgen --target http://127.0.0.1:3000/v1/logs --rate 20000 --duration 60 --ndjson --gzip
  loadgen --target http://127.0.0.1:3000 --apps high-volume-app:70,medium-app:20,low-app:10
  loadgen --target http://127.0.0.1:3000/v1/logs --otlp protobuf --gzip --rate 0 --count 1000000
  loadgen --tls --ca /etc/logd/tls/ca.pem --target tcp://logs.example.net:8080
  loadgen --tls --ca ca.pem --cert emitter.pem --target http://127.0.0.1:3000/v1/logs"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("target and volume")
    g.add_argument("--target", default=DEFAULT_TARGET, metavar="URL",
                   help="where to send: tcp://host:port, or http://host:port/path for HTTP "
                        "POSTs of JSON batches (default %(default)s)")
    g.add_argument("--rate", type=nonneg_float, default=None, metavar="N",
                   help="records per second in total over all workers and connections; "
                        "0 = as fast as possible (default 1000, or the sum of the --events "
                        "weights)")
    g.add_argument("--duration", type=positive_float, default=None, metavar="SECONDS",
                   help=f"how long to send (default {DEFAULT_DURATION:g}; unlimited when "
                        "--count is given)")
    g.add_argument("--count", type=nonneg_int, default=None, metavar="N",
                   help="total records to send, split exactly over workers and connections; "
                        "with --duration, stop at whichever comes first")
    g.add_argument("--workers", type=positive_int, default=1, metavar="N",
                   help="sending processes (default %(default)s)")
    g.add_argument("--connections", type=positive_int, default=1, metavar="N",
                   help="connections per worker (TCP, or keep-alive HTTP), one thread each "
                        "(default %(default)s)")
    g = p.add_argument_group("records")
    g.add_argument("--framing", choices=("frames", "lines", "octet-counted"), default=None,
                   help="tcp: length-prefixed frames with a severity byte, LF-terminated "
                        "lines, or syslog's octet counting (default frames; lines for "
                        "syslog payloads)")
    g.add_argument("--payload", choices=("text", "json", "syslog5424", "syslog3164"),
                   default=None,
                   help="tcp, udp: payload format: text, json, or syslog messages (RFC 5424, "
                        "or RFC 3164/BSD) (default text; json with --events)")
    g.add_argument("--size", type=positive_int, default=256, metavar="BYTES",
                   help="payload size in bytes, framing not included; http: size of each JSON "
                        "record (default %(default)s)")
    g.add_argument("--levels", default=DEFAULT_LEVELS, metavar="LEVEL:WEIGHT,...",
                   help="severity mix; levels by name (emerg alert crit error warn notice "
                        "info debug) or number 0-7; sets the frame severity byte and the "
                        "json 'level', by its name in lower case (default %(default)s)")
    g.add_argument("--events", default=None, metavar="NAME:WEIGHT,...",
                   help="tcp: spread records over these json 'event' names by weight; implies "
                        "--payload json, and without --rate the rate is the sum of the weights")
    g.add_argument("--unique", action="store_true",
                   help="build every record individually so no payload repeats (costs CPU per "
                        "record; automatic when --count*--size <= 64 MiB)")
    g.add_argument("--timestamps", action="store_true",
                   help="tcp: embed each record's intended send time in epoch ns (text: "
                        "ts=<ns> after the id; json: integer 'ts') for end-to-end latency")
    g.add_argument("--seed", type=int, default=None, metavar="N",
                   help="seed for the level/event/app order and the filler (default: "
                        "random)")
    g.add_argument("--run-id", default=None, metavar="ID",
                   help="run id in every payload ([A-Za-z0-9_.-], default: random hex)")
    g = p.add_argument_group("http:// targets")
    g.add_argument("--batch", type=positive_int, default=None, metavar="N",
                   help=f"records per POST (default {DEFAULT_BATCH})")
    g.add_argument("--ndjson", action="store_true",
                   help="send NDJSON (application/x-ndjson) instead of a JSON array")
    g.add_argument("--otlp", choices=("protobuf", "json"), default=None,
                   help="send OpenTelemetry log requests (OTLP/HTTP ExportLogsServiceRequest, "
                        "application/x-protobuf or OTLP/JSON) to /v1/logs instead of logd's "
                        "JSON; a batch is answered 200"),
    g.add_argument("--gzip", action="store_true",
                   help="gzip each body (Content-Encoding: gzip), built ahead like the bodies")
    g.add_argument("--token", default=None, metavar="TOKEN",
                   help="send 'Authorization: Bearer TOKEN'")
    g.add_argument("--give-up", action="store_true",
                   help="as seed 001's clients: a batch answered anything but 202 (or not "
                        "answered) is failed and never resent; counted as given_up records")
    g.add_argument("--apps", default=None, metavar="APP:WEIGHT,...",
                   help=f"app_id mix by weight (default {DEFAULT_APPS})")
    g = p.add_argument_group("TLS (logd listeners with a tls table)")
    g.add_argument("--tls", action="store_true",
                   help="connect with TLS (tcp:// and http:// targets); the server's "
                        "certificate is verified against --ca, else the system's CAs")
    g.add_argument("--ca", default=None, metavar="FILE",
                   help="PEM CA certificates to verify logd's certificate with")
    g.add_argument("--cert", default=None, metavar="FILE",
                   help="PEM client certificate (and its key, unless --key), for a listener "
                        "with client_ca")
    g.add_argument("--key", default=None, metavar="FILE", help="PEM key of --cert")
    g.add_argument("--insecure", action="store_true",
                   help="do not verify logd's certificate (testing only)")
    g = p.add_argument_group("rate pattern")
    g.add_argument("--pattern", choices=("steady", "burst"), default="steady",
                   help="steady: --rate throughout. burst: --rate, but --burst-rate for "
                        "--burst-seconds starting at every multiple of --burst-every seconds "
                        "(first burst at --burst-every; default %(default)s)")
    g.add_argument("--burst-rate", type=positive_float, default=None, metavar="N",
                   help="records per second during a burst (default 10 x --rate)")
    g.add_argument("--burst-seconds", type=positive_float, default=10.0, metavar="SECONDS",
                   help="length of each burst (default %(default)g)")
    g.add_argument("--burst-every", type=positive_float, default=30.0, metavar="SECONDS",
                   help="time from one burst start to the next (default %(default)g)")
    g = p.add_argument_group("output")
    g.add_argument("--json", action="store_true",
                   help="print the summary as one JSON object on stdout: sent, errors, "
                        "seconds, rate, mib_per_s, bytes, max_lag_ms, workers, connections "
                        "(per worker), framing, size; http adds posts, retries, http_errors, "
                        "batch, gzip (sent counts records answered 202, bytes their bodies as "
                        "sent, errors includes http_errors)")
    return p


def check_mode_options(args: argparse.Namespace, http: bool) -> None:
    """Options of the other kind of target are refused rather than silently ignored."""
    if not http and args.target.lower().startswith("udp:"):
        if args.framing is not None:
            raise UsageError("--framing applies to tcp:// targets only (udp://: a datagram "
                             "per record)")
        if args.tls:
            raise UsageError("--tls applies to tcp:// and http:// targets only")
    if http:
        given = [("--framing", args.framing is not None), ("--payload", args.payload is not None),
                 ("--events", args.events is not None), ("--timestamps", args.timestamps)]
        kind = "tcp://"
    else:
        given = [("--batch", args.batch is not None), ("--ndjson", args.ndjson),
                 ("--gzip", args.gzip), ("--token", args.token is not None),
                 ("--apps", args.apps is not None), ("--otlp", args.otlp is not None)]
        kind = "http://"
    for option, used in given:
        if used:
            raise UsageError(f"{option} applies to {kind} targets only")


def make_config(args: argparse.Namespace) -> Config:
    scheme, host, port, path = parse_target(args.target)
    http = scheme == "http"
    check_mode_options(args, http)
    if args.otlp is not None and args.ndjson:
        raise UsageError("--otlp and --ndjson: choose one body format")
    if args.token is not None and not re.fullmatch(r"[\x21-\x7e]+", args.token):
        raise UsageError("--token: printable ASCII without spaces")
    payload = args.payload
    events = [(event_name(DEFAULT_EVENT), 1)]
    if args.events is not None:
        if payload not in (None, "json"):
            raise UsageError("--events needs --payload json (the event goes in a json field)")
        payload = "json"
        events = parse_weights(args.events, "--events", event_name)
    payload = payload or "text"
    rate = args.rate
    if rate is None:
        rate = float(sum(w for _, w in events)) if args.events is not None else DEFAULT_RATE
    duration = args.duration
    if duration is None and args.count is None:
        duration = DEFAULT_DURATION
    if args.size > MAX_SIZE:
        raise UsageError(f"--size: at most {MAX_SIZE} bytes")
    burst_rate = args.burst_rate if args.burst_rate is not None else rate * 10
    if args.pattern == "burst":
        if rate <= 0:
            raise UsageError("--pattern burst needs a --rate > 0")
        if args.burst_seconds >= args.burst_every:
            raise UsageError("--burst-seconds must be shorter than --burst-every")
    run_id = args.run_id if args.run_id is not None else secrets.token_hex(4)
    if not RUN_ID_RE.match(run_id):
        raise UsageError("--run-id: 1-64 characters of A-Z a-z 0-9 _ . -")
    seed = args.seed if args.seed is not None else secrets.randbits(31)
    levels = parse_weights(args.levels, "--levels", level_number)
    apps = parse_weights(args.apps if args.apps is not None else DEFAULT_APPS, "--apps",
                         app_name)
    if http:
        framing, payload = ("ndjson" if args.ndjson else "json"), "json"
        if args.otlp is not None:
            framing = payload = f"otlp-{args.otlp}"
        mode = "http"
    else:
        if scheme == "udp":
            framing = "datagrams"
        elif args.framing is not None:
            framing = args.framing
        else:
            framing = "lines" if payload in SYSLOG_PAYLOADS else "frames"
        mode = resolve_mode(args.unique, args.timestamps, args.count, args.size)
    return Config(
        target=args.target, scheme=scheme, host=host, port=port, path=path, rate=rate,
        duration=duration, count=args.count, size=args.size, connections=args.connections,
        workers=args.workers, framing=framing, payload=payload,
        levels=weighted_table(levels, random.Random(seed * 2)),
        events=weighted_table(events, random.Random(seed * 2 + 1)),
        pattern=args.pattern, burst_rate=burst_rate, burst_seconds=args.burst_seconds,
        burst_every=args.burst_every, mode=mode,
        timestamps=args.timestamps, json_summary=args.json, seed=seed, run_id=run_id,
        apps=weighted_table(apps, random.Random(f"apps-{seed}")),
        batch=args.batch if args.batch is not None else DEFAULT_BATCH,
        ndjson=args.ndjson, gzip=args.gzip, token=args.token, tls=make_tls_context(args),
        give_up=args.give_up, otlp=args.otlp)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = make_config(args)
    except UsageError as exc:
        parser.error(str(exc))
    return run(cfg)
