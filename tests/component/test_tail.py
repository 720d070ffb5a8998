"""Files on disk -> the tail listener -> a file output, with logd in the test's event loop.

Writers (tools/filegenkit) run in threads; logd's loop is the test's. Every line written is
numbered, so each test counts what arrived, how often. The kill -9 test needs a process of
its own: tests/e2e/test_tail.py.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from filegenkit.writer import LogFileWriter, line, line_number
from testkit.analyzer_client import TestAnalyzer
from testkit.configs import tail_file_config
from testkit.inprocess import RunningDaemon, run_daemon


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    return d


async def wait_until(cond: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Poll until `cond` holds (files and counters have no event to await)."""
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"timed out waiting until {what}"
        await asyncio.sleep(0.02)


def tail_stats(d: RunningDaemon) -> dict[str, Any]:
    return d.stats()["listeners"]["files_in"]


def output_lines(out: Path, name: str = "tailed.log") -> list[bytes]:
    path = out / name
    if not path.exists():
        return []
    data = path.read_bytes()
    return data.split(b"\n")[:-1]


def numbers(lines: list[bytes]) -> Counter[int]:
    return Counter(line_number(x) for x in lines)


def assert_exactly_once(lines: list[bytes], total: int) -> None:
    seen = numbers(lines)
    missing = [n for n in range(total) if n not in seen]
    twice = {n: c for n, c in seen.items() if c > 1}
    print(f"lines: {total} written, {len(lines)} arrived, {len(missing)} missing, "
          f"{len(twice)} more than once")
    assert not missing, f"{len(missing)} lines missing, first {missing[:5]}"
    assert not twice, f"{len(twice)} lines arrived more than once"
    assert len(lines) == total


async def all_arrived(out: Path, total: int, timeout: float = 60) -> None:
    await wait_until(lambda: len(output_lines(out)) >= total,
                     f"{total} lines are in the output", timeout)


async def test_lines_arrive_byte_exact_and_a_partial_line_waits_for_its_lf(
        tmp_path: Path, src: Path, out: Path) -> None:
    w = LogFileWriter(str(src / "app.log"), size=100)
    w.write(5000)
    w.write_raw(b"00000000500")  # the start of a line whose end is not written yet
    async with run_daemon(tail_file_config(out, [f"{src}/*.log"]), tmp_path) as d:
        await all_arrived(out, 5000)
        await asyncio.sleep(0.3)  # several polls: the partial line must stay held
        assert len(output_lines(out)) == 5000
        w.write_raw(b"0 rest of it\n")
        await all_arrived(out, 5001)
        assert await d.stop() == 0
    w.close()
    data = (out / "tailed.log").read_bytes()
    expected = b"".join(line(n, 100) for n in range(5000)) + b"000000005000 rest of it\n"
    assert data == expected


