"""The logd command line: config checking, exit codes, start failures."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from testkit.configs import emitter_file_config
from testkit.harness import REPO, LogdProcess


def logd(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "logd", *args], capture_output=True,
                          text=True, timeout=30, cwd=cwd)


def test_shipped_configs_are_valid() -> None:
    names = sorted(str(p.relative_to(REPO)) for p in (REPO / "etc").glob("*.toml"))
    assert {"etc/logd.toml", "etc/logd.dev.toml", "etc/agent.toml",
            "etc/aggregator.toml"} <= set(names)
    for name in names:
        result = logd("--check-config", name)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"{name}: ok"


def test_check_config_names_every_bad_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(emitter_file_config(tmp_path).replace('framing = "frames"', 'framing = "octets"')
                   + 'rotate_bytes = "12 parsecs"\nbogus = 1\n')
    result = logd("--check-config", str(bad))
    assert result.returncode == 2
    err = result.stderr
    assert f"{bad}: listeners.emitters.framing: expected one of \"frames\", \"lines\"" in err
    assert "outputs.files.rotate_bytes: expected a size" in err
    assert "outputs.files.bogus: unknown key" in err


def test_check_config_shows_a_bad_filter_with_a_caret(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(emitter_file_config(tmp_path) + '\n[routes.eu]\nto = ["files"]\n'
                   "match = 'metadata.region == \"eu\" && message =~ /(timeout/'\n")
    result = logd("--check-config", str(bad))
    assert result.returncode == 2
    assert result.stderr.splitlines()[-3:] == [
        f"{bad}: routes.eu.match: bad regex: missing ), unterminated subpattern at column 40",
        "    metadata.region == \"eu\" && message =~ /(timeout/",
        "                                           ^",
    ]


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[daemon]\nstate_dir = \n")
    result = logd("--config", str(bad))
    assert result.returncode == 2
    assert "line 2" in result.stderr


def test_missing_config_file_is_a_usage_error(tmp_path: Path) -> None:
    result = logd("--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert "cannot read config" in result.stderr


def test_port_in_use_fails_start_naming_the_listener(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = emitter_file_config(tmp_path).replace("127.0.0.1:0", f"127.0.0.1:{port}")
        (tmp_path / "logd.toml").write_text(config)
        result = logd("--config", str(tmp_path / "logd.toml"))
    assert result.returncode == 1
    assert f"listeners.emitters: cannot listen on 127.0.0.1:{port}" in result.stderr


def test_help_describes_the_command() -> None:
    result = logd("--help")
    assert result.returncode == 0
    assert "--check-config" in result.stdout and "Exit codes" in result.stdout


def test_daemon_logs_are_json_lines(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    p = LogdProcess(emitter_file_config(out), tmp_path).start()
    assert p.stop() == 0
    assert p.raw_stderr and len(p.logs) == len(p.raw_stderr)
    assert {"ts", "level", "logger", "msg"} <= set(p.logs[0])


def test_a_doubled_stop_signal_still_drains(tmp_path: Path) -> None:
    """timeout(1)+make or a supervisor can deliver one stop twice at once: still a clean stop."""
    import signal

    out = tmp_path / "out"
    out.mkdir()
    p = LogdProcess(emitter_file_config(out), tmp_path).start()
    assert p.proc is not None
    p.proc.send_signal(signal.SIGTERM)
    p.proc.send_signal(signal.SIGINT)
    assert p.proc.wait(30) == 0
    p.stop()
    assert p.entries("stopped")
