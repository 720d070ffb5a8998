"""The daemon's own logs: one JSON object per line on stderr, and rate limiting for floods.

A flood of bad input must not become a flood of log lines: `RateLimitedLog` lets a few lines
per key through each interval and reports how many it suppressed.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from typing import Any

import orjson

_RESERVED = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


# What libraries reported as errors, by logger and kind (aiohttp's "Error handling request"
# for a malformed request, say): counted here, logged as one line, rate-limited.
LIBRARY_ERRORS: Counter[str] = Counter()
_LIBRARIES = ("aiohttp", "aiokafka", "asynch", "asyncpg", "kafka")


class Throttle:
    """At most `burst` lines per key every `interval` seconds; the rest are counted and the
    next line let through says how many were suppressed."""

    def __init__(self, interval: float = 10.0, burst: int = 5) -> None:
        self.interval = interval
        self.burst = burst
        self._window: dict[str, list[float]] = {}  # key -> [window start, lines, suppressed]

    def admit(self, key: str) -> int | None:
        """None: suppress this line; else let it through, with the lines suppressed since
        the last one let through (0 or more)."""
        now = time.monotonic()
        if len(self._window) > 1024:  # keys from input (paths, peers): bounded
            self._window = {k: w for k, w in self._window.items()
                            if now - w[0] < self.interval}
        suppressed = 0
        w = self._window.get(key)
        if w is None or now - w[0] >= self.interval:
            if w is not None:
                suppressed = int(w[2])
            w = [now, 0, 0]
            self._window[key] = w
        if w[1] < self.burst:
            w[1] += 1
            return suppressed
        w[2] += 1
        return None


class OneLineFilter(logging.Filter):
    """A library's error with a traceback becomes one counted line: what a hostile client
    can trigger must not fill the log with tracebacks."""

    def __init__(self, interval: float = 10.0, burst: int = 5) -> None:
        super().__init__()
        self.throttle = Throttle(interval, burst)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or record.name.split(".", 1)[0] not in _LIBRARIES:
            return True
        exc = record.exc_info[1] if record.exc_info else None
        kind = type(exc).__name__ if exc is not None else "error"
        key = f"{record.name}:{kind}"
        LIBRARY_ERRORS[key] += 1
        if exc is not None:
            record.msg = f"{record.getMessage()}: {kind}: {exc}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        suppressed = self.throttle.admit(key)
        if suppressed is None:
            return False
        if suppressed:
            record.suppressed_since_last = suppressed
        return True


def setup(level: str = "info") -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(OneLineFilter())
    root.addHandler(handler)
    root.setLevel(level.upper())


class RateLimitedLog:
    """A logger's lines, throttled per key (see Throttle)."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0, burst: int = 5) -> None:
        self.logger = logger
        self.throttle = Throttle(interval, burst)

    def warning(self, key: str, msg: str, **fields: Any) -> None:
        self.log(logging.WARNING, key, msg, **fields)

    def error(self, key: str, msg: str, **fields: Any) -> None:
        self.log(logging.ERROR, key, msg, **fields)

    def debug(self, key: str, msg: str, **fields: Any) -> None:
        if self.logger.isEnabledFor(logging.DEBUG):
            self.log(logging.DEBUG, key, msg, **fields)

    def log(self, level: int, key: str, msg: str, **fields: Any) -> None:
        suppressed = self.throttle.admit(key)
        if suppressed is None:
            return
        if suppressed:
            fields["suppressed_since_last"] = suppressed
        self.logger.log(level, msg, extra=fields)


def set_level(level: str) -> None:
    """Change the daemon's log level (reload)."""
    logging.getLogger().setLevel(level.upper())
