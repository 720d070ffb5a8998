"""The records: what they say, how big they are, and how they are framed; built into blocks
(tcp://) or POST bodies (http://) ahead of sending."""

from __future__ import annotations

import array
import itertools
import random
import re
import struct
import time
import zlib

from loadgenkit.config import Config

# syslog numbering, as the severity byte of a frame carries it; names match logd's.
SEVERITY_NAMES = ("emerg", "alert", "crit", "error", "warn", "notice", "info", "debug")
SYSLOG_PAYLOADS = ("syslog5424", "syslog3164")
FILLER_SPREAD = 4096           # filler slices start at varying offsets within this window
GZIP_LEVEL = 1                  # the filler compresses well even at the fastest level

WORDS = (
    "request", "served", "user", "session", "cache", "miss", "hit", "upstream", "latency",
    "ok", "retry", "queue", "worker", "disk", "flush", "batch", "token", "route", "shard",
    "commit", "replica", "timeout", "accepted", "closed", "client", "server", "bytes", "read",
    "write", "sync", "index", "lookup", "checkout", "payment", "order", "item", "status",
    "started", "finished", "handler", "pool", "lease", "renewed", "expired", "config", "loaded",
)


def make_filler(seed: int, size: int) -> str:
    """Word-like printable ASCII that needs no JSON escaping and compresses like real logs."""
    rng = random.Random(seed)
    base = " ".join(rng.choice(WORDS) for _ in range(12000))
    need = FILLER_SPREAD + size + 1
    return (base * (need // len(base) + 1))[:need]


class Block:
    """Encoded records ready to send, and where each record starts (to send part of a block)."""

    __slots__ = ("count", "data", "recsize", "starts")

    def __init__(self, data: bytes, count: int, recsize: int,
                 starts: array.array[int] | None) -> None:
        self.data = memoryview(data)
        self.count = count
        self.recsize = recsize      # used when every record has the same length
        self.starts = starts        # count + 1 offsets otherwise

    def offset(self, k: int) -> int:
        return k * self.recsize if self.starts is None else self.starts[k]


class Builder:
    """Builds the records of one connection. Record `seq` of this connection is record
    `seq * n + index` of the whole run, which picks its level and event."""

    def __init__(self, cfg: Config, worker: int, conn: int, filler: str) -> None:
        self.cfg = cfg
        self.n = cfg.total_connections
        self.index = worker * cfg.connections + conn
        self.text_prefix = f"{cfg.run_id} {worker}-{conn} "
        self.id_prefix = f"{cfg.run_id}-{worker}-{conn}-"
        self.filler = filler
        # Slices start at word boundaries so the filler reads like words, not "inished shard".
        self.offsets = [m.start() for m in re.finditer(r"\b\w", filler[:FILLER_SPREAD])]
        self.headers: dict[int, str] = {}
        self.stamps = ("", 0.0)  # the syslog time of the block being built, and its second

    def record(self, seq: int, stamp: int | None, wall: str) -> str:
        """One framed record as a latin-1 str (payloads are ASCII, frame headers any byte)."""
        cfg = self.cfg
        j = seq * self.n + self.index
        levels = cfg.levels
        sev = levels[j % len(levels)]
        size = cfg.size
        offsets = self.offsets
        off = offsets[(j * 613) % len(offsets)]
        if cfg.payload == "text":
            if stamp is None:
                head = f"{self.text_prefix}{seq}"
            else:
                head = f"{self.text_prefix}{seq} ts={stamp}"
            pad = size - len(head)
            # The id is never cut: a size too small for it yields a longer payload.
            body = head + " " + self.filler[off:off + pad - 1] if pad > 0 else head
        elif cfg.payload in SYSLOG_PAYLOADS:
            # facility user (1); the message starts with the record's unique id, as text does
            ident = f"{self.text_prefix}{seq}" if stamp is None else \
                f"{self.text_prefix}{seq} ts={stamp}"
            if cfg.payload == "syslog5424":
                head = (f"<{8 + sev}>1 {self.syslog_time(wall)} loadgen-host loadgen "
                        f"{self.index} - - {ident}")
            else:
                head = (f"<{8 + sev}>{self.syslog_time(wall)} loadgen-host "
                        f"loadgen[{self.index}]: {ident}")
            pad = size - len(head)
            body = head + " " + self.filler[off:off + pad - 1] if pad > 0 else head
        else:
            events = cfg.events
            head = (f'{{"ts": {wall if stamp is None else stamp}, '
                    f'"level": "{SEVERITY_NAMES[sev]}", "app": "loadgen", '
                    f'"event": {events[j % len(events)]}, "id": "{self.id_prefix}{seq}", '
                    '"message": "')
            pad = size - len(head) - 2
            body = head + self.filler[off:off + pad] + '"}' if pad > 0 else head + '"}'
        if cfg.framing == "lines":
            return body + "\n"
        if cfg.framing == "octet-counted":
            return f"{len(body)} {body}"
        if cfg.framing == "datagrams":
            return body
        key = len(body) * 8 + sev
        hdr = self.headers.get(key)
        if hdr is None:
            hdr = struct.pack(">IB", len(body) + 1, sev).decode("latin-1")
            self.headers[key] = hdr
        return hdr + body

    def syslog_time(self, wall: str) -> str:
        """The block's time as its syslog format writes it (RFC 3339, or BSD's)."""
        if self.stamps[1] != float(wall):
            t = float(wall)
            if self.cfg.payload == "syslog5424":
                text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + \
                    f".{int(t % 1 * 1e6):06d}Z"
            else:
                text = time.strftime("%b %e %H:%M:%S", time.localtime(t))
            self.stamps = (text, t)
        return self.stamps[0]

    def block(self, seq0: int, count: int, stamps: list[int] | None = None) -> Block:
        wall = f"{time.time():.6f}"
        rec = self.record
        seqs = range(seq0, seq0 + count)
        if stamps is None:
            recs = [rec(s, None, wall) for s in seqs]
        else:
            recs = [rec(s, t, wall) for s, t in zip(seqs, stamps, strict=True)]
        data = "".join(recs).encode("latin-1")
        first = len(recs[0])
        if len(data) == first * count and all(len(r) == first for r in recs):
            return Block(data, count, first, None)
        starts = array.array("q", itertools.accumulate(map(len, recs), initial=0))
        return Block(data, count, first, starts)

    def sample_size(self) -> int:
        return len(self.record(0, None, f"{time.time():.6f}"))


class HttpBuilder:
    """Builds the POST bodies of one HTTP connection. Record `seq` of this connection is record
    j = `seq * n + index` of the whole run: its level is levels[j % L] and its app
    apps[(j // L) % A], so any L * A consecutive records of the run hold the exact mix of both.
    """

    def __init__(self, cfg: Config, worker: int, conn: int, filler: str) -> None:
        self.cfg = cfg
        self.n = cfg.total_connections
        self.index = worker * cfg.connections + conn
        self.filler = filler
        # Taken in turn (shuffled, so neighbours differ): a multiplier like Builder's j * 613
        # would pick a single offset whenever the count of word starts is a multiple of it.
        self.offsets = [m.start() for m in re.finditer(r"\b\w", filler[:FILLER_SPREAD])]
        random.Random(cfg.seed).shuffle(self.offsets)
        # App-major, so heads[j % len(heads)] is the head of record j (see above).
        self.heads = [f'{{"app_id":{app},"level":"{SEVERITY_NAMES[sev]}","message":"'
                      for app in cfg.apps for sev in cfg.levels]
        self.mid_a = '","source":"loadgen","timestamp":'
        self.mid_b = f',"metadata":{{"worker":{worker},"conn":{conn},"seq":'
        self.end = f',"run":"{cfg.run_id}"}}}}'

    def body(self, seq0: int, count: int) -> bytes:
        """The body of one POST: records seq0 .. seq0 + count - 1, stamped with the time now.
        The message pads each record to --size bytes (it is empty if the rest is longer)."""
        cfg = self.cfg
        mid = f"{self.mid_a}{time.time():.6f}{self.mid_b}"
        end = self.end
        room = cfg.size - len(mid) - len(end)
        rooms = [room - len(h) for h in self.heads]
        heads = self.heads
        nh = len(heads)
        filler = self.filler
        offsets = self.offsets
        no = len(offsets)
        n = self.n
        index = self.index
        recs = []
        for seq in range(seq0, seq0 + count):
            j = seq * n + index
            k = j % nh
            s = str(seq)
            pad = rooms[k] - len(s)
            off = offsets[j % no]
            recs.append(f"{heads[k]}{filler[off:off + pad] if pad > 0 else ''}{mid}{s}{end}")
        text = "\n".join(recs) + "\n" if cfg.ndjson else "[" + ",".join(recs) + "]"
        data = text.encode("ascii")
        return zlib.compress(data, GZIP_LEVEL, wbits=31) if cfg.gzip else data
