"""Budgets for property tests, in one place so the suite's time stays known."""

from __future__ import annotations

from hypothesis import settings


def examples(n: int) -> settings:
    """`n` examples under the "ci" profile (100 examples by default), scaled with the profile
    in use: ten times as many under "explore"."""
    return settings(max_examples=max(1, n * settings.default.max_examples // 100))
