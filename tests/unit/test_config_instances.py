"""Config keys for several logd instances on one host: reuse_port, [daemon] instance and the
{instance} field."""

from __future__ import annotations

import pytest

from logd.config import ConfigError, loads


def problems_of(text: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """The problems `loads` reports for `text` read with the environment `env` (none by
    default), by key path (it must reject the text)."""
    with pytest.raises(ConfigError) as info:
        loads(text, env=env or {})
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
    cfg = loads(LISTENERS.format(extra=""), env={})
    assert {n: c.reuse_port for n, c in cfg.listeners.items()} == {
        "emitters": False, "http": False, "analyzers": False}
    cfg = loads(LISTENERS.format(extra="reuse_port = true"), env={})
    assert {n: c.reuse_port for n, c in cfg.listeners.items()} == {
        "emitters": True, "http": True, "analyzers": True}


def test_reuse_port_that_is_no_boolean_names_its_key() -> None:
    problems = problems_of(LISTENERS.format(extra='reuse_port = "yes"'))
    assert set(problems) == {f"listeners.{n}.reuse_port" for n in
                             ("emitters", "http", "analyzers")}
    assert all("expected true or false" in m for m in problems.values())


SHARED = """
[daemon]
state_dir = "/var/lib/logd/{instance}"
control_socket = "/run/logd/{instance}/control.sock"
metrics_address = "127.0.0.1:980{instance}"

[listeners.emitters]
type = "tcp"
address = "127.0.0.1:8080"
reuse_port = true

[outputs.files]
type = "file"
path = "/var/log/logd/{app}-{instance}.log"

[outputs.db]
type = "postgres"
dead_letter = "/var/lib/logd/dead-{instance}.ndjson"
buffer = { type = "disk", path = "/var/spool/logd/{instance}/db" }
"""


def test_instance_comes_from_the_environment_and_fills_every_path() -> None:
    cfg = loads(SHARED, env={"LOGD_INSTANCE": "3"})
    assert cfg.daemon.instance == "3"
    assert cfg.daemon.state_dir == "/var/lib/logd/3"
    assert cfg.daemon.control_socket == "/run/logd/3/control.sock"
    assert cfg.daemon.metrics_address == ("127.0.0.1", 9803)
    assert cfg.outputs["files"].path == "/var/log/logd/{app}-3.log"
    assert cfg.outputs["db"].dead_letter == "/var/lib/logd/dead-3.ndjson"
    assert cfg.outputs["db"].buffer.path == "/var/spool/logd/3/db"


def test_the_instance_key_wins_over_the_environment() -> None:
    text = SHARED.replace("[daemon]", '[daemon]\ninstance = "7"')
    cfg = loads(text, env={"LOGD_INSTANCE": "3"})
    assert cfg.daemon.instance == "7"
    assert cfg.daemon.state_dir == "/var/lib/logd/7"
    assert cfg.outputs["files"].path == "/var/log/logd/{app}-7.log"


def test_without_instance_nothing_changes_and_the_name_is_empty() -> None:
    cfg = loads(LISTENERS.format(extra=""), env={})
    assert cfg.daemon.instance == ""
    assert cfg.daemon.state_dir == "/var/lib/logd"
    assert cfg.daemon.control_socket == "/run/logd/control.sock"


def test_instance_used_but_not_set_names_every_key_that_uses_it() -> None:
    problems = problems_of(SHARED)
    assert set(problems) == {"daemon.state_dir", "daemon.control_socket",
                             "daemon.metrics_address", "outputs.files.path",
                             "outputs.db.dead_letter", "outputs.db.buffer.path"}
    for message in problems.values():
        assert message == ("uses {instance}, but no instance is set: set [daemon] instance "
                           "or the environment variable LOGD_INSTANCE")


@pytest.mark.parametrize("name", ["a/b", "..", ".hidden", "x y", "{app}", "é", "a" * 65, 3])
def test_a_bad_instance_name_is_named_once(name: object) -> None:
    value = f'"{name}"' if isinstance(name, str) else str(name)
    problems = problems_of(SHARED.replace("[daemon]", f"[daemon]\ninstance = {value}"))
    # The keys that use it are not reported again on its account.
    assert list(problems) == ["daemon.instance"]
    expected = "expected a string" if not isinstance(name, str) else "expected a name"
    assert expected in problems["daemon.instance"]


def test_a_bad_instance_name_from_the_environment_says_where_it_came_from() -> None:
    problems = problems_of(SHARED, env={"LOGD_INSTANCE": "../etc"})
    assert list(problems) == ["daemon.instance"]
    assert problems["daemon.instance"].startswith("from $LOGD_INSTANCE: expected a name")


def test_instance_names_that_are_fine() -> None:
    text = SHARED.replace('metrics_address = "127.0.0.1:980{instance}"', "")
    for name in ("1", "eu-west_2", "a.b", "x@y+z", "A" * 64):
        cfg = loads(text, env={"LOGD_INSTANCE": name})
        assert cfg.daemon.instance == name
        assert cfg.daemon.state_dir == f"/var/lib/logd/{name}"


def test_a_metrics_address_that_is_none_once_filled_shows_what_it_became() -> None:
    problems = problems_of(SHARED, env={"LOGD_INSTANCE": "a"})
    assert list(problems) == ["daemon.metrics_address"]
    assert "'127.0.0.1:980a'" in problems["daemon.metrics_address"]


def test_in_a_file_path_only_the_field_is_replaced() -> None:
    text = LISTENERS.format(extra="") + """
[outputs.files]
type = "file"
path = "/var/log/{{instance}}/{instance}/{date}/{app}.log"
"""
    cfg = loads(text, env={"LOGD_INSTANCE": "b"})
    path = cfg.outputs["files"].path
    assert path == "/var/log/{{instance}}/b/{date}/{app}.log"
    assert path.format(date="d", app="a") == "/var/log/{instance}/b/d/a.log"


@pytest.mark.parametrize("field", ["{instance:>3}", "{instance!r}"])
def test_a_formatted_instance_field_is_refused(field: str) -> None:
    text = LISTENERS.format(extra="") + f"""
[outputs.files]
type = "file"
path = "/var/log/{field}.log"
"""
    problems = problems_of(text, env={"LOGD_INSTANCE": "b"})
    assert list(problems) == ["outputs.files.path"]
    assert problems["outputs.files.path"] == (
        f"template field {field} has a format; expected a plain {{instance}}")


def test_an_unknown_path_field_lists_instance_among_those_expected() -> None:
    text = LISTENERS.format(extra="") + """
[outputs.files]
type = "file"
path = "/var/log/{pid}.log"
"""
    problems = problems_of(text, env={"LOGD_INSTANCE": "b"})
    assert "{instance}" in problems["outputs.files.path"]
