"""Checkpoints: written atomically, read back, a damaged one set aside."""

from __future__ import annotations

from pathlib import Path

from logd.tail.checkpoints import Checkpoint, CheckpointStore
from logd.tail.identity import FileId, Fingerprint, take


def test_checkpoints_round_trip_and_leave_no_temp_file(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path / "tail" / "in.json"))
    cps = {FileId(1, 2): Checkpoint("/a.log", 123, Fingerprint(10, "abcd"))}
    store.save(cps)
    assert CheckpointStore(store.path).load() == cps
    assert sorted(p.name for p in (tmp_path / "tail").iterdir()) == ["in.json"]


def test_a_damaged_checkpoint_is_set_aside_and_reads_as_none(tmp_path: Path) -> None:
    path = tmp_path / "in.json"
    path.write_bytes(b'{"version": 1, "files": {"1:2": {"path": "/a"')
    assert CheckpointStore(str(path)).load() == {}
    assert (tmp_path / "in.json.damaged").exists() and not path.exists()


def test_a_fingerprint_matches_the_file_it_was_taken_of_as_it_grows(tmp_path: Path) -> None:
    import os
    path = tmp_path / "f.log"
    path.write_bytes(b"first bytes\n")
    fd = os.open(path, os.O_RDONLY)
    try:
        fp = take(fd)
        with open(path, "ab") as f:
            f.write(b"more\n")
        assert fp.matches(fd)
        path.write_bytes(b"other bytes\n")  # the same inode, other content
        assert not fp.matches(fd)
    finally:
        os.close(fd)