async def test_rename_rotation_under_load_loses_and_repeats_nothing(
        tmp_path: Path, src: Path, out: Path) -> None:
    total = 300_000
    async with run_daemon(tail_file_config(out, [f"{src}/app.log"]), tmp_path) as d:
        w = LogFileWriter(str(src / "app.log"), size=120, rotation="rename",
                          rotate_lines=25_000)

        def write_all() -> None:
            for _ in range(total // 1000):
                w.write(1000)
        await asyncio.to_thread(write_all)
        w.close()
        await all_arrived(out, total)
        await wait_until(lambda: tail_stats(d)["files"] == 1, "rotated files are closed")
        assert await d.stop() == 0
    assert w.rotations == 11
    assert_exactly_once(output_lines(out), total)
    stats = d.listener_stats("files_in")
    assert stats["rotations"] == 11 and stats["truncations"] == 0


async def test_copytruncate_under_load_reads_the_new_content_from_0(
        tmp_path: Path, src: Path, out: Path) -> None:
    # logrotate's copytruncate loses what is written between a reader's last read and the
    # truncation (it is in the copy, which is not followed): the writer rotates when logd
    # has read all, then writes on at once, as logrotate running between two writes.
    total = 100_000
    async with run_daemon(tail_file_config(out, [f"{src}/app.log"]), tmp_path) as d:
        w = LogFileWriter(str(src / "app.log"), size=120, rotation="copytruncate",
                          rotate_lines=0)
        for rotation in range(5):
            await asyncio.to_thread(w.write, total // 5)
            written = w.written
            await wait_until(lambda: tail_stats(d)["records"] == written,  # noqa: B023
                             "logd read what was written")
            if rotation < 4:
                await asyncio.to_thread(w.rotate)
        w.close()
        await all_arrived(out, total)
        assert await d.stop() == 0
    assert_exactly_once(output_lines(out), total)
    assert d.listener_stats("files_in")["truncations"] == 4


async def test_a_restart_between_rotations_reads_the_rotated_file_to_its_end(
        tmp_path: Path, src: Path, out: Path) -> None:
    config = tail_file_config(out, [f"{src}/app.log"])
    w = LogFileWriter(str(src / "app.log"), size=80, rotation="rename", rotate_lines=10**9)
    w.write(1000)
    async with run_daemon(config, tmp_path) as d:
        await all_arrived(out, 1000)
        assert await d.stop() == 0
    # While logd is stopped: more lines, a rotation, lines in the new file, another one.
    w.write(500)
    w.rotate()
    w.write(700)
    w.rotate()
    w.write(300)
    w.close()
    async with run_daemon(config, tmp_path) as d:
        await all_arrived(out, 2500)
        await asyncio.sleep(0.3)  # a few polls more: nothing read twice arrives late
        assert await d.stop() == 0
    assert_exactly_once(output_lines(out), 2500)


async def test_clean_restarts_while_writing_deliver_every_line_once(
        tmp_path: Path, src: Path, out: Path) -> None:
    config = tail_file_config(out, [f"{src}/app.log"])
    w = LogFileWriter(str(src / "app.log"), size=100, rotation="rename", rotate_lines=7_000)
    stop = False

    def write_steadily() -> None:
        while not stop:
            w.write(500)
            time.sleep(0.005)
    writer = asyncio.ensure_future(asyncio.to_thread(write_steadily))
    try:
        for _ in range(4):
            async with run_daemon(config, tmp_path) as d:
                await wait_until(lambda: tail_stats(d)["records"] > 5000,
                                 "logd read some lines")
                assert await d.stop() == 0
    finally:
        stop = True
        await writer
    w.close()
    async with run_daemon(config, tmp_path) as d:
        await all_arrived(out, w.written)
        await asyncio.sleep(0.3)
        assert await d.stop() == 0
    print(f"{w.rotations} rotations")
    assert w.rotations >= 2
    assert_exactly_once(output_lines(out), w.written)


async def test_a_file_deleted_while_read_is_read_to_its_end_then_closed(
        tmp_path: Path, src: Path, out: Path) -> None:
    w = LogFileWriter(str(src / "app.log"), size=100)
    w.write(2000)
    async with run_daemon(tail_file_config(out, [f"{src}/*.log"]), tmp_path) as d:
        await all_arrived(out, 2000)
        os.unlink(src / "app.log")
        w.write(3000)  # the writer's descriptor still reaches the deleted file
        await all_arrived(out, 5000)
        w.close()
        await wait_until(lambda: tail_stats(d)["files"] == 0, "the deleted file is closed")
        stats = tail_stats(d)
        assert stats["deleted"] == 1 and stats["open_files"] == 0
        assert await d.stop() == 0
    assert_exactly_once(output_lines(out), 5000)
    state = orjson.loads((out / "state" / "tail" / "files_in.json").read_bytes())
    assert state["files"] == {}  # done with: not in the checkpoint any more


async def test_a_new_file_on_a_reused_inode_starts_at_0_not_at_the_old_offset(
        tmp_path: Path, src: Path, out: Path) -> None:
    # An inode freed by a deletion is given to the next file: here the checkpoint says what
    # an earlier file on this inode was read to, with the fingerprint of that file's start.
    path = src / "app.log"
    w = LogFileWriter(str(path), size=100)
    w.write(300)
    w.close()
    st = path.stat()
    state = out / "state" / "tail"
    state.mkdir(parents=True)
    (state / "files_in.json").write_bytes(orjson.dumps({"version": 1, "files": {
        f"{st.st_dev}:{st.st_ino}": {"path": str(src / "old.log"), "offset": 20_000,
                                     "fp_len": 1024, "fp": "0123456789abcdef"}}}))
    async with run_daemon(tail_file_config(out, [f"{src}/*.log"]), tmp_path) as d:
        await all_arrived(out, 300)
        assert await d.stop() == 0
    assert_exactly_once(output_lines(out), 300)
    assert d.listener_stats("files_in")["inode_reused"] == 1


async def test_a_checkpointed_file_continues_where_it_was_secured(
        tmp_path: Path, src: Path, out: Path) -> None:
    w = LogFileWriter(str(src / "app.log"), size=100)
    w.write(300)
    config = tail_file_config(out, [f"{src}/*.log"], listener_extra='start = "end"')
    async with run_daemon(config, tmp_path) as d:
        await asyncio.sleep(0.3)
        w.write(200)  # lines 300..499: after the start
        await all_arrived(out, 200)
        assert await d.stop() == 0
    assert sorted(numbers(output_lines(out))) == list(range(300, 500))
    w.write(100)  # while stopped: read at the next start, from the checkpoint
    w.close()
    async with run_daemon(config, tmp_path) as d:
        await all_arrived(out, 300)
        await asyncio.sleep(0.3)
        assert await d.stop() == 0
    assert sorted(numbers(output_lines(out))) == list(range(300, 600))


async def test_start_end_skips_what_was_there_and_reads_files_that_appear_later(
        tmp_path: Path, src: Path, out: Path) -> None:
    old = LogFileWriter(str(src / "old.log"), size=100, prefix=b"old ")
    old.write(1000)
    config = tail_file_config(out, [f"{src}/*.log"], listener_extra='start = "end"')
    async with run_daemon(config, tmp_path) as d:
        await wait_until(lambda: tail_stats(d)["files"] == 1, "old.log is followed")
        old.write(10)
        new = LogFileWriter(str(src / "new.log"), size=100, prefix=b"new ")
        new.write(20)
        await all_arrived(out, 30)
        assert await d.stop() == 0
    old.close()
    new.close()
    got = output_lines(out)
    assert sorted(x[:16] for x in got if x.startswith(b"old ")) == [
        b"old %012d" % n for n in range(1000, 1010)]
    assert len([x for x in got if x.startswith(b"new ")]) == 20


async def test_excluded_files_are_not_followed(tmp_path: Path, src: Path,
                                               out: Path) -> None:
    (src / "a.log").write_bytes(b"from a\n")
    (src / "b.log.gz").write_bytes(b"compressed\n")
    (src / "skip.log").write_bytes(b"skipped\n")
    config = tail_file_config(out, [f"{src}/*"], listener_extra='exclude = ["*.gz", '
                              f'"{src}/skip.*"]')
    async with run_daemon(config, tmp_path) as d:
        await all_arrived(out, 1)
        await asyncio.sleep(0.3)
        assert tail_stats(d)["files"] == 1
        assert await d.stop() == 0
    assert (out / "tailed.log").read_bytes() == b"from a\n"


async def test_a_line_longer_than_max_line_bytes_is_cut_and_counted(
        tmp_path: Path, src: Path, out: Path) -> None:
    (src / "app.log").write_bytes(b"short\n" + b"L" * 5000 + b"\nafter\n")
    config = tail_file_config(out, [f"{src}/*.log"], listener_extra='max_line_bytes = "2KiB"')
    async with run_daemon(config, tmp_path) as d:
        await all_arrived(out, 5)
        assert await d.stop() == 0
    assert output_lines(out) == [b"short", b"L" * 2048, b"L" * 2048, b"L" * 904, b"after"]
    assert d.listener_stats("files_in")["cut_lines"] == 2


JAVA = b"""2026-01-01 12:00:00 ERROR request failed
java.lang.IllegalStateException: boom
\tat com.example.Service.call(Service.java:42)
\tat com.example.Main.main(Main.java:7)
Caused by: java.io.IOException: disk
\t... 2 more
2026-01-01 12:00:01 INFO next request
2026-01-01 12:00:02 INFO last one, then quiet
"""


async def test_multiline_keeps_java_stack_traces_whole(tmp_path: Path, src: Path,
                                                       out: Path) -> None:
    (src / "app.log").write_bytes(JAVA)
    # Full looks every 5 s (inotify covers the directory): the timeout is kept between them.
    config = tail_file_config(
        out, [f"{src}/*.log"], output_extra='format = "json"', poll_interval="500ms",
        listener_extra="multiline = { start = '^\\d{4}-', max_lines = 50, timeout = '200ms' }")
    async with run_daemon(config, tmp_path) as d:
        started = time.monotonic()
        await all_arrived(out, 3)
        waited = time.monotonic() - started
        assert await d.stop() == 0
    assert waited < 4, waited
    messages = [orjson.loads(x)["message"] for x in output_lines(out)]
    trace, nxt, last = JAVA.decode().split("\n2026")[0], "2026-01-01 12:00:01 INFO next " \
        "request", "2026-01-01 12:00:02 INFO last one, then quiet"
    assert messages == [trace, nxt, last]  # the last goes out after the timeout


def cri_lines() -> bytes:
    return (b"2026-01-01T00:00:00.000000001Z stdout F first whole line\n"
            b"2026-01-01T00:00:01.000000001Z stderr P part one, \n"
            b"2026-01-01T00:00:01.100000001Z stderr P part two, \n"
            b"2026-01-01T00:00:01.200000001Z stderr F the end\n"
            b"2026-01-01T00:00:02.000000001Z stdout F ERROR payment failed\n")


async def test_cri_partial_lines_are_joined_with_pod_fields_for_templates_and_filters(
        tmp_path: Path, src: Path, out: Path) -> None:
    pods = src / "containers"
    pods.mkdir()
    name = f"web-7f9_prod_nginx-{'a' * 64}.log"
    (pods / name).write_bytes(cri_lines())
    config = tail_file_config(out, [f"{pods}/*.log"], listener_extra='format = "cri"',
                              output_path="{namespace}/{pod}.log",
                              output_extra='format = "json"') + f"""
[outputs.errors]
type = "file"
path = "{out}/errors.log"
flush_interval = "50ms"

[routes.all]
to = ["out"]

[routes.prod_errors]
match = 'namespace == "prod" && ERROR'
to = ["errors"]
"""
    async with run_daemon(config, tmp_path) as d:
        await wait_until(lambda: len(output_lines(out / "prod", "web-7f9.log")) >= 3,
                         "3 records in prod/web-7f9.log")
        await wait_until(lambda: len(output_lines(out, "errors.log")) >= 1, "an error routed")
        assert await d.stop() == 0
    records = [orjson.loads(x) for x in output_lines(out / "prod", "web-7f9.log")]
    assert [r["message"] for r in records] == ["first whole line",
                                               "part one, part two, the end",
                                               "ERROR payment failed"]
    assert records[1]["ts"] == "2026-01-01T00:00:01.200000Z"
    meta = orjson.loads(orjson.dumps(records[1]["metadata"]))
    assert meta == {"stream": "stderr", "pod": "web-7f9", "namespace": "prod",
                    "container": "nginx"}
    errors = [orjson.loads(x) for x in output_lines(out, "errors.log")]
    assert [e["message"] for e in errors] == ["ERROR payment failed"]


async def test_docker_split_lines_are_joined(tmp_path: Path, src: Path, out: Path) -> None:
    lines = [{"log": "one whole\n", "stream": "stdout", "time": "2026-01-01T00:00:00Z"},
             {"log": "a long line, ", "stream": "stdout", "time": "2026-01-01T00:00:01Z"},
             {"log": "split by docker\n", "stream": "stdout", "time": "2026-01-01T00:00:02Z"}]
    (src / "c-json.log").write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines)
                                     + b"not json at all\n")
    config = tail_file_config(out, [f"{src}/*.log"], listener_extra='format = "docker"',
                              output_extra='format = "json"')
    async with run_daemon(config, tmp_path) as d:
        await all_arrived(out, 3)
        assert await d.stop() == 0
    records = [orjson.loads(x) for x in output_lines(out)]
    assert [r["message"] for r in records] == ["one whole", "a long line, split by docker",
                                               "not json at all"]
    assert records[1]["ts"] == "2026-01-01T00:00:02.000000Z"
    assert d.listener_stats("files_in")["errors"] == {"bad_format": 1}


