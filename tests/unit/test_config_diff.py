"""logd.config_diff: what a reload changes, decided without starting anything."""

from __future__ import annotations

from logd.config import loads
from logd.config_diff import diff

BASE = """
[daemon]
state_dir = "/tmp/a"
log_level = "info"

[listeners.tcp]
type = "tcp"
address = "127.0.0.1:0"

[listeners.pool]
type = "analyzer"
address = "127.0.0.1:0"

[outputs.files]
type = "file"
path = "/tmp/{app}.log"

[outputs.gone]
type = "file"
path = "/tmp/gone.log"
"""


def test_nothing_changed_is_an_empty_diff() -> None:
    d = diff(loads(BASE), loads(BASE))
    assert d.applicable and not (d.outputs_added or d.outputs_removed or d.outputs_changed
                                 or d.listeners_added or d.listeners_removed
                                 or d.listeners_changed or d.routes_changed or d.restart_keys)
    assert d.listeners_kept == ("tcp", "pool") and d.log_level is None


def test_outputs_listeners_routes_and_daemon_keys_are_told_apart() -> None:
    new = BASE.replace('path = "/tmp/gone.log"\n', 'path = "/tmp/gone.log"\n[routes.r]\n'
                       'to = ["files"]\n').replace('[outputs.gone]', '[outputs.new]')
    new = new.replace('path = "/tmp/{app}.log"', 'path = "/tmp/{app}-{date}.log"')
    new = new.replace('state_dir = "/tmp/a"', 'state_dir = "/tmp/b"')
    new = new.replace('log_level = "info"', 'log_level = "debug"')
    new += '\n[listeners.http]\ntype = "http"\naddress = "127.0.0.1:0"\n'
    new = new.replace('[listeners.tcp]\ntype = "tcp"\naddress = "127.0.0.1:0"',
                      '[listeners.tcp]\ntype = "tcp"\naddress = "127.0.0.1:0"\n'
                      'framing = "lines"')
    d = diff(loads(BASE), loads(new))
    assert d.applicable
    assert (d.outputs_added, d.outputs_removed, d.outputs_changed) == (("new",), ("gone",),
                                                                       ("files",))
    assert (d.listeners_added, d.listeners_changed, d.listeners_kept) == (("http",), ("tcp",),
                                                                          ("pool",))
    assert d.routes_changed and d.log_level == "debug" and d.restart_keys == ("state_dir",)


def test_analyzer_pools_and_the_instance_change_only_with_a_restart() -> None:
    moved = BASE.replace('[listeners.pool]\ntype = "analyzer"\naddress = "127.0.0.1:0"',
                         '[listeners.pool]\ntype = "analyzer"\naddress = "127.0.0.1:1"')
    d = diff(loads(BASE), loads(moved))
    assert not d.applicable and "analyzer listeners change only with a restart: pool" in \
        d.refused[0]
    renamed = BASE.replace('log_level = "info"', 'log_level = "info"\ninstance = "two"')
    d = diff(loads(BASE), loads(renamed))
    assert not d.applicable and d.refused[0].startswith("daemon.instance changes only")
