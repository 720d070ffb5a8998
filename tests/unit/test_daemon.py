"""The topology's supervision of run tasks: restarts re-read a spool; cancellation is
obeyed."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from logd.buffers.disk import DiskBuffer
from logd.config import BufferConfig
from logd.outputs.base import Output
from logd.record import Batch
from logd.topology import Topology

pytestmark = pytest.mark.timeout(30)


class Writer(Output):
    """Takes a lease and crashes on its first run; writes everything on the next."""

    def __init__(self, buffer: DiskBuffer) -> None:
        super().__init__("out", "test", buffer.cfg)
        self.buffer = buffer
        self.runs = 0
        self.written: list[bytes] = []

    async def run(self) -> None:
        self.runs += 1
        if self.runs == 1:
            await self.buffer.get(1, timeout=1)
            raise RuntimeError("bug")
        while not self.buffer.empty():
            lease = await self.buffer.get(1 << 20, timeout=1)
            assert lease is not None
            for b in lease.batches:
                self.written.extend(b.payloads)
            self.buffer.ack(lease)


async def test_a_crashed_writer_reads_again_what_it_held(tmp_path: Path) -> None:
    buf = DiskBuffer(BufferConfig(type="disk", fsync_interval=0.0), "out")
    buf.open(str(tmp_path))
    for tag in (b"a", b"b"):
        buf.put(Batch([tag], None, "e", 0.0, 1))
    writer = Writer(buf)
    await Topology._supervise(None, writer, None)  # type: ignore[arg-type]
    assert writer.runs == 2 and writer.written == [b"a", b"b"]
    assert buf.queued_records == 0
    buf.release()
    again = DiskBuffer(BufferConfig(type="disk", fsync_interval=0.0), "out")
    again.open(str(tmp_path))
    assert again.queued_records == 0, "the ack file moved on"
    again.release()


async def test_a_replacement_waiting_for_its_predecessor_can_be_cancelled() -> None:
    forever: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    predecessor = asyncio.ensure_future(forever)

    class Never:
        name = "new"
        buffer = None

        async def run(self) -> None:
            raise AssertionError("must not start")

    waiting = asyncio.ensure_future(Topology._supervise(None, Never(), predecessor))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)  # it reaches its wait for the predecessor: nothing signals that
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiting, 5)
    predecessor.cancel()
