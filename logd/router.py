"""Routes: which records of a batch go to which outputs.

With no routes every batch goes whole to every output. Otherwise each route's filter picks
records, and an output gets the union of what the routes naming it picked, in order, once.
A route with `weights` is a weighted group: each picked record goes to one member only, runs
of records assigned by stride scheduling (O(log n) per pick). Records no route picked are
counted as unrouted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from logd.config import RouteConfig
from logd.delivery import Receipt
from logd.filters import Filter, compile_filter
from logd.outputs.base import Destination
from logd.record import Batch
from logd.tap import Tap
from logd.weighted import StridePicker

GROUP_CHUNK = 64  # records per pick in a weighted group

log = logging.getLogger("logd.router")


@dataclass
class Plan:
    """Where one batch's records go (see Router.plan)."""

    parts: list[tuple[Destination, Batch]]
    unrouted: int
    generation: int

    def blocking_full(self) -> list[Any]:
        """The buffers of this plan that are full and make their producers wait."""
        return [o.buffer for o, _ in self.parts if o.buffer.block and o.buffer.full]


class Router:
    def __init__(self, routes: Mapping[str, RouteConfig],
                 outputs: Mapping[str, Destination]) -> None:
        self.unrouted = 0
        self.submit_errors = 0
        self.taps: list[Tap] = []  # logctl tail: copies of what passes, kept across reloads
        self.generation = 0  # counts reconfigurations: a plan made before one is stale
        self.reconfigure(routes, outputs)

    def reconfigure(self, routes: Mapping[str, RouteConfig],
                    outputs: Mapping[str, Destination]) -> None:
        """Swap in new routes and outputs; the next batch dispatched sees them (reload)."""
        self.outputs = dict(outputs)
        self.generation += 1
        everywhere: list[Destination] | None = None
        table: list[tuple[Filter, list[Destination], StridePicker | None]] = []
        if not routes:
            everywhere = list(self.outputs.values())
        else:
            for route in routes.values():
                dests = [self.outputs[n] for n in route.to if n in self.outputs]
                picker = None
                if route.weights:
                    picker = StridePicker()
                    for i, w in enumerate(route.weights[:len(dests)]):
                        picker.add(i, w)
                table.append((compile_filter(route.match), dests, picker))
        self._everywhere, self._routes = everywhere, table

    def readiness(self) -> dict[str, dict[str, Any]]:
        """Per destination: ready to take records, and how many wait (GET /health)."""
        out = {}
        for n, o in self.outputs.items():
            problem = o.problem()
            entry: dict[str, Any] = {
                "ready": problem is None and not (o.buffer.block and o.buffer.full),
                "queued_records": o.buffer.queued_records}
            if problem is not None:
                entry["problem"] = problem
            out[n] = entry
        return out

    def health(self) -> tuple[int, dict[str, Any]]:
        """GET /health, wherever it is served: 200 "ok" when every destination can take
        records, else 503 "degraded"; per destination, ready and queued records."""
        outputs = self.readiness()
        ok = all(o["ready"] for o in outputs.values())
        return (200 if ok else 503), {"status": "ok" if ok else "degraded", "outputs": outputs}

    def plan(self, batch: Batch, tap: bool = True) -> Plan:
        """Where the records of a batch go: (destination, the part of the batch it gets).

        Routes are evaluated here once; `submit` hands the parts over. A listener that waits
        for room before handing a batch over (HTTP) asks only the destinations of its plan
        (and plans again, with `tap=False`, if a reload came meanwhile).
        """
        if tap and self.taps:
            for t in self.taps:
                t.offer(batch)
        if self._everywhere is not None:
            return Plan([(o, batch) for o in self._everywhere], 0, self.generation)
        n = batch.count
        # Per destination: None (the whole batch), the ascending indices one route picked
        # (a list, as the filter gave it: no per-record work), or a set once several add up.
        picked: dict[Destination, list[int] | set[int] | None] = {}
        for flt, dests, picker in self._routes:
            if picker is not None:
                self._split_by_weight(flt.select(batch), dests, picker, picked)
                continue
            if flt.matches_all:
                for d in dests:
                    picked[d] = None
                continue
            indices = flt.select(batch)
            if not indices:
                continue
            for d in dests:
                if d not in picked:
                    picked[d] = indices
                else:
                    _add(picked, d, indices)
        whole = False
        chosen: list[list[int] | set[int]] = []
        parts: list[tuple[Destination, Batch]] = []
        for out, sel in picked.items():
            if sel is None or len(sel) == n:
                sub = batch
                whole = True
            else:
                chosen.append(sel)
                sub = batch.subset(sel if isinstance(sel, list) else sorted(sel))
            parts.append((out, sub))
        if whole:
            unrouted = 0
        elif len(chosen) == 1:
            unrouted = n - len(chosen[0])
        else:
            unrouted = n - len(set().union(*chosen))
        return Plan(parts, unrouted, self.generation)

    def submit(self, plan: Plan, receipt: Receipt | None = None) -> list[Any]:
        """Hand a plan's parts to their destinations; returns the buffers the caller must
        wait on (full, under block). With a receipt, every destination reports on it."""
        self.unrouted += plan.unrouted
        if receipt is not None:
            receipt.expect(sum(part.count for _, part in plan.parts))
        blocked = []
        for out, part in plan.parts:
            if self._submit(out, part, receipt):
                blocked.append(out.buffer)
        return blocked

    def dispatch(self, batch: Batch, receipt: Receipt | None = None) -> list[Any]:
        """Route and hand over a batch; returns the buffers the caller must wait on."""
        return self.submit(self.plan(batch), receipt)

    def _submit(self, out: Destination, batch: Batch, receipt: Receipt | None) -> bool:
        """Hand a batch to one output; a bug in one output's intake must not keep the batch
        from the others (or kill the connection it came on): it is counted and logged."""
        try:
            return out.submit(batch, receipt)
        except Exception:
            if receipt is not None:
                receipt.lose(batch.count)
            out.buffer.dropped_records += batch.count
            self.submit_errors += batch.count
            if self.submit_errors == batch.count or self.submit_errors % 100_000 < batch.count:
                log.exception("an output could not take a batch; its records are dropped "
                              "for that output", extra={"output": out.name,
                                                        "records": batch.count})
            return False

    @staticmethod
    def _split_by_weight(indices: list[int], dests: list[Destination], picker: StridePicker,
                         picked: dict[Destination, list[int] | set[int] | None]) -> None:
        """A weighted group: each run of records goes to one member, picked by weight."""
        step = max(1, min(GROUP_CHUNK, len(indices) // max(1, picker.eligible)))
        for start in range(0, len(indices), step):
            run = indices[start:start + step]
            d = dests[picker.pick(len(run))]
            if d not in picked:
                picked[d] = set(run)
            else:
                _add(picked, d, run)


def _add(picked: dict[Destination, list[int] | set[int] | None], d: Destination,
         indices: list[int]) -> None:
    """More records for a destination that has some: a set of them all (None stays: it
    gets the whole batch)."""
    have = picked[d]
    if have is None:
        return
    if isinstance(have, list):
        have = picked[d] = set(have)
    have.update(indices)