async def test_ten_thousand_files_all_arrive_with_descriptors_under_the_cap(
        tmp_path: Path, src: Path, out: Path) -> None:
    files = 10_000
    for i in range(files):
        (src / f"f{i:05d}.log").write_bytes(line(i, 40))
    cap = 300
    config = tail_file_config(out, [f"{src}/*.log"],
                              listener_extra=f"max_open_files = {cap}",
                              poll_interval="200ms")
    fds_before = len(os.listdir("/proc/self/fd"))
    async with run_daemon(config, tmp_path) as d:
        most = 0

        def arrived() -> bool:
            nonlocal most
            most = max(most, tail_stats(d)["open_files"])
            return len(output_lines(out)) >= files
        await wait_until(arrived, "a line of each file arrived", timeout=100)
        fds_during = len(os.listdir("/proc/self/fd"))
        # Every file grows again: each is opened again, under the cap.
        for i in range(0, files, 10):
            with open(src / f"f{i:05d}.log", "ab") as f:
                f.write(line(files + i, 40))
        await wait_until(lambda: len(output_lines(out)) >= files + files // 10,
                         "the second lines arrived", timeout=100)
        assert await d.stop() == 0
    print(f"open files at most {most}, fds {fds_before} before, {fds_during} during")
    assert most <= cap
    assert fds_during - fds_before <= cap + 20  # the output's file, sockets, the loop's
    got = numbers(output_lines(out))
    assert len(got) == files + files // 10 and max(got.values()) == 1


