"""What the component tests share."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """A folder for what the test's logd writes."""
    d = tmp_path / "out"
    d.mkdir()
    return d
