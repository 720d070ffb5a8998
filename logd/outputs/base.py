"""What every output shares: a bounded buffer in front, and intake counters."""

from __future__ import annotations

from typing import Any

from logd.buffers import make_buffer
from logd.component import Component
from logd.config import BufferConfig
from logd.record import Batch


class Output(Component):
    kind = "output"

    def __init__(self, name: str, buffer_cfg: BufferConfig) -> None:
        super().__init__(name)
        self.buffer = make_buffer(buffer_cfg, name)

    def submit(self, batch: Batch) -> bool:
        """Called by the router for each batch; True when the caller should pause reading."""
        return self.buffer.put(batch)

    def ready(self) -> bool:
        """Whether the output can write now (a database output: connected)."""
        return True

    def pending_records(self) -> int:
        """Records taken but not yet written (what a shutdown deadline would lose)."""
        return self.buffer.queued_records

    def give_up(self) -> None:
        """Called past the shutdown deadline, before close(): stop retrying, close promptly."""

    def stats(self) -> dict[str, Any]:
        b = self.buffer
        accepted = b.accepted_records
        total = accepted + b.dropped_records
        return {
            "queued_records": b.queued_records,
            "queued_bytes": b.queued_bytes,
            "accepted": accepted,
            "dropped": b.dropped_records,
            "dropped_pct": 100.0 * b.dropped_records / total if total else 0.0,
        }