def stalled_config(out: Path, src: Path) -> str:
    """A tail listener feeding an analyzer pool with a small `block` buffer."""
    return f"""
[daemon]
state_dir = "{out}/state"
control_socket = "{out}/control.sock"
shutdown_timeout = "20s"
stats_interval = "0s"

[listeners.files_in]
type = "tail"
paths = ["{src}/*.log"]
poll_interval = "50ms"
checkpoint_interval = "100ms"
max_line_bytes = "64KiB"

[listeners.analyzers]
type = "analyzer"
address = "127.0.0.1:0"
buffer = {{ max_bytes = "256KiB", when_full = "block" }}
"""


async def test_a_full_block_buffer_stops_reading_and_everything_arrives_after(
        tmp_path: Path, src: Path, out: Path) -> None:
    total = 100_000  # 10 MiB of lines against a 256 KiB buffer nobody drains yet
    w = LogFileWriter(str(src / "app.log"), size=100)
    w.write(total)
    w.close()
    async with run_daemon(stalled_config(out, src), tmp_path) as d:
        await wait_until(lambda: tail_stats(d)["pauses"] > 0, "reading paused")
        read = tail_stats(d)["records"]
        await asyncio.sleep(0.5)  # while nothing drains the buffer, nothing more is read
        assert tail_stats(d)["records"] == read
        assert read < total // 10, read
        analyzer = await asyncio.to_thread(TestAnalyzer, d.port("analyzers"), 1.0, 100)
        try:
            await wait_until(lambda: analyzer.count >= total, "the analyzer got every line")
            assert await d.stop() == 0
        finally:
            analyzer.close()
    got = numbers(analyzer.payloads)
    assert len(got) == total and max(got.values()) == 1


