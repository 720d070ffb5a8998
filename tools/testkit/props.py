"""Shared by the property tests: their budgets, and what a level means as the docs say it.

Budgets live here so the suite's time stays known: `examples(n)` is n examples under the
"ci" profile (tests/conftest.py), ten times as many under "explore".
"""

from __future__ import annotations

from typing import Any

from hypothesis import settings


def examples(n: int) -> settings:
    return settings(max_examples=max(1, n * settings.default.max_examples // 100))


# README / logd/fields.py: level names in any case, or a number 0-7 (syslog: 0 is emerg).
SEVERITY = {"emerg": 0, "emergency": 0, "panic": 0, "alert": 1, "crit": 2, "critical": 2,
            "fatal": 2, "err": 3, "error": 3, "warn": 4, "warning": 4, "notice": 5, "info": 6,
            "information": 6, "informational": 6, "debug": 7, "trace": 7}
INFO = 6


def level_severity(v: Any) -> int | None:
    """The severity a level value names, or None when it names none."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v if 0 <= v <= 7 else None
    if isinstance(v, str):
        if v.isascii() and v.isdigit():
            return int(v) if int(v) <= 7 else None
        return SEVERITY.get(v.lower())
    return None
