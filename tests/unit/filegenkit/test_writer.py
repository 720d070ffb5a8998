"""filegen: numbered lines, and rotation by rename and by copytruncate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from filegenkit.writer import LogFileWriter, line, line_number
from testkit.harness import TOOLS


def numbers_in(path: Path) -> list[int]:
    return [line_number(x) for x in path.read_bytes().split(b"\n")[:-1]]


def test_lines_are_numbered_and_sized() -> None:
    assert line(7, 20) == b"000000000007 xxxxxxx\n"
    assert line_number(line(123456, 64)) == 123456


def test_rename_rotation_moves_the_file_and_keeps_what_it_is_told(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    w = LogFileWriter(str(path), size=30, rotation="rename", rotate_lines=10, keep=2)
    w.write(35)
    w.close()
    assert w.rotations == 3
    assert numbers_in(path) == list(range(30, 35))
    assert numbers_in(tmp_path / "app.log.1") == list(range(20, 30))
    assert numbers_in(tmp_path / "app.log.2") == list(range(10, 20))
    assert not (tmp_path / "app.log.3").exists()


def test_copytruncate_copies_then_cuts_the_same_file(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    w = LogFileWriter(str(path), size=30, rotation="copytruncate", rotate_lines=10)
    inode = path.stat().st_ino
    w.write(15)
    w.close()
    assert path.stat().st_ino == inode
    assert numbers_in(path) == list(range(10, 15))
    assert numbers_in(tmp_path / "app.log.1") == list(range(10))


def test_the_command_line_writes_a_count_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    out = subprocess.run([sys.executable, str(TOOLS / "filegen"), "--path", str(path),
                          "--rate", "0", "--count", "1000", "--size", "50", "--json"],
                         capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout)["lines"] == 1000
    assert numbers_in(path) == list(range(1000))