async def test_stats_show_files_by_lag_and_metrics_the_totals(
        tmp_path: Path, src: Path, out: Path) -> None:
    from logd.ctl import render_stats as render_for_logctl
    from logd.metrics import render_stats as render_for_prometheus
    for i in range(3):
        (src / f"f{i}.log").write_bytes(b"one line\n" * (i + 1))
    config = tail_file_config(out, [f"{src}/*.log"], listener_extra="stats_files = 2")
    async with run_daemon(config, tmp_path) as d:
        await all_arrived(out, 6)
        stats = tail_stats(d)
        shown = render_for_logctl(d.stats())
        metrics = render_for_prometheus(d.stats())
        assert await d.stop() == 0
    assert stats["files"] == 3 and stats["lag_bytes"] == 0 and len(stats["top_files"]) == 2
    entry = next(iter(stats["top_files"].values()))
    assert {"offset", "committed", "size", "lag"} <= set(entry)
    assert "files_in: files by lag" in shown and "3 files, 3 open, lag 0" in shown
    assert 'logd_tail_files{listener="files_in"} 3' in metrics
    assert 'logd_tail_lag_bytes{listener="files_in"} 0' in metrics
    assert 'logd_listener_records_total{listener="files_in"} 6' in metrics


async def test_inotify_finds_new_files_and_lines_before_the_next_poll(
        tmp_path: Path, src: Path, out: Path) -> None:
    config = tail_file_config(out, [f"{src}/*.log"], poll_interval="60s")
    async with run_daemon(config, tmp_path) as d:
        assert tail_stats(d)["watching"] == "inotify"
        await asyncio.sleep(0.2)  # past the first look: only inotify can tell of the file
        (src / "late.log").write_bytes(b"first\n")
        await all_arrived(out, 1, timeout=20)
        with open(src / "late.log", "ab") as f:
            f.write(b"second\n")
        await all_arrived(out, 2, timeout=20)
        assert await d.stop() == 0
    assert output_lines(out) == [b"first", b"second"]


async def test_a_reload_that_changes_the_listener_repeats_and_skips_nothing(
        tmp_path: Path, src: Path, out: Path) -> None:
    w = LogFileWriter(str(src / "app.log"), size=100)
    w.write(20_000)
    config = tail_file_config(out, [f"{src}/*.log"])
    async with run_daemon(config, tmp_path) as d:
        await all_arrived(out, 20_000)
        w.write(20_000)
        d.config_path.write_text(config.replace('rotate_wait = "300ms"',
                                                'rotate_wait = "1s"'))
        result = await d.daemon.reload()  # what SIGHUP and `logctl reload` do
        assert result["applied"] and "listener files_in changed" in result["changes"], result
        w.write(10_000)
        await all_arrived(out, 50_000)
        await asyncio.sleep(0.3)
        assert await d.stop() == 0
    w.close()
    assert_exactly_once(output_lines(out), 50_000)


async def test_a_compressed_rotation_beside_the_path_is_not_read(
        tmp_path: Path, src: Path, out: Path) -> None:
    import gzip
    w = LogFileWriter(str(src / "app.log"), size=60, rotation="rename", rotate_lines=10**9)
    w.write(100)
    async with run_daemon(tail_file_config(out, [f"{src}/app.log"]), tmp_path) as d:
        await all_arrived(out, 100)
        w.rotate()  # app.log -> app.log.1, then compressed as logrotate's compress does
        (src / "app.log.1.gz").write_bytes(gzip.compress((src / "app.log.1").read_bytes()))
        (src / "app.log.1").unlink()
        w.write(50)
        await all_arrived(out, 150)
        await asyncio.sleep(0.5)  # several looks: the .gz would have been read by now
        assert await d.stop() == 0
    w.close()
    assert_exactly_once(output_lines(out), 150)


