"""Destinations: what routes send records to (outputs, and analyzer pools). Each has a bounded
buffer in front (logd/buffers), takes batches through `submit`, and says whether it can
write (`ready`, `problem`), what a stop would lose (`pending_records`), and stops retrying
when told to give up."""

from __future__ import annotations

import os
from typing import Any

from logd.buffers import Buffer, SpoolError, make_buffer
from logd.component import BuildContext, Component, StartError
from logd.config import BufferConfig, MemoryBufferConfig
from logd.delivery import Receipt
from logd.record import Batch
from logd.stats import DestinationStats


class Destination(Component):
    kind = "output"

    def __init__(self, name: str, type_name: str,
                 buffer_cfg: BufferConfig | MemoryBufferConfig,
                 ctx: BuildContext | None = None) -> None:
        super().__init__(name)
        self.type = type_name  # the config's type: a spool records which type it holds
        self.ctx = ctx or BuildContext()
        self.buffer_cfg = buffer_cfg
        self.buffer: Buffer = make_buffer(buffer_cfg, name)

    def spool_directory(self, state_dir: str) -> str:
        """Where a disk buffer keeps its spool."""
        path = self.buffer_cfg.path if isinstance(self.buffer_cfg, BufferConfig) else ""
        return path or os.path.join(state_dir, "spool", self.name)

    def open_buffer(self, state_dir: str) -> None:
        """Open a disk buffer's spool (what it holds from before is sent first)."""
        try:
            self.buffer.open(self.spool_directory(state_dir), self.type)
        except (SpoolError, OSError) as e:
            raise StartError(f"output {self.name}: {e}") from None

    def reload_tls(self) -> bool:
        """Read the certificate files again (a reload); False when there is no TLS. Raises
        logd.tls.TlsError when the new files are unusable (the old ones stay)."""
        return False

    def encode(self, batch: Batch) -> Any:
        """What the buffer keeps of a batch: the batch itself, or the output's own form of it
        (made on arrival, while an HTTP batch's parsed objects are at hand)."""
        return batch

    def submit(self, batch: Batch, receipt: Receipt | None = None) -> bool:
        """Called by the router for each batch; True when the caller should pause reading.
        With a receipt, the buffer reports the records accepted (or dropped) on it and the
        writer reports them delivered.

        A disk spool gets a large batch as slices of about `entry_bytes`, each an entry of its
        own, so a damaged entry loses only its slice. A memory buffer gets the batch whole."""
        buffer = self.buffer
        if buffer.persistent and batch.nbytes > buffer.entry_bytes:
            pause = False
            for piece in batch.pieces(buffer.entry_bytes):
                if buffer.put(self.encode(piece), receipt):
                    pause = True
            return pause
        return buffer.put(self.encode(batch), receipt)

    def ready(self) -> bool:
        """Whether the output can write now (a database output: connected)."""
        return True

    def problem(self) -> str | None:
        """What keeps the output from taking or writing records, for /health and logctl
        stats (None: nothing)."""
        problem = self.buffer.problem
        if problem is None and not self.ready():
            return "not connected"
        return problem

    def pending_records(self) -> int:
        """Records taken, not yet written, and not in a spool: what a stop would lose."""
        return self.buffer.volatile_records

    def give_up(self) -> None:
        """Called past the shutdown deadline, before close(): stop retrying, close promptly."""

    def stats(self) -> DestinationStats:
        b = self.buffer
        accepted = b.accepted_records
        total = accepted + b.dropped_records
        return {
            "type": self.type,
            "queued_records": b.queued_records,
            "queued_bytes": b.queued_bytes,
            "queue_limit_bytes": b.max_bytes,
            "peak_queued_bytes": b.peak_cost,
            "accepted": accepted,
            "dropped": b.dropped_records,
            "dropped_pct": 100.0 * b.dropped_records / total if total else 0.0,
            **b.stats(),
            "problem": self.problem(),
        }


class Output(Destination):
    """A destination that writes somewhere: a file, a database, Kafka."""
