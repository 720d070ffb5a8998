"""Figures in few columns: 12.3k, 340MiB, 3h02m. Each result has at most 6 characters, so
a table of them fits an 80-column terminal."""

from __future__ import annotations

_COUNT_UNITS = ("k", "M", "G", "T", "P")
_SIZE_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def count(n: float) -> str:
    """999, 12.3k, 456k, 7.1M; a fraction below 10 keeps one decimal (0.5)."""
    if n < 999.5:
        return f"{n:.1f}" if n < 9.95 and n != int(n) else f"{n:.0f}"
    for unit in _COUNT_UNITS:
        n /= 1000
        if n < 999.5 or unit == _COUNT_UNITS[-1]:
            return f"{n:.1f}{unit}" if n < 99.95 else f"{n:.0f}{unit}"
    raise AssertionError("unreachable")


def size(n: float) -> str:
    """512B, 1.2MiB, 340MiB; a value that would need 4 digits takes the next unit."""
    if n < 999.5:
        return f"{n:.0f}B"
    for unit in _SIZE_UNITS:
        n /= 1024
        if n < 999.5 or unit == _SIZE_UNITS[-1]:
            return f"{n:.1f}{unit}" if n < 9.95 else f"{n:.0f}{unit}"
    raise AssertionError("unreachable")


def exact(n: int, width: int) -> str:
    """n in full when it fits `width`, else as count(n)."""
    text = str(n)
    return text if len(text) <= width else count(n)


def duration(seconds: float) -> str:
    """12m05s, 3h02m, 4d07h: the two largest units."""
    s = int(max(seconds, 0))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d{h:02d}h"
    if h:
        return f"{h}h{m:02d}m"
    return f"{m}m{s:02d}s"