def recycle_inode(directory: Path, freed: Path, name: str, data: bytes) -> None:
    """Create `name` with `data` right after deleting `freed`: on ext4 the new file gets the
    freed inode (skipped where the filesystem does not reuse inodes at once)."""
    ino = freed.stat().st_ino
    freed.unlink()
    (directory / name).write_bytes(data)
    if (directory / name).stat().st_ino != ino:
        pytest.skip("this filesystem does not reuse a freed inode at once")


async def test_start_end_reads_a_later_file_on_the_inode_of_a_first_seen_one_from_0(
        tmp_path: Path, src: Path, out: Path) -> None:
    # logrotate with `rotate 1`: at the second rotation, the file the first look found is
    # deleted, and the new app.log is created on its inode.
    app = src / "app.log"
    app.write_bytes(b"A-before-start\n")
    config = tail_file_config(out, [f"{src}/app.log"], listener_extra='start = "end"')
    async with run_daemon(config, tmp_path) as d:
        await wait_until(lambda: tail_stats(d)["files"] == 1, "app.log is followed")
        with open(app, "ab") as f:
            f.write(b"A-after-start\n")
        await all_arrived(out, 1)
        os.rename(app, src / "app.log.1")
        app.write_bytes(b"B-1\n")
        await all_arrived(out, 2)
        await wait_until(lambda: tail_stats(d)["files"] == 1, "app.log.1 is finished")
        # In one go, with no look between: the second rotation.
        first = src / "app.log.1"
        os.rename(app, src / "moving")
        recycle_inode(src, first, "app.log", b"C-1\nC-2\n")
        os.rename(src / "moving", first)
        await all_arrived(out, 4, timeout=20)
        with open(app, "ab") as f:
            f.write(b"C-3\n")
        await all_arrived(out, 5)
        assert await d.stop() == 0
    assert output_lines(out) == [b"A-after-start", b"B-1", b"C-1", b"C-2", b"C-3"]


async def test_a_quickly_rotated_file_on_the_inode_of_a_finished_one_is_read(
        tmp_path: Path, src: Path, out: Path) -> None:
    app = src / "app.log"
    app.write_bytes(b"A-1\n")
    config = tail_file_config(out, [f"{src}/app.log"])
    async with run_daemon(config, tmp_path) as d:
        await all_arrived(out, 1)
        os.rename(app, src / "app.log.1")
        app.write_bytes(b"B-1\n")
        await all_arrived(out, 2)
        await wait_until(lambda: tail_stats(d)["files"] == 1, "app.log.1 is finished")
        # Two rotations with no look between: the file created on the finished file's inode
        # is already app.log.1 when logd next looks.
        first = src / "app.log.1"
        os.rename(app, src / "moving")
        recycle_inode(src, first, "app.log", b"C-1\nC-2\n")
        os.rename(src / "moving", first)
        os.unlink(first)  # still open in logd: its inode is not freed
        os.rename(app, first)
        app.write_bytes(b"D-1\n")
        await all_arrived(out, 5, timeout=20)
        assert await d.stop() == 0
    assert sorted(output_lines(out)) == [b"A-1", b"B-1", b"C-1", b"C-2", b"D-1"]


async def test_a_file_waiting_for_a_descriptor_does_not_stall_the_event_loop(
        tmp_path: Path, src: Path, out: Path) -> None:
    # One descriptor, held by the rotated file until it is quiet for rotate_wait: the new
    # file at the path waits for it, and the loop (logd's and this test's) goes on meanwhile.
    app = src / "a.log"
    app.write_bytes(b"old-1\n")
    config = tail_file_config(out, [f"{src}/a.log"], listener_extra="max_open_files = 1")
    config = config.replace('rotate_wait = "300ms"', 'rotate_wait = "1500ms"')
    async with run_daemon(config, tmp_path) as d:
        await all_arrived(out, 1)
        loop = asyncio.get_running_loop()
        longest = 0.0

        async def tick() -> None:
            nonlocal longest
            while True:
                before = loop.time()
                await asyncio.sleep(0.01)
                longest = max(longest, loop.time() - before)
        ticker = asyncio.ensure_future(tick())
        try:
            os.rename(app, src / "a.log.1")
            app.write_bytes(b"new-1\n")
            await all_arrived(out, 2, timeout=20)
        finally:
            ticker.cancel()
        assert await d.stop() == 0
    assert output_lines(out) == [b"old-1", b"new-1"]
    assert longest < 0.5, f"the event loop was held for {longest:.2f} s"


