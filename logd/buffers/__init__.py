"""Bounded buffers between the router and an output's writer: in memory, or a disk spool."""

from __future__ import annotations

from logd.buffers.base import Buffer
from logd.buffers.disk import DiskBuffer, SpoolError
from logd.buffers.memory import Lease, MemoryBuffer
from logd.config import BufferConfig, MemoryBufferConfig


def make_buffer(cfg: BufferConfig | MemoryBufferConfig, owner: str) -> Buffer:
    """The buffer an output's config asks for; a disk buffer is opened by `open_buffer`."""
    if cfg.type == "disk":
        assert isinstance(cfg, BufferConfig)
        return DiskBuffer(cfg, owner)
    return MemoryBuffer(cfg, owner)


__all__ = ["Buffer", "DiskBuffer", "Lease", "MemoryBuffer", "SpoolError", "make_buffer"]
