"""benchkit.peers.logd: the config logd runs with in each scenario is one logd accepts,
routing exactly the scenario's filter to one raw file."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchkit.peers.logd import render
from benchkit.scenarios import SCENARIOS
from logd.config import load


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_logd_accepts_the_config_of_every_scenario(name: str, tmp_path: Path) -> None:
    scenario = SCENARIOS[name]
    path = tmp_path / "logd.toml"
    path.write_text(render(tmp_path, scenario))
    cfg = load(path, env={})
    output = cfg.outputs["files"]
    assert output.path == f"{tmp_path}/out/bench.log" and output.format == "raw"
    assert output.fdatasync == "never" and output.buffer.max_bytes == 64 << 20
    assert cfg.routes["kept"].match == scenario.logd_match
