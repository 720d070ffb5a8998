"""Human strings for sizes, durations and addresses, as config files write them."""

from __future__ import annotations

import math
import re
from fractions import Fraction

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "ki": 1024, "kib": 1024, "mi": 1024**2, "mib": 1024**2, "gi": 1024**3, "gib": 1024**3,
    "ti": 1024**4, "tib": 1024**4,
}
# re.ASCII: \d would take digits of any script ("٣"), and float() reads them.
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$", re.ASCII)

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", re.ASCII)


def finite(x: float) -> bool:
    """Whether a number is finite as a float. tomllib reads integers of any size, and
    math.isfinite() raises OverflowError on one past a float's range."""
    try:
        return math.isfinite(x)
    except OverflowError:
        return False


def parse_size(value: object) -> int:
    """Bytes from an int or a string like "64MiB", "1.5GB", "4096".

    Raises ValueError with the accepted forms when the value is not one of them.
    """
    if isinstance(value, bool):
        raise ValueError("expected a size like \"64MiB\" or a number of bytes")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("expected a size >= 0")
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            unit = _SIZE_UNITS.get(m.group(2).lower())
            if unit is not None:
                # Exact: a float product cuts "2.01KB" (2009.9999999999998) to 2009 bytes.
                return int(Fraction(m.group(1)) * unit)
    raise ValueError(
        f"expected a size like \"64MiB\", \"1GB\" or a number of bytes, got {value!r}"
    )


def parse_duration(value: object) -> float:
    """Seconds from a number or a string like "30s", "500ms", "1h30m"."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like \"30s\"")
    if isinstance(value, (int, float)):
        if not finite(value) or value < 0:
            raise ValueError(f"expected a finite duration >= 0, got {value!r}")
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        pos = 0
        total = 0.0
        for m in _DURATION_PART.finditer(text):
            if m.start() != pos:
                break
            total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
            pos = m.end()
        else:
            if pos == len(text) and pos > 0:
                return total
    raise ValueError(
        f"expected a duration like \"30s\", \"500ms\", \"1h30m\" or a number of seconds, "
        f"got {value!r}"
    )


def parse_address(value: object) -> tuple[str, int]:
    """(host, port) from "host:port", "[::1]:port" or ":port" (all interfaces)."""
    if isinstance(value, str):
        host, sep, port_text = value.rpartition(":")
        # isdigit() is true of "²" (int() refuses it) and "٣" (int() reads 3).
        if sep and port_text.isascii() and port_text.isdigit() and int(port_text) <= 65535:
            if host.startswith("[") and host.endswith("]"):
                return (host[1:-1], int(port_text))
            if ":" not in host:  # a bare IPv6 address needs brackets
                return (host or "0.0.0.0", int(port_text))
    raise ValueError(
        f"expected an address like \"127.0.0.1:8080\", \"[::1]:8080\" or \":8080\", "
        f"got {value!r}"
    )


def format_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n}B"


_URL_PASSWORD = re.compile(r"(//[^/@:]*:)[^/@]*@")
_QUERY_PASSWORD = re.compile(r"((?:^|[?&])(?:password|sslpassword)=)[^&]*", re.I)


def redact_url(text: str) -> str:
    """A URL fit for a log line or an error message: its password replaced by ***."""
    return _QUERY_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", text))
