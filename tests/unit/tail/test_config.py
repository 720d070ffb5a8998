"""The tail listener's config: defaults, and errors that name the key."""

from __future__ import annotations

import re

import pytest

from logd.config import ConfigError, loads

BASE = """
[outputs.files]
type = "file"
path = "/tmp/x/{app}.log"

[listeners.app_files]
type = "tail"
"""


def problems(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        loads(BASE + text)
    return info.value.render()


def test_the_issue_example_loads_with_its_values() -> None:
    cfg = loads(BASE + """paths = ["/var/log/app/*.log"]
exclude = ["*.gz"]
start = "beginning"
format = "lines"
multiline = { start = '^\\S', max_lines = 500, timeout = "1s" }
""")
    tail = cfg.listeners["app_files"]
    assert tail.paths == ("/var/log/app/*.log",) and tail.exclude == ("*.gz",)
    assert tail.multiline.start == r"^\S" and tail.multiline.timeout == 1.0
    assert tail.max_open_files == 1024 and tail.max_line_bytes == 1024**2


def test_paths_are_required() -> None:
    assert "listeners.app_files.paths: is required" in problems("")


def test_a_bad_multiline_start_names_its_key() -> None:
    text = problems('paths = ["/x"]\nmultiline = { start = "(unclosed" }\n')
    assert "listeners.app_files.multiline.start: not a regular expression" in text


def test_multiline_is_for_lines_only() -> None:
    text = problems('paths = ["/x"]\nformat = "cri"\nmultiline = { start = "^x" }\n')
    assert 'listeners.app_files.multiline: only with format = "lines"' in text


def test_an_unknown_format_names_the_choices() -> None:
    text = problems('paths = ["/x"]\nformat = "syslog"\n')
    assert 'listeners.app_files.format: expected one of "lines", "cri", "docker"' in text


def test_pod_and_namespace_are_file_path_fields() -> None:
    cfg = loads(BASE.replace("{app}.log", "{namespace}/{pod}.log") + 'paths = ["/x"]\n')
    assert cfg.outputs["files"].path == "/tmp/x/{namespace}/{pod}.log"


def test_the_commented_examples_in_etc_logd_toml_load() -> None:
    from testkit.harness import REPO
    text = (REPO / "etc" / "logd.toml").read_text()
    start = text.index("# [listeners.app_files]")
    block = text[start:text.index("# -- outputs", start)]
    setting = re.compile(r"# (\[listeners\.\w+\]|\w+ = .*)$")
    uncommented = "\n".join(m[1] for x in block.splitlines() if (m := setting.match(x)))
    cfg = loads(BASE.replace("[listeners.app_files]\ntype = \"tail\"\n", "") + uncommented)
    assert cfg.listeners["app_files"].multiline.max_lines == 500
    assert cfg.listeners["containers"].format == "cri"
