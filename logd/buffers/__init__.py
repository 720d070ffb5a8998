"""Bounded buffers between the router and an output's writer."""

from __future__ import annotations

from logd.buffers.memory import Lease, MemoryBuffer
from logd.config import BufferConfig


def make_buffer(cfg: BufferConfig, owner: str) -> MemoryBuffer:
    """The buffer an output's config asks for (only "memory" so far; the config says which)."""
    return MemoryBuffer(cfg, owner)


__all__ = ["Lease", "MemoryBuffer", "make_buffer"]
