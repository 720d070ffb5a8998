"""Dead-letter files: what a destination or an input refused for itself, kept as JSON lines
with the reason, so nothing refused disappears without a trace."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import orjson


def append(path: str, entries: Iterable[dict[str, Any]]) -> None:
    """Append one JSON line per entry to `path` (its directory made if absent); raises
    OSError when the file cannot be written."""
    lines = b"".join(orjson.dumps(e, default=str) + b"\n" for e in entries)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "ab") as f:
        f.write(lines)
