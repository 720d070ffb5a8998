"""The syslog listener's config: defaults, and errors that name the key."""

from __future__ import annotations

import pytest

from logd.config import ConfigError, loads


def listener(extra: str) -> str:
    return f'[listeners.s]\ntype = "syslog"\naddress = "127.0.0.1:0"\n{extra}\n'


def test_defaults() -> None:
    cfg = loads(listener("")).listeners["s"]
    assert (cfg.transport, cfg.max_message_bytes, cfg.tls) == ("tcp", 65536, None)


@pytest.mark.parametrize("extra, expected", [
    ('transport = "sctp"', 'listeners.s.transport: expected one of "tcp", "udp"'),
    ('transport = "udp"\ntls = { cert = "c", key = "k" }',
     'listeners.s.tls: TLS needs transport = "tcp"'),
    ('max_message_bytes = "1MiB"\nmax_pending_bytes = "1MiB"',
     "listeners.s.max_pending_bytes: must be at least max_message_bytes + 12"),
    ('framing = "lines"', "listeners.s.framing: unknown key")])
def test_bad_values_name_their_key(extra: str, expected: str) -> None:
    with pytest.raises(ConfigError) as e:
        loads(listener(extra))
    assert expected in str(e.value)