async def test_only_rotation_shaped_names_beside_a_rotated_path_are_read(
        tmp_path: Path, src: Path, out: Path) -> None:
    app = src / "app.log"
    app.write_bytes(b"A-1\n")
    (src / "app.log.debug").write_bytes(b"debug-1\n")  # another file, not configured
    config = tail_file_config(out, [f"{src}/app.log"])
    async with run_daemon(config, tmp_path) as d:
        await all_arrived(out, 1)
        with open(src / "app.log.debug", "ab") as f:
            f.write(b"debug-2\n")  # written since the last look, as a rotated file would be
        # Two rotations with no look between: app.log.1 is found by its name.
        os.rename(app, src / "app.log-20260101")
        app.write_bytes(b"B-1\n")
        os.rename(app, src / "app.log.1")
        app.write_bytes(b"C-1\n")
        await all_arrived(out, 3)
        await wait_until(lambda: tail_stats(d)["files"] == 1, "rotated files are finished")
        assert await d.stop() == 0
    assert sorted(output_lines(out)) == [b"A-1", b"B-1", b"C-1"]


async def test_a_checkpointed_file_set_aside_for_the_cap_at_start_is_read_later(
        tmp_path: Path, src: Path, out: Path) -> None:
    # One descriptor: at the start it goes to the new app.log, and app.log.1 (rotated while
    # logd was stopped, with lines after its checkpoint) waits for it.
    config = tail_file_config(out, [f"{src}/app.log"], listener_extra="max_open_files = 1")
    w = LogFileWriter(str(src / "app.log"), size=80, rotation="rename", rotate_lines=10**9)
    w.write(100)
    async with run_daemon(config, tmp_path) as d:
        await all_arrived(out, 100)
        assert await d.stop() == 0
    w.write(50)
    w.rotate()
    w.write(30)
    w.close()
    async with run_daemon(config, tmp_path) as d:
        await all_arrived(out, 180, timeout=20)
        await wait_until(lambda: tail_stats(d)["files"] == 1, "app.log.1 is finished")
        assert tail_stats(d)["errors"] == {}
        assert await d.stop() == 0
    assert_exactly_once(output_lines(out), 180)


async def test_a_checkpointed_file_deleted_while_stopped_is_counted_as_lost(
        tmp_path: Path, src: Path, out: Path) -> None:
    from logd.metrics import render_stats as render_for_prometheus
    config = tail_file_config(out, [f"{src}/app.log"])
    w = LogFileWriter(str(src / "app.log"), size=80, rotation="rename", rotate_lines=10**9)
    w.write(100)
    async with run_daemon(config, tmp_path) as d:
        await all_arrived(out, 100)
        assert await d.stop() == 0
    w.write(50)
    w.rotate()
    os.unlink(src / "app.log.1")  # with 50 lines logd never read
    w.write(30)
    w.close()
    async with run_daemon(config, tmp_path) as d:
        await all_arrived(out, 130)
        await wait_until(lambda: tail_stats(d)["errors"] != {}, "the loss is counted")
        assert tail_stats(d)["errors"] == {"lost_checkpointed_file": 1}
        metrics = render_for_prometheus(d.stats())
        assert await d.stop() == 0
    assert 'reason="lost_checkpointed_file"' in metrics
    assert set(numbers(output_lines(out))) == set(range(100)) | set(range(150, 180))


