"""logd.outputs.direct: aligned (O_DIRECT) appends give byte-exact files after every flush."""

from __future__ import annotations

import asyncio
import errno
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from logd.outputs.direct import DirectFile, DirectIO, FileBusy

BUFFER = 8192


@pytest.fixture(params=[True, False], ids=["direct", "buffered"])
async def io(request: pytest.FixtureRequest) -> AsyncIterator[DirectIO]:
    dio = DirectIO(buffer_size=BUFFER, shards=2, direct=request.param, sync_on_flush=False,
                   file_mode=0o644)
    try:
        yield dio
    finally:
        dio.shutdown()


def random_pieces(rng: random.Random, total: int) -> list[bytes]:
    """Pieces of 1..5000 bytes, distinct content, adding up to at least `total` bytes."""
    pieces, n = [], 0
    while n < total:
        size = rng.randint(1, 5000)
        piece = rng.randbytes(size)
        pieces.append(piece)
        n += size
    return pieces


async def open_file(path: Path, io: DirectIO) -> DirectFile:
    f = DirectFile(str(path), io)
    await f.open()
    assert f.direct == io.direct   # ext4 takes O_DIRECT: the direct path really is exercised
    return f


async def test_content_is_exact_after_every_flush(tmp_path: Path, io: DirectIO) -> None:
    rng = random.Random(11)
    path = tmp_path / "out.log"
    f = await open_file(path, io)
    expected = bytearray()
    for _ in range(12):
        pieces = random_pieces(rng, rng.randint(1, 4 * BUFFER))
        await f.append(pieces)
        expected += b"".join(pieces)
        assert f.size == len(expected)
        await f.flush()
        assert path.read_bytes() == expected
    await f.close()
    assert path.read_bytes() == expected
    assert len(expected) > 4 * BUFFER
    assert io.stats.flushes > 0
    assert io.stats.swaps > 0
    assert io.stats.errors == 0


async def test_single_large_append_and_tiny_appends_stay_exact(tmp_path: Path,
                                                              io: DirectIO) -> None:
    rng = random.Random(12)
    path = tmp_path / "big.log"
    f = await open_file(path, io)
    big = rng.randbytes(5 * BUFFER + 123)          # spans several buffer hand-offs at once
    await f.append([big])
    await f.flush()
    assert path.read_bytes() == big
    expected = bytearray(big)
    for i in range(300):                           # one byte at a time across block edges
        piece = bytes([i % 251])
        await f.append([piece, b""])
        expected += piece
        if i % 37 == 0:
            await f.flush()
            assert path.read_bytes() == expected
    await f.close()
    assert path.read_bytes() == expected


async def test_flush_of_whole_blocks_then_more_appends(tmp_path: Path, io: DirectIO) -> None:
    path = tmp_path / "aligned.log"
    f = await open_file(path, io)
    expected = bytearray()
    for size in (4096, 4096, 1, 4095, 8192, 4097):
        piece = os.urandom(size)
        await f.append([piece])
        expected += piece
        await f.flush()
        assert path.read_bytes() == expected
    await f.close()
    assert path.read_bytes() == expected


async def test_reopen_appends_after_existing_bytes(tmp_path: Path, io: DirectIO) -> None:
    rng = random.Random(13)
    path = tmp_path / "reopen.log"
    expected = bytearray()
    for round_ in range(5):
        f = await open_file(path, io)
        assert f.size == len(expected)
        # Records end with LF: a file that does not is cut back at open (a torn record).
        pieces = [*random_pieces(rng, rng.randint(1, 3 * BUFFER)), b"\n"]
        await f.append(pieces)
        expected += b"".join(pieces)
        if round_ % 2:
            await f.flush()
        await f.close()
        assert path.read_bytes() == expected, round_
    assert len(expected) % 4096 != 0


async def test_reopen_of_file_written_elsewhere_keeps_its_tail(tmp_path: Path,
                                                               io: DirectIO) -> None:
    path = tmp_path / "existing.log"
    prefix = b"written by someone else\n" * 300     # 7200 bytes: a partial second block
    path.write_bytes(prefix)
    f = await open_file(path, io)
    await f.append([b"ours\n"] * 2000)
    await f.close()
    assert path.read_bytes() == prefix + b"ours\n" * 2000


async def test_new_file_gets_file_mode_and_parent_directories(tmp_path: Path,
                                                               io: DirectIO) -> None:
    path = tmp_path / "a" / "b" / "new.log"
    old = os.umask(0o022)
    try:
        f = await open_file(path, io)
    finally:
        os.umask(old)
    await f.append([b"x\n"])
    await f.close()
    assert path.read_bytes() == b"x\n"
    assert path.stat().st_mode & 0o777 == 0o644


async def test_close_is_idempotent(tmp_path: Path, io: DirectIO) -> None:
    path = tmp_path / "twice.log"
    f = await open_file(path, io)
    await f.append([b"abc"])
    await f.close()
    await f.close()
    assert f.fd == -1
    assert path.read_bytes() == b"abc"


