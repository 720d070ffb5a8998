"""Text as a terminal shows it: control characters made visible, widths in columns.

Names come from the config (any TOML key) and problems from servers' error messages: an
escape sequence in one must not drive the terminal, and a CJK name takes two columns per
character, so lengths in characters would let a line pass the screen's edge.
"""

from __future__ import annotations

import unicodedata

CUT = "~"  # ends a text cut to fit (ASCII: any terminal shows it in one column)


def printable(text: str) -> str:
    """`text` with control, format and unassigned characters each shown as '?'."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch == " " else "?" for ch in text)


def _char_width(ch: str) -> int:
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in "WF" else 1


def width(text: str) -> int:
    """Columns `text` takes in a terminal."""
    if text.isascii():
        return len(text)
    return sum(map(_char_width, text))


def fit(text: str, columns: int) -> str:
    """`text` cut to at most `columns` columns, the cut marked."""
    if width(text) <= columns:
        return text
    room = max(columns - 1, 0)
    out, used = [], 0
    for ch in text:
        w = _char_width(ch)
        if used + w > room:
            break
        out.append(ch)
        used += w
    return "".join(out) + CUT[:columns]


def ljust(text: str, columns: int) -> str:
    return text + " " * max(columns - width(text), 0)


def rjust(text: str, columns: int) -> str:
    return " " * max(columns - width(text), 0) + text