def reads_of(src: Path, fd: int) -> bool:
    """Whether `fd` is open on a file under `src` (a file the listener follows)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}").startswith(str(src))
    except OSError:
        return False


MULTILINE = "multiline = { start = '^\\d', timeout = '200ms' }"


async def test_reads_that_finish_a_file_or_send_a_held_group_are_made_off_the_loop(
        tmp_path: Path, src: Path, out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    loop_thread = threading.get_ident()
    on_loop: list[tuple[int, int]] = []
    real_pread = os.pread

    def pread(fd: int, n: int, offset: int) -> bytes:
        # Reads past the first bytes (the fingerprint) are reads of lines.
        if offset > 0 and threading.get_ident() == loop_thread and reads_of(src, fd):
            on_loop.append((n, offset))
        return real_pread(fd, n, offset)
    monkeypatch.setattr(os, "pread", pread)
    app = src / "app.log"
    app.write_bytes(b"1 a\n 1b\n2 c\n 2d\n")  # the second group is held until the timeout
    config = tail_file_config(out, [f"{src}/app.log"], listener_extra=MULTILINE,
                              output_extra='format = "json"')
    async with run_daemon(config, tmp_path) as d:
        await all_arrived(out, 2, timeout=20)
        with open(app, "ab") as f:
            f.write(b"3 e\nno-lf")  # the last line goes out once the file is finished
        os.rename(app, src / "app.log.1")
        await wait_until(lambda: tail_stats(d)["files"] == 0, "app.log.1 is finished")
        assert await d.stop() == 0
    messages = [orjson.loads(x)["message"] for x in output_lines(out)]
    assert "\n".join(messages) == "1 a\n 1b\n2 c\n 2d\n3 e\nno-lf"
    assert on_loop == []


async def test_a_read_error_is_counted_and_reading_goes_on(
        tmp_path: Path, src: Path, out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    failing = False
    real_pread = os.pread

    def pread(fd: int, n: int, offset: int) -> bytes:
        if failing and reads_of(src / "bad.log", fd):
            raise OSError(errno.EIO, "Input/output error")
        return real_pread(fd, n, offset)
    monkeypatch.setattr(os, "pread", pread)
    (src / "bad.log").write_bytes(b"1 a\n2 b\n")  # "2 b" is held until the timeout
    config = tail_file_config(out, [f"{src}/*.log"], listener_extra=MULTILINE)
    async with run_daemon(config, tmp_path) as d:
        await all_arrived(out, 1, timeout=20)
        failing = True  # the disk fails under bad.log when its held group is read
        await wait_until(lambda: "read_failed" in tail_stats(d)["errors"],
                         "the read error is counted", timeout=20)
        (src / "good.log").write_bytes(b"3 c\n4 d\n")
        await all_arrived(out, 3, timeout=20)
        failing = False
        await all_arrived(out, 4, timeout=20)
        assert await d.stop() == 0
    assert sorted(output_lines(out)) == [b"1 a", b"2 b", b"3 c", b"4 d"]


async def test_a_buffer_filled_by_a_held_group_stops_reading_until_it_has_room(
        tmp_path: Path, src: Path, out: Path) -> None:
    config = stalled_config(out, src).replace(
        'max_line_bytes = "64KiB"',
        "multiline = { start = '^\\d', max_lines = 5000, timeout = '200ms' }\n"
        'max_line_bytes = "1MiB"')
    (src / "a.log").write_bytes(b"0 a\n")
    async with run_daemon(config, tmp_path) as d:
        await wait_until(lambda: tail_stats(d)["records"] == 1, "a.log's group went out")
        (src / "b.log").write_bytes(b"0 b\n")  # followed after a.log
        await wait_until(lambda: tail_stats(d)["records"] == 2, "b.log's group went out")
        # Two groups held, sent when the timeout passes, a.log's first: 300 KiB, more than
        # the buffer holds. b.log's waits until the buffer has room.
        with open(src / "a.log", "ab") as f:
            f.write(b"1 a\n" + (b"  " + b"c" * 100 + b"\n") * 3000)
        with open(src / "b.log", "ab") as f:
            f.write(b"1 b\n")
        await wait_until(lambda: tail_stats(d)["pauses"] > 0, "reading paused", timeout=10)
        await asyncio.sleep(0.5)  # several turns: nothing goes out while the buffer is full
        assert tail_stats(d)["records"] == 3
        analyzer = await asyncio.to_thread(TestAnalyzer, d.port("analyzers"), 1.0, 100)
        try:
            await wait_until(lambda: analyzer.count >= 4, "the analyzer got every record",
                             timeout=10)
            assert await d.stop() == 0
        finally:
            analyzer.close()
    assert analyzer.count == 4


async def test_a_damaged_checkpoint_reads_its_files_again_and_loses_nothing(
        tmp_path: Path, src: Path, out: Path) -> None:
    config = tail_file_config(out, [f"{src}/app.log"])
    w = LogFileWriter(str(src / "app.log"), size=80, rotation="rename", rotate_lines=10**9)
    w.write(1000)
    async with run_daemon(config, tmp_path) as d:
        await all_arrived(out, 1000)
        assert await d.stop() == 0
    checkpoint = out / "state" / "tail" / "files_in.json"
    assert checkpoint.exists()
    checkpoint.write_bytes(os.urandom(64))
    w.write(500)
    w.close()
    async with run_daemon(config, tmp_path) as d:
        await all_arrived(out, 2500)
        assert await d.stop() == 0
    seen = numbers(output_lines(out))
    missing = [n for n in range(1500) if n not in seen]
    print(f"damaged checkpoint: 1500 written, {sum(seen.values())} arrived, "
          f"{len(missing)} missing")
    # The file is read from its beginning: the first 1,000 twice, nothing lost.
    assert not missing
    assert sorted(seen.values()) == [1] * 500 + [2] * 1000
    assert (out / "state" / "tail" / "files_in.json.damaged").exists()
