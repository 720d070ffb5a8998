"""benchkit.compare's command line: what it refuses, and a missing peer said in one line."""

from __future__ import annotations

import pytest

from benchkit import compare
from benchkit.peers import rsyslog


def test_an_unknown_scenario_is_a_usage_error_naming_the_known_ones(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        compare.main(["--scenarios", "basic,nope"])
    assert exc.value.code == 2
    assert "unknown scenario 'nope' (known: basic, error_filter" in capsys.readouterr().err


def test_an_unknown_peer_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        compare.main(["--peers", "syslog-ng"])
    assert "unknown peer 'syslog-ng' (known: logd, rsyslog)" in capsys.readouterr().err


def test_a_missing_rsyslogd_is_one_line_naming_the_package_and_the_command(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(rsyslog, "rsyslogd_path", lambda: None)
    assert compare.main(["--scenarios", "basic", "--duration", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["bench compare: rsyslogd not found: install Debian's rsyslog package with "
                   "`make bench-deps` (apt-get install rsyslog)"]
