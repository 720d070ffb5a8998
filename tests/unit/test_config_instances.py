"""Config keys for several logd instances on one host: reuse_port, [daemon] instance and the
{instance} field."""

from __future__ import annotations

import pytest

from logd.config import ConfigError, loads


def problems_of(text: str) -> dict[str, str]:
    """The problems `loads` reports for `text`, by key path (it must reject the text)."""
    with pytest.raises(ConfigError) as info:
        loads(text)
    return dict(info.value.problems)


LISTENERS = """
[listeners.emitters]
type = "tcp"
address = "127.0.0.1:0"
{extra}

[listeners.http]
type = "http"
address = "127.0.0.1:0"
{extra}

[listeners.analyzers]
type = "analyzer"
address = "127.0.0.1:0"
{extra}
"""


def test_reuse_port_is_off_unless_set_on_each_listener_type() -> None:
    cfg = loads(LISTENERS.format(extra=""))
    assert {n: c.reuse_port for n, c in cfg.listeners.items()} == {
        "emitters": False, "http": False, "analyzers": False}
    cfg = loads(LISTENERS.format(extra="reuse_port = true"))
    assert {n: c.reuse_port for n, c in cfg.listeners.items()} == {
        "emitters": True, "http": True, "analyzers": True}


def test_reuse_port_that_is_no_boolean_names_its_key() -> None:
    problems = problems_of(LISTENERS.format(extra='reuse_port = "yes"'))
    assert set(problems) == {f"listeners.{n}.reuse_port" for n in
                             ("emitters", "http", "analyzers")}
    assert all("expected true or false" in m for m in problems.values())
