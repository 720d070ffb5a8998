"""Routes: which records of a batch go to which outputs.

With no routes every batch goes whole to every output. Otherwise each route's filter picks
records, and an output gets the union of what the routes naming it picked, in order, once.
Records no route picked are counted as unrouted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from logd.config import RouteConfig
from logd.filters import Filter, compile_filter
from logd.outputs.base import Output
from logd.record import Batch


class Router:
    def __init__(self, routes: Mapping[str, RouteConfig], outputs: Mapping[str, Output]) -> None:
        self.unrouted = 0
        self.reconfigure(routes, outputs)

    def reconfigure(self, routes: Mapping[str, RouteConfig],
                    outputs: Mapping[str, Output]) -> None:
        """Swap in new routes and outputs; the next batch dispatched sees them (reload)."""
        self.outputs = dict(outputs)
        everywhere: list[Output] | None = None
        table: list[tuple[Filter, list[Output]]] = []
        if not routes:
            everywhere = list(self.outputs.values())
        else:
            for route in routes.values():
                dests = [self.outputs[n] for n in route.to if n in self.outputs]
                table.append((compile_filter(route.match), dests))
        self._everywhere, self._routes = everywhere, table

    def dispatch(self, batch: Batch) -> list[Any]:
        """Hand a batch to its outputs; returns the buffers the caller must wait on (full)."""
        if self._everywhere is not None:
            return [o.buffer for o in self._everywhere if o.submit(batch)]
        n = batch.count
        picked: dict[Output, set[int] | None] = {}  # None: the whole batch
        for flt, dests in self._routes:
            if flt.matches_all:
                for d in dests:
                    picked[d] = None
                continue
            indices = flt.select(batch)
            if not indices:
                continue
            for d in dests:
                have = picked.get(d, set())
                if have is not None:
                    have.update(indices)
                    picked[d] = have
        routed: set[int] = set()
        blocked = []
        for out, sel in picked.items():
            if sel is None or len(sel) == n:
                sub = batch
                routed = set(range(n))
            else:
                routed |= sel
                sub = batch.subset(sorted(sel))
            if out.submit(sub):
                blocked.append(out.buffer)
        self.unrouted += n - len(routed)
        return blocked
