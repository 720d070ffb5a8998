"""Weighted picks in O(log n): stride scheduling over a heap.

Each member has a weight and a "pass": the virtual time at which it is next due. A pick takes
the member with the lowest pass and advances it by `amount / weight`, so over any stretch each
member receives amounts in proportion to its weight, deterministically, within one pick's
amount. Members can be suspended (a full window) and resumed, keeping their place, so a member
briefly held back catches up; a new member, or one whose weight goes from 0 to more, starts
at the current virtual time, so being away earns it no burst.

Removal and updates use lazy deletion: stale heap entries are skipped when they surface.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Hashable
from typing import Any


class WeightError(ValueError):
    pass


def check_weight(weight: float) -> float:
    """A usable weight: finite and >= 0 (0 means: send nothing new)."""
    if not isinstance(weight, (int, float)) or isinstance(weight, bool):
        raise WeightError(f"weight must be a number, got {weight!r}")
    if math.isnan(weight) or math.isinf(weight) or weight < 0:
        raise WeightError(f"weight must be finite and >= 0, got {weight!r}")
    return float(weight)


class _Member:
    __slots__ = ("active", "key", "pass_", "picked", "version", "weight")

    def __init__(self, key: Hashable, weight: float, pass_: float) -> None:
        self.key = key
        self.weight = weight
        self.pass_ = pass_
        self.version = 0
        self.active = False
        self.picked = 0.0


class StridePicker:
    """Members keyed by any hashable; `pick(amount)` returns a key or None if none is eligible."""

    def __init__(self) -> None:
        self._members: dict[Hashable, _Member] = {}
        self._heap: list[tuple[float, int, int, _Member]] = []
        self._tiebreak = itertools.count()
        self._vtime = 0.0  # pass of the last pick: where newcomers and returners start
        self._active = 0

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._members

    @property
    def eligible(self) -> int:
        """Members that can be picked now (active, with weight > 0)."""
        return self._active

    def add(self, key: Hashable, weight: float) -> None:
        if key in self._members:
            raise KeyError(f"{key!r} is already a member")
        m = _Member(key, check_weight(weight), self._vtime)
        self._members[key] = m
        self._activate(m)

    def remove(self, key: Hashable) -> None:
        m = self._members.pop(key)
        self._deactivate(m)

    def set_weight(self, key: Hashable, weight: float) -> None:
        m = self._members[key]
        old, new = m.weight, check_weight(weight)
        if old > 0 and new > 0 and m.pass_ > self._vtime:
            # What is left of its current step, at the new rate: raising a weight must not
            # leave the member waiting out a step taken at the old, lower one.
            m.pass_ = self._vtime + (m.pass_ - self._vtime) * old / new
        elif old == 0:
            m.pass_ = self._vtime  # back from a drain: a fresh start, no debt or credit
        m.weight = new
        self._deactivate(m)
        if new > 0:
            self._activate(m)

    def weight(self, key: Hashable) -> float:
        return self._members[key].weight

    def suspend(self, key: Hashable) -> None:
        """Not eligible until resume() (its window is full, say)."""
        m = self._members[key]
        m.version += 1  # a later resume must not revive this member's old entry
        self._deactivate(m)
        m.active = False

    def resume(self, key: Hashable) -> None:
        """Eligible again, keeping its place: a member held back by a full window catches up
        on what it missed, so shares stay with the weights while it keeps up on average."""
        m = self._members.get(key)
        if m is not None and not m.active:
            self._activate(m, catch_up=True)

    def is_suspended(self, key: Hashable) -> bool:
        return not self._members[key].active

    def pick(self, amount: float = 1.0) -> Any:
        """The due member's key, charged `amount`; None when no member is eligible."""
        key = self.peek()
        if key is not None:
            self.charge(key, amount)
        return key

    def peek(self) -> Any:
        """The due member's key without charging it (the caller charges what it gave)."""
        heap = self._heap
        while heap:
            _, _, version, m = heap[0]
            if version != m.version or not m.active:
                heapq.heappop(heap)
                continue
            return m.key
        return None

    def charge(self, key: Hashable, amount: float) -> None:
        """Account `amount` given to `key`: it becomes due again amount/weight later."""
        m = self._members[key]
        m.picked += amount
        if not m.active:
            return
        self._vtime = max(self._vtime, m.pass_)
        m.pass_ += amount / m.weight
        m.version += 1
        heapq.heappush(self._heap, (m.pass_, next(self._tiebreak), m.version, m))
        if len(self._heap) > 4 * len(self._members) + 64:
            self._compact()

    def shares(self) -> dict[Hashable, float]:
        """Fraction of all picked amounts that went to each member."""
        total = sum(m.picked for m in self._members.values())
        return {k: (m.picked / total if total else 0.0) for k, m in self._members.items()}

    def _activate(self, m: _Member, catch_up: bool = False) -> None:
        if m.weight <= 0:
            m.active = False
            return
        m.active = True
        self._active += 1
        if not catch_up:
            m.pass_ = max(m.pass_, self._vtime)
        m.version += 1
        heapq.heappush(self._heap, (m.pass_, next(self._tiebreak), m.version, m))
        if len(self._heap) > 4 * len(self._members) + 64:
            self._compact()

    def _deactivate(self, m: _Member) -> None:
        if m.active:
            m.active = False
            self._active -= 1
            m.version += 1

    def _compact(self) -> None:
        self._heap = [e for e in self._heap if e[2] == e[3].version and e[3].active]
        heapq.heapify(self._heap)
