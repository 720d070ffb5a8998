"""logctl: talk to a running logd over its control socket.

Exit codes: 0 ok, 1 the daemon could not be reached or reported an error, 2 usage (logctl's
arguments, or a request logd refused as malformed: a filter that does not compile, a weight
that is no weight).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from typing import Any

DEFAULT_SOCKET = "/run/logd/control.sock"
INSTANCE_CONFIG = "/etc/logd/{instance}.toml"  # what the unit logd@NAME reads
EXIT_OK, EXIT_DAEMON, EXIT_USAGE = 0, 1, 2


class CtlError(Exception):
    def __init__(self, message: str, exit_code: int = EXIT_DAEMON) -> None:
        self.exit_code = exit_code
        super().__init__(message)


def _refusal(reply: dict[str, Any]) -> CtlError:
    """The error of a reply that is not ok: the request's own fault is a usage error."""
    code = EXIT_USAGE if reply.get("code") == "bad_request" else EXIT_DAEMON
    return CtlError(f"logd: {reply.get('error', 'unknown error')}", code)


def request(path: str, cmd: str, timeout: float = 10.0, **fields: Any) -> Any:
    """One request over the control socket; returns the result or raises CtlError."""
    try:
        with _connect(path) as s:
            s.settimeout(timeout)
            s.sendall(json.dumps({"cmd": cmd, **fields}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except TimeoutError:
        raise CtlError(f"no answer from logd on {path} within {timeout:g}s") from None
    except OSError as e:
        raise CtlError(f"cannot talk to logd on {path}: {e.strerror or e}") from None
    try:
        reply = json.loads(data)
    except ValueError:
        raise CtlError(f"logd on {path} sent a reply that is not JSON") from None
    if not reply.get("ok"):
        raise _refusal(reply)
    return reply["result"]


def _connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except FileNotFoundError:
        s.close()
        raise CtlError(f"cannot connect to {path}: no such socket; is logd running? "
                       "(see --socket or --config)") from None
    except ConnectionRefusedError:
        s.close()
        raise CtlError(f"cannot connect to {path}: connection refused; is logd running?") \
            from None
    except PermissionError:
        s.close()
        raise CtlError(f"cannot connect to {path}: permission denied (the socket is mode "
                       "0660: run as its owner or group)") from None
    except OSError as e:
        s.close()
        raise CtlError(f"cannot connect to {path}: {e.strerror or e}") from None
    return s


def socket_path(args: argparse.Namespace) -> str:
    if args.socket:
        return str(args.socket)
    config = args.config
    if not config and args.instance is not None:
        config = INSTANCE_CONFIG.format(instance=instance_name(args))
    if config:
        from logd.config import ConfigError, load
        try:
            return load(config, instance_env(args)).daemon.control_socket
        except ConfigError as e:
            raise CtlError(e.render(), EXIT_USAGE) from None
    return os.environ.get("LOGD_CONTROL_SOCKET", DEFAULT_SOCKET)


def instance_name(args: argparse.Namespace) -> str:
    """--instance, checked as logd checks an instance name."""
    from logd.config import to_instance
    try:
        name = to_instance(args.instance)
    except ValueError as e:
        raise CtlError(f"--instance: {e}", EXIT_USAGE) from None
    if not name:
        raise CtlError("--instance: expected a name, got \"\"", EXIT_USAGE)
    return name


def instance_env(args: argparse.Namespace) -> dict[str, str] | None:
    """The environment a config is read in: with --instance NAME, as logd reads it when
    LOGD_INSTANCE=NAME (so {instance} in its paths resolves alike)."""
    if args.instance is None:
        return None
    from logd.config import INSTANCE_ENV
    return {**os.environ, INSTANCE_ENV: instance_name(args)}


# -- rendering --

def _num(n: float) -> str:
    return f"{n:,.0f}"


def _bytes(n: float) -> str:
    from logd.units import format_size
    return format_size(n)


def _duration(s: float) -> str:
    s = int(s)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d" if d else "") + (f"{h}h" if d or h else "") + f"{m:02d}m{s:02d}s"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    for r in rows:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True))))
    return "\n".join(lines)


def render_listeners(listeners: dict[str, Any]) -> str:
    rows = []
    for name, s in listeners.items():
        errors = s.get("errors", {})
        detail = ", ".join(f"{k}={v}" for k, v in sorted(errors.items()))
        if s.get("type") == "kafka":
            kafka = (f"group {s.get('group')}, {len(s.get('partitions', {}))} partitions, "
                     f"lag {_num(s.get('lag', 0))}, rebalances {s.get('rebalances', 0)}")
            if not s.get("connected"):
                kafka = "DISCONNECTED, " + kafka
            detail = f"{kafka}, {detail}" if detail else kafka
        if s.get("otlp_requests"):
            otlp = (f"otlp {_num(s['otlp_requests'])} requests, "
                    f"{_num(s.get('otlp_records', 0))} records, "
                    f"{_num(s.get('otlp_rejected_records', 0))} rejected, "
                    f"{_num(s.get('otlp_decode_errors', 0))} undecodable")
            detail = f"{otlp}, {detail}" if detail else otlp
        if s.get("type") == "tail":
            tail = (f"{_num(s.get('files', 0))} files, {_num(s.get('open_files', 0))} open, "
                    f"lag {_bytes(s.get('lag_bytes', 0))}, rotations {s.get('rotations', 0)}, "
                    f"truncations {s.get('truncations', 0)}")
            detail = f"{tail}, {detail}" if detail else tail
        rows.append([name, s.get("type", "?"), _num(s.get("connections", 0)),
                     _num(s.get("records", 0)), _bytes(s.get("bytes", 0)),
                     _num(sum(errors.values())), detail or "-"])
    table = _table(["LISTENER", "TYPE", "CONNS", "RECORDS", "BYTES", "ERRORS", "DETAIL"], rows)
    files = [_tail_files(name, s) for name, s in listeners.items()
             if s.get("type") == "tail" and s.get("top_files")]
    return "\n\n".join([table, *files])


def _tail_files(name: str, s: dict[str, Any]) -> str:
    """A tail listener's files with the most left to read (its stats_files of them)."""
    rows = [[path, _bytes(f["offset"]), _bytes(f["size"]), _bytes(f["lag"]),
             "open" if f["open"] else "closed", "-" if f["at_path"] else "rotated/deleted"]
            for path, f in s["top_files"].items()]
    return f"{name}: files by lag\n" + _table(["FILE", "OFFSET", "SIZE", "LAG", "FD", "STATE"],
                                               rows)


def render_outputs(outputs: dict[str, Any]) -> str:
    rows = []
    for name, s in outputs.items():
        rows.append([name, _num(s.get("queued_records", 0)), _num(s.get("written", 0)),
                     _num(s.get("dropped", 0)), f"{s.get('dropped_pct', 0.0):.3f}%",
                     _num(s.get("errors", 0)), _num(s.get("retries", 0)),
                     f"{s.get('avg_flush_ms', 0.0):.2f}ms", f"{s.get('max_flush_ms', 0.0):.2f}ms",
                     _output_detail(s)])
    return _table(["OUTPUT", "QUEUED", "WRITTEN", "DROPPED", "DROP%", "ERRORS", "RETRIES",
                   "AVG FLUSH", "MAX FLUSH", "DETAIL"], rows)


def _output_detail(s: dict[str, Any]) -> str:
    """What an operator looks for beyond the counters: disconnected, spooled, dead letters."""
    parts = []
    problem = s.get("problem")
    if s.get("connected") is False:
        parts.append("DISCONNECTED")
    elif problem:
        parts.append(f"DEGRADED: {problem}")
    if s.get("buffer") == "disk":
        parts.append(f"spool {_bytes(s.get('spool_bytes', 0))}")
        for key in ("corrupt", "held_records", "refused", "lost_records", "ack_damaged"):
            if s.get(key):
                parts.append(f"{key}={_num(s[key])}")
    if s.get("dead_lettered"):
        parts.append(f"dead_letter={_num(s['dead_lettered'])}")
    if s.get("failed"):
        parts.append(f"failed={_num(s['failed'])}")
    if s.get("torn_repaired"):
        parts.append(f"torn_repaired={_num(s['torn_repaired'])}")
    return ", ".join(parts) or "-"


def render_stats(stats: dict[str, Any]) -> str:
    p = stats["process"]
    instance = stats.get("daemon", {}).get("instance")
    head = (f"logd{'@' + instance if instance else ''} pid {p['pid']}  "
            f"up {_duration(p['uptime_s'])}  "
            f"cpu {p.get('cpu_pct', 0.0):.1f}%  rss {_bytes(p['rss_bytes'])}  "
            f"fds {p['open_fds']}  reloads {stats.get('daemon', {}).get('reloads', 0)}  "
            f"unrouted {_num(stats['router']['unrouted'])}")
    return "\n\n".join([head, render_listeners(stats["listeners"]),
                        render_outputs(stats["outputs"])])


# -- commands --

def cmd_stats(args: argparse.Namespace) -> int:
    path = socket_path(args)
    if args.line:
        for _, line in request(path, "metrics_line").items():
            print(line)
        return EXIT_OK
    if not args.watch:
        stats = request(path, "stats")
        print(json.dumps(stats, indent=2) if args.json else render_stats(stats))
        return EXIT_OK
    try:
        while True:
            stats = request(path, "stats")
            text = json.dumps(stats) if args.json else render_stats(stats)
            if sys.stdout.isatty() and not args.json:
                sys.stdout.write("\x1b[H\x1b[2J" + text + "\n")
            else:
                sys.stdout.write(text + "\n")
            sys.stdout.flush()
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return EXIT_OK


def cmd_outputs(args: argparse.Namespace) -> int:
    result = request(socket_path(args), "outputs")
    print(json.dumps(result, indent=2) if args.json else render_outputs(result))
    return EXIT_OK


def cmd_listeners(args: argparse.Namespace) -> int:
    result = request(socket_path(args), "listeners")
    print(json.dumps(result, indent=2) if args.json else render_listeners(result))
    return EXIT_OK


def cmd_reload(args: argparse.Namespace) -> int:
    result = request(socket_path(args), "reload", timeout=120.0)
    if args.json:
        print(json.dumps(result, indent=2))
    elif result["applied"]:
        print("reloaded" + (": " + "; ".join(result["changes"]) if result["changes"]
                            else ": nothing changed"))
        for p in result.get("problems", []):
            print(f"warning: {p}", file=sys.stderr)
    else:
        print("reload refused; the running config stays:", file=sys.stderr)
        for p in result["problems"]:
            print(f"  {p}", file=sys.stderr)
    return EXIT_OK if result["applied"] else EXIT_DAEMON


def render_analyzers(pools: dict[str, Any]) -> str:
    rows = []
    for pool, analyzers in pools.items():
        for a in analyzers:
            weight = "-" if a["weight"] is None else f"{a['weight']:g}"
            # With client_ca, the certificate's CN says which analyzer it is.
            peer = f"{a['peer']} ({a['client_cn']})" if a.get("client_cn") else a["peer"]
            rows.append([a["id"], pool, peer, weight,
                         f"{100 * a['share']:.2f}%", _num(a["sent"]), _num(a["in_flight"]),
                         _num(a["acked"]), _num(a["redelivered_to"]),
                         "yes" if a["waiting"] else "no"])
    return _table(["ANALYZER", "POOL", "PEER", "WEIGHT", "SHARE", "SENT", "IN FLIGHT", "ACKED",
                   "REDELIVERED", "WAITING"], rows)


def cmd_analyzers(args: argparse.Namespace) -> int:
    path = socket_path(args)
    if args.action == "set-weight":
        if args.analyzer is None or args.weight is None:
            print("logctl: analyzers set-weight needs ID and WEIGHT", file=sys.stderr)
            return EXIT_USAGE
        result = request(path, "set_weight", id=args.analyzer, weight=args.weight)
        print(f"{result['id']}: weight {result['weight']:g}")
        return EXIT_OK
    result = request(path, "analyzers")
    print(json.dumps(result, indent=2) if args.json else render_analyzers(result))
    return EXIT_OK


def cmd_tail(args: argparse.Namespace) -> int:
    """Stream matching records until Ctrl-C, --count records, or logd stops."""
    path = socket_path(args)
    shown = 0
    try:
        with _connect(path) as s:
            s.sendall(json.dumps({"cmd": "tail", "filter": args.filter}).encode() + b"\n")
            stream = s.makefile("rb")
            first = stream.readline()
            if not first:
                raise CtlError(f"logd on {path} closed the connection")
            reply = json.loads(first)
            if not reply.get("ok"):
                raise _filter_refusal(reply, args.filter)
            out = sys.stdout
            for raw in stream:
                rec = json.loads(raw)
                if "dropped" in rec:
                    print(f"logctl: {rec['dropped']} records not shown (this reader fell "
                          "behind)", file=sys.stderr)
                    continue
                if args.json:
                    out.write(raw.decode())
                elif args.raw:
                    out.write(rec["payload"] + "\n")
                else:
                    out.write(f"{_when(rec['time'])} {rec['source']} {rec['level']} "
                              f"{rec['payload']}\n")
                out.flush()
                shown += 1
                if args.count and shown >= args.count:
                    return EXIT_OK
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        raise  # our reader went away (| head): main() ends quietly
    except OSError as e:
        raise CtlError(f"cannot talk to logd on {path}: {e.strerror or e}") from None
    raise CtlError("logd closed the stream (stopping?)")


def _filter_refusal(reply: dict[str, Any], expression: str) -> CtlError:
    """A refused tail: where logd says the filter is wrong, its expression is shown with a
    caret under that column, as `logd --check-config` shows a route's."""
    error = _refusal(reply)
    column = reply.get("column")
    if not isinstance(column, int) or isinstance(column, bool):
        return error
    from logd.filters import FilterError
    excerpt = FilterError("", expression, column).excerpt("    ")
    return CtlError(f"{error}\n{excerpt}", error.exit_code)


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def cmd_top(args: argparse.Namespace) -> int:
    from logd.top import app
    if not 0 < args.interval <= 3600:  # NaN too
        raise CtlError(f"--interval: expected seconds above 0, up to 3600, got "
                       f"{args.interval:g}", EXIT_USAGE)
    path = socket_path(args)
    timeout = max(2.0, args.interval)  # a logd that hangs shows as unreachable, soon

    def stats() -> dict[str, Any]:
        try:
            return dict(request(path, "stats", timeout=timeout))
        except CtlError as e:
            raise app.Unreachable(str(e)) from None

    try:
        if args.once:
            return app.once(stats, args.interval, sys.stdout)
        if sys.stdout.isatty():
            return app.live(stats, args.interval, sys.stdin, sys.stdout)
        return app.plain(stats, args.interval, sys.stdout)
    except app.Unreachable as e:  # --once: the one snapshot cannot be had
        raise CtlError(str(e)) from None


def cmd_check_config(args: argparse.Namespace) -> int:
    from logd.config import check_file
    return check_file(args.file, instance_env(args))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="logctl", description="Control and inspect a running logd.",
        epilog="The socket is --socket, else the control_socket of --config, else that "
               f"of {INSTANCE_CONFIG.format(instance='NAME')} with --instance NAME, else "
               f"$LOGD_CONTROL_SOCKET, else {DEFAULT_SOCKET}. Exit codes: 0 ok, 1 logd "
               "unreachable or reported an error, 2 usage (a filter or weight logd "
               "refused too) or invalid config.")
    p.add_argument("--socket", "-s", metavar="PATH", help="logd's control socket")
    p.add_argument("--config", "-c", metavar="FILE",
                   help="take the socket path from this logd config file")
    p.add_argument("--instance", "-i", metavar="NAME",
                   help="the logd instance NAME: its config (--config, else "
                   f"{INSTANCE_CONFIG.format(instance='NAME')}) is read as logd reads it "
                   "with LOGD_INSTANCE=NAME")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser("stats", help="listeners, outputs and process figures",
                       description="Per listener: connections, records, bytes, errors. Per "
                       "output: queued, written, dropped (%), errors, retries, flush times. "
                       "Process: CPU% since the last stats call, RSS, fds, uptime.")
    s.add_argument("--json", action="store_true", help="machine-readable JSON")
    s.add_argument("--watch", nargs="?", type=float, const=1.0, default=None, metavar="SEC",
                   help="refresh every SEC seconds (default 1) until Ctrl-C")
    s.add_argument("--line", action="store_true",
                   help="one seed-000 METRICS: line per output")
    s.set_defaults(func=cmd_stats)

    o = sub.add_parser("outputs", help="per-output counters")
    o.add_argument("--json", action="store_true", help="machine-readable JSON")
    o.set_defaults(func=cmd_outputs)

    ls = sub.add_parser("listeners", help="per-listener counters")
    ls.add_argument("--json", action="store_true", help="machine-readable JSON")
    ls.set_defaults(func=cmd_listeners)

    r = sub.add_parser("reload", help="re-read logd's config file and apply it",
                       description="Like SIGHUP. An invalid config is refused with its "
                       "problems, and the running one stays.")
    r.add_argument("--json", action="store_true", help="machine-readable JSON")
    r.set_defaults(func=cmd_reload)

    a = sub.add_parser("analyzers", help="connected analyzers; set-weight ID W changes one",
                       description="Lists analyzers with weight, share of messages, in "
                       "flight, acked, redelivered. 'set-weight ID W' sets an analyzer's "
                       "weight (0 drains it) until it sends its own update.")
    a.add_argument("action", nargs="?", choices=["list", "set-weight"], default="list")
    a.add_argument("analyzer", nargs="?", metavar="ID")
    a.add_argument("weight", nargs="?", type=float, metavar="WEIGHT")
    a.add_argument("--json", action="store_true", help="machine-readable JSON")
    a.set_defaults(func=cmd_analyzers)

    t = sub.add_parser("tail", help="stream records as they pass through logd",
                       description="Prints each record logd takes (before routing) that "
                       "matches the filter: TIME SOURCE LEVEL PAYLOAD. Runs until Ctrl-C, "
                       "--count records, or logd stops (exit 1). A reader that falls behind "
                       "never slows logd: records it missed are counted on stderr.",
                       epilog="Filters are route expressions: 'level >= warn', "
                       "'app == \"billing\" && ERROR', '*'.")
    t.add_argument("--filter", "-f", default="*", metavar="EXPR",
                   help="route filter expression (default: every record)")
    t.add_argument("--count", "-n", type=int, default=0, metavar="N",
                   help="stop after N records")
    fmt = t.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true",
                     help="one JSON object per record: time, source, level, payload")
    fmt.add_argument("--raw", action="store_true", help="the payload only")
    t.set_defaults(func=cmd_tail)

    tp = sub.add_parser(
        "top", help="a live view: rates, queues, drops, errors, lag, CPU and RSS",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Refreshes in place every --interval seconds until q or Ctrl-C.\n"
        "The first line: instance, version, uptime, records in and out per second,\n"
        "CPU and RSS. Per listener and output:\n"
        "  REC/S, BYTES/S  per second: taken in (listeners), delivered (outputs,\n"
        "                  analyzer pools)\n"
        "  TOTAL           records so far\n"
        "  QUEUE, FILL     what waits in the buffer; its share of the buffer's bound\n"
        "  DROPS           records a full drop_newest buffer refused\n"
        "  ERRS, RETRY     errors; writes tried again\n"
        "  LAG             how far a listener is behind its source (records, bytes)\n"
        "Then what a component says is wrong, on the rows left over. When stdout is\n"
        "not a terminal, a plain snapshot is printed per interval.",
        epilog="'-' is a figure the component does not report (or no rate yet).")
    tp.add_argument("--interval", "-n", type=float, default=1.0, metavar="SEC",
                    help="seconds between samples, which rates are computed over "
                    "(default 1)")
    tp.add_argument("--once", action="store_true",
                    help="print one plain snapshot after one interval and exit (exit 1 "
                    "when logd does not answer)")
    tp.set_defaults(func=cmd_top)

    c = sub.add_parser("check-config", help="validate a config file (no daemon needed)")
    c.add_argument("file", metavar="FILE")
    c.set_defaults(func=cmd_check_config)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    try:
        args = p.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0) and EXIT_USAGE
    try:
        return int(args.func(args))
    except CtlError as e:
        print(f"logctl: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:
        # stdout's reader left (| head): not an error; keep Python from complaining at exit
        # while it flushes stdout.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
