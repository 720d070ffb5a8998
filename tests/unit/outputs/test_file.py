"""logd.outputs.file.FileOutput: formats, per-app paths, rotation and retention."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from logd.config import loads
from logd.outputs.file import FileOutput
from logd.record import Batch

ROTATED = re.compile(r"^(?P<base>.+)\.\d{8}-\d{6}(?:-\d+)?$")


def make_output(path: str, **extra: str) -> FileOutput:
    """A FileOutput from a whole config text, as the daemon would build it."""
    settings = "".join(f"{key} = {value}\n" for key, value in extra.items())
    text = f"""
[listeners.emitters]
type = "tcp"
address = "127.0.0.1:0"

[outputs.files]
type = "file"
path = "{path}"
flush_interval = "50ms"
buffer_size = "8KiB"
{settings}"""
    return FileOutput(loads(text).outputs["files"])


def batch(payloads: list[bytes], source: str = "emitters") -> Batch:
    return Batch(list(payloads), None, source, time.time(), sum(map(len, payloads)))


async def run_output(out: FileOutput, batches: list[Batch]) -> None:
    """start, run, submit every batch, drain, wait for run to end, close."""
    await out.start()
    runner = asyncio.create_task(out.run())
    try:
        for b in batches:
            out.submit(b)
        await out.drain(asyncio.get_running_loop().time() + 10)
        await asyncio.wait_for(runner, timeout=10)
    finally:
        runner.cancel()
        await out.close()


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


async def test_raw_format_writes_each_payload_and_lf(tmp_path: Path) -> None:
    out = make_output(f"{tmp_path}/all.log", format='"raw"')
    first = [b"one", b"two words", b""]
    second = [b"<11>syslog-ish", b"caf\xc3\xa9"]
    lines = Batch.from_lines(b"from\nlines\n", 2, "lines", time.time())
    await run_output(out, [batch(first), batch(second), lines])
    assert files_under(tmp_path) == {
        "all.log": b"one\ntwo words\n\n<11>syslog-ish\ncaf\xc3\xa9\nfrom\nlines\n"}
    assert out.records == 7
    assert out.stats()["written"] == 7


async def test_app_field_splits_records_into_per_app_files(tmp_path: Path) -> None:
    out = make_output(f"{tmp_path}/{{app}}.log")
    payloads = [b'{"app": "billing", "n": 1}', b'{"app_id": "auth", "n": 2}', b"plain 3",
                b'{"app": "billing", "n": 4}', b'{"n": 5}']
    await run_output(out, [batch(payloads), batch([b"plain 6"], source="lines")])
    assert files_under(tmp_path) == {
        "billing.log": b'{"app": "billing", "n": 1}\n{"app": "billing", "n": 4}\n',
        "auth.log": b'{"app_id": "auth", "n": 2}\n',
        "emitters.log": b'plain 3\n{"n": 5}\n',
        "lines.log": b"plain 6\n",
    }


async def test_severity_and_event_template_fields_split_records(tmp_path: Path) -> None:
    out = make_output(f"{tmp_path}/{{event}}/{{severity}}.log")
    payloads = [b'{"event": "login", "level": "error"}', b"<12>plain warn",
                b'{"event": "login"}', b'{"event": "pay", "level": "debug"}']
    await run_output(out, [batch(payloads)])
    assert files_under(tmp_path) == {
        "login/error.log": payloads[0] + b"\n",
        "default/warn.log": payloads[1] + b"\n",
        "login/info.log": payloads[2] + b"\n",
        "pay/debug.log": payloads[3] + b"\n",
    }


async def test_hostile_app_value_stays_inside_the_directory(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b" / "logs"
    out = make_output(f"{root}/{{app}}.log")
    hostile = [b'{"app": "../../etc/passwd"}', b'{"app": ".."}', b'{"app": "/abs/path"}',
               b'{"app": "x/../../y"}', b'{"app": "..\\\\..\\\\win"}']
    await run_output(out, [batch(hostile)])
    written = files_under(tmp_path)
    assert written, "nothing was written"
    for name in written:
        assert (tmp_path / name).parent == root, name
    assert sorted(b"".join(written.values()).splitlines()) == sorted(hostile)
    assert not (tmp_path / "a" / "etc").exists()


async def test_json_format_lines_carry_the_records_fields(tmp_path: Path) -> None:
    out = make_output(f"{tmp_path}/out.log", format='"json"')
    payloads = [b'{"app": "billing", "level": "ERROR", "message": "declined", "user": 7}',
                b"<12>warned", b"plain \xff bytes"]
    b = batch(payloads, source="emitters")
    await run_output(out, [b])
    lines = (tmp_path / "out.log").read_bytes().splitlines()
    records = [orjson.loads(line) for line in lines]
    assert [r["severity"] for r in records] == ["error", "warn", "info"]
    assert [r["level"] for r in records] == ["ERROR", "warn", "info"]
    assert [r["app"] for r in records] == ["billing", "emitters", "emitters"]
    assert {r["source"] for r in records} == {"emitters"}
    assert [r["message"] for r in records] == ["declined", "<12>warned", "plain \ufffd bytes"]
    assert [r.get("metadata") for r in records] == [{"user": 7}, None, None]
    stamp = datetime.fromtimestamp(b.received, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert {r["ts"] for r in records} == {stamp}
    assert [sorted(r) for r in records][1] == ["app", "level", "listener", "message",
                                               "severity", "source", "ts"]


def record_batches(count: int, per_batch: int, app: str | None = None) -> list[Batch]:
    """`count` batches of unique ~100-byte records (JSON with `app` when given)."""
    out = []
    for b in range(count):
        payloads = []
        for i in range(per_batch):
            text = f"rec-{b:04d}-{i:02d}-" + "p" * 80
            if app is None:
                payloads.append(text.encode())
            else:
                payloads.append(orjson.dumps({"app": app, "msg": text}))
        out.append(batch(payloads))
    return out


def split_rotated(root: Path, current: str) -> tuple[bytes, list[Path]]:
    """(content of the current file, rotated files of it, oldest name first)."""
    rotated = []
    for p in root.iterdir():
        m = ROTATED.match(p.name)
        if m is not None and m.group("base") == current:
            rotated.append(p)
    rotated.sort(key=lambda p: rotation_order(p.name))
    return (root / current).read_bytes() if (root / current).exists() else b"", rotated


def rotation_order(name: str) -> tuple[str, int]:
    m = re.search(r"\.(\d{8}-\d{6})(?:-(\d+))?$", name)
    assert m is not None
    return m.group(1), int(m.group(2) or 0)


async def test_size_rotation_keeps_every_record_once_and_whole(tmp_path: Path) -> None:
    out = make_output(f"{tmp_path}/app.log", rotate_bytes='"4KiB"', keep="0")
    batches = record_batches(count=60, per_batch=7)
    await run_output(out, batches)
    current, rotated = split_rotated(tmp_path, "app.log")
    assert len(rotated) >= 5
    assert out.rotations == len(rotated)
    seen: list[bytes] = []
    for content in [p.read_bytes() for p in rotated] + [current]:
        if content:
            assert content.endswith(b"\n")   # no record split across files
            seen.extend(content.splitlines())
    for p in rotated:
        assert p.stat().st_size >= 4096
    expected = [p for b in batches for p in b.payloads]
    assert sorted(seen) == sorted(expected)
    assert len(seen) == len(set(seen))


async def test_retention_keeps_at_most_keep_rotated_files(tmp_path: Path) -> None:
    out = make_output(f"{tmp_path}/app.log", rotate_bytes='"2KiB"', keep="2")
    await run_output(out, record_batches(count=40, per_batch=5))
    _, rotated = split_rotated(tmp_path, "app.log")
    assert out.rotations >= 5
    assert len(rotated) == 2
    # Besides them only the current file (absent when the last append rotated it).
    assert {p.name for p in tmp_path.iterdir() if p not in rotated} <= {"app.log"}


async def test_retention_keeps_the_newest_rotated_files(tmp_path: Path) -> None:
    # Many rotations within one wall-clock second (names then differ only in -N); a run takes
    # well under a second, so one of a few attempts has all its rotations in the same second.
    for attempt in range(5):
        root = tmp_path / str(attempt)
        started = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        out = make_output(f"{root}/app.log", rotate_bytes='"2KiB"', keep="2")
        batches = record_batches(count=40, per_batch=5)
        await run_output(out, batches)
        if time.strftime("%Y%m%d-%H%M%S", time.gmtime()) == started:
            break
    else:
        raise AssertionError("no attempt ran within a single second")
    current, rotated = split_rotated(root, "app.log")
    assert len(rotated) == 2
    kept = b"".join(p.read_bytes() for p in rotated) + current
    written = [p for b in batches for p in b.payloads]
    # Only the oldest records may be pruned away: what is left is a suffix of what was written.
    assert kept.splitlines() == written[len(written) - len(kept.splitlines()):]
    assert written[-1] in kept.splitlines()


async def test_retention_of_one_path_leaves_other_paths_rotated_files(tmp_path: Path) -> None:
    # App "a.log" writes to a.log.log; its rotated files are a.log.log.<stamp>. They are not
    # rotations of a.log and pruning a.log must not delete them.
    other = tmp_path / "a.log.log.20200101-000000"
    other.write_bytes(b"rotated earlier by app a.log\n")
    out = make_output(f"{tmp_path}/{{app}}.log", rotate_bytes='"2KiB"', keep="2")
    await run_output(out, record_batches(count=30, per_batch=5, app="a"))
    _, rotated = split_rotated(tmp_path, "a.log")
    assert len(rotated) == 2
    assert other.exists(), "pruning a.log deleted a rotated file of a.log.log"
    assert other.read_bytes() == b"rotated earlier by app a.log\n"


async def test_a_file_is_renamed_while_still_locked(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A rotation renames the file before letting go of its lock: another logd waiting for
    the path can only get the new file there, never the one being rotated away."""
    import fcntl
    import os

    from logd.outputs import file as file_module
    locked_at_rename: list[bool] = []
    real = file_module._rotate_and_prune

    def checking(path: str, keep: int) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked_at_rename.append(False)
        except BlockingIOError:
            locked_at_rename.append(True)
        finally:
            os.close(fd)
        real(path, keep)

    monkeypatch.setattr(file_module, "_rotate_and_prune", checking)
    out = make_output(f"{tmp_path}/app.log", rotate_bytes='"4KiB"', keep="0")
    batches = record_batches(count=30, per_batch=7)
    await run_output(out, batches)
    assert len(locked_at_rename) >= 3 and all(locked_at_rename), locked_at_rename
    current, rotated = split_rotated(tmp_path, "app.log")
    seen = [line for p in rotated for line in p.read_bytes().splitlines()]
    seen += current.splitlines()
    assert sorted(seen) == sorted(p for b in batches for p in b.payloads)