@pytest.mark.parametrize(("left", "kept"), [
    (b"one\ntwo\nthr", b"one\ntwo\n"),                      # torn mid-record
    (b"x" * 8192 + b"\n" + b"y" * 70000, b"x" * 8192 + b"\n"),  # LF far behind the end
    (b"no newline at all", b""),                            # one torn record only
    (b"whole\n", b"whole\n"),                               # nothing torn
])
async def test_a_torn_last_record_is_cut_back_before_appending(tmp_path: Path, io: DirectIO,
                                                               left: bytes,
                                                               kept: bytes) -> None:
    path = tmp_path / "out.log"
    path.write_bytes(left)
    f = await open_file(path, io)
    await f.append([b"next\n"])
    await f.close()
    assert path.read_bytes() == kept + b"next\n"
    torn = left != kept
    assert (io.stats.torn_records, io.stats.torn_bytes) == (int(torn), len(left) - len(kept))


async def test_a_file_has_one_writer_a_second_open_is_refused_naming_the_holder(
        tmp_path: Path, io: DirectIO) -> None:
    path = tmp_path / "shared.log"
    first = await open_file(path, io)
    await first.append([b"first 1\nfirst 2 (an unaligned tail, not yet on disk"])
    await first.flush()
    second = DirectFile(str(path), io)
    with pytest.raises(FileBusy) as refused:
        await second.open()
    assert refused.value.holder == os.getpid()
    assert f"written by another process (pid {os.getpid()})" in str(refused.value)
    # The refused open cut nothing: the first writer's torn-looking tail is still there.
    assert path.read_bytes().endswith(b"not yet on disk")
    await first.append([b")\n"])
    await first.close()
    second = await open_file(path, io)  # free again once the first has closed it
    await second.close()
    assert path.read_bytes() == b"first 1\nfirst 2 (an unaligned tail, not yet on disk)\n"


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_an_open_that_fails_after_locking_lets_go_of_the_file(
        tmp_path: Path, io: DirectIO, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure between the lock and the end of the open (here a read error on a file
    ending inside a record) closes both descriptors: the file is not left held by us."""
    from logd.outputs import direct
    path = tmp_path / "torn.log"
    path.write_bytes(b"whole\ntorn")

    def failing(path: str, size: int) -> int:
        raise OSError(errno.EIO, "Input/output error", path)

    before = open_descriptors()
    monkeypatch.setattr(direct, "_end_of_last_record", failing)
    with pytest.raises(OSError) as failed:
        await DirectFile(str(path), io).open()
    assert not isinstance(failed.value, FileBusy) and failed.value.errno == errno.EIO
    assert open_descriptors() == before
    monkeypatch.undo()
    f = await open_file(path, io)  # not FileBusy: nothing of ours holds it
    await f.close()
    assert path.read_bytes() == b"whole\n"


def test_a_file_renamed_between_open_and_lock_is_opened_again(tmp_path: Path) -> None:
    from logd.outputs.direct import _lock
    path = tmp_path / "out.log"
    path.write_bytes(b"old\n")
    fd = os.open(path, os.O_WRONLY)
    try:
        path.rename(tmp_path / "out.log.20261202-000000")  # a rotation, between the two
        path.write_bytes(b"")
        with pytest.raises(OSError) as again:
            _lock(fd, str(path))
        assert again.value.errno == errno.EAGAIN and "opening again" in str(again.value)
    finally:
        os.close(fd)


async def test_a_cancelled_open_closes_what_its_thread_opened(tmp_path: Path,
                                                              io: DirectIO) -> None:
    """A reload or a stop cancels an open that is still in its thread: the descriptors it
    opens, and the lock, are closed when the thread ends, not left open for good."""
    import threading

    from logd.outputs import direct
    path = tmp_path / "slow.log"
    started, release = threading.Event(), threading.Event()
    real = direct._open

    def slow(*args: object) -> tuple[int, int, bool, int, bytes, int, int]:
        started.set()
        release.wait(10)
        return real(*args)  # type: ignore[arg-type]

    ended = threading.Event()
    real_run = direct._Handoff.run

    def run(self: direct._Handoff, *args: object) -> object:
        try:
            return real_run(self, *args)  # type: ignore[arg-type]
        finally:
            ended.set()

    before = open_descriptors()
    direct._open = slow  # type: ignore[assignment]
    direct._Handoff.run = run  # type: ignore[assignment,method-assign]
    try:
        task = asyncio.ensure_future(DirectFile(str(path), io).open())
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        assert await asyncio.get_running_loop().run_in_executor(None, ended.wait, 10)
    finally:
        direct._open = real  # type: ignore[assignment]
        direct._Handoff.run = real_run  # type: ignore[method-assign]
        release.set()
    assert open_descriptors() == before
    f = await open_file(path, io)  # free: the cancelled open let go of it
    await f.close()
