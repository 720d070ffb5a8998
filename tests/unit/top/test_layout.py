"""logctl top's screen: every line fits, rows that do not are counted, names are cut."""

from __future__ import annotations

import dataclasses

from logd.top import layout
from logd.top.figures import Lag, Row, View


def row(name: str, type_: str = "tcp", **figures: object) -> Row:
    base: dict[str, object] = {
        "records": 123_456_789, "records_per_s": 1234.5, "bytes_per_s": 340.0 * 2**20,
        "queued_bytes": 900 * 2**20, "queued_records": 10, "fill_pct": 87.9, "dropped": 12,
        "errors": 3, "retries": 99_999, "lag": Lag(2**31, "bytes"), "delivers": False}
    return Row(name=name, type=type_, **{**base, **figures})  # type: ignore[arg-type]


def view(listeners: int, outputs: int) -> View:
    return View(instance="instance-with-a-long-name", version="0.1.0", pid=4_194_303,
                uptime_s=400_000.0, cpu_pct=102.5, rss_bytes=340 * 2**20,
                in_per_s=1.5e6, out_per_s=3e6,
                listeners=[row(f"listener-number-{i}-with-a-long-name") for i in range(listeners)],
                outputs=[row(f"out{i}", "clickhouse") for i in range(outputs)])


def test_a_screen_fits_80_by_24_and_counts_what_it_leaves_out() -> None:
    lines = layout.screen(view(30, 30), 80, 24, "updated 12:00:00, every 1s; q quits")
    assert len(lines) == 24 and max(len(line) for line in lines) <= 80
    assert lines[-1] == "updated 12:00:00, every 1s; q quits"
    more = [line.strip() for line in lines if line.strip().startswith("+")]
    assert more == ["+22 more", "+22 more"]  # 9 rows each: 8 shown, then the count
    listener = next(line for line in lines if line.startswith("listener-n"))
    assert listener.startswith("listener-n~ tcp ")
    assert "1.2k" in listener and "340MiB" in listener and "123M" in listener
    assert "900MiB" in listener and "88%" in listener and "2.0GiB" in listener
    assert " clickho~ " in "\n".join(lines)


def test_everything_that_fits_is_shown() -> None:
    lines = layout.screen(view(2, 3), 80, 24, "s")
    assert not any("more" in line for line in lines)
    assert sum(line.startswith("listener-") for line in lines) == 2
    assert sum(line.startswith("out") for line in lines) == 3


def test_a_small_or_wide_terminal() -> None:
    for width, height in ((40, 6), (80, 8), (20, 3), (200, 50)):
        lines = layout.screen(view(5, 5), width, height, "status")
        assert len(lines) == height and all(len(line) <= width for line in lines)
    wide = layout.screen(view(1, 1), 200, 50, "s")
    assert any(line.startswith("listener-number-0-with-a-long-name ") for line in wide)


def test_plain_keeps_names_whole_and_totals_exact() -> None:
    text = "\n".join(layout.plain(view(1, 1)))
    assert "listener-number-0-with-a-long-name" in text and "123456789" in text
    assert " 99999 " in text  # retries: counts exact
    titles, first = layout.plain(view(1, 1))[2], layout.plain(view(1, 1))[3]
    assert titles.index("TOTAL") + len("TOTAL") == first.index("123456789") + 9  # aligned
    assert "clickhouse" in text and "~" not in text


def test_unreachable_says_why_within_the_width() -> None:
    why = "cannot connect to /run/logd/control.sock: no such socket; is logd running?"
    lines = layout.unreachable(why, 30, 10, "tried 12:00:00")
    assert lines[0].startswith("logd: not reachable") and lines[-1] == "tried 12:00:00"
    assert all(len(line) <= 30 for line in lines)
    assert " ".join(" ".join(lines[2:-1]).split()) == why


def test_problems_take_the_rows_left_over() -> None:
    v = view(1, 3)
    v = dataclasses.replace(v, outputs=[
        dataclasses.replace(r, problem=f"not connected {i}") for i, r in enumerate(v.outputs)])
    roomy = layout.screen(v, 80, 24, "s")
    assert [line for line in roomy if line.startswith("!")] == [
        "! out0: not connected 0", "! out1: not connected 1", "! out2: not connected 2"]
    tight = layout.screen(v, 80, 12, "s")  # 10 rows of tables: one left for problems
    assert len(tight) == 12 and sum(line.startswith("out") for line in tight) == 3
    assert [line for line in tight if line.startswith("!")] == ["! +3 more"]
    assert layout.plain(v)[-1] == "! out2: not connected 2"


def test_wide_names_are_cut_by_columns_and_escapes_never_reach_the_terminal() -> None:
    from logd.top.cells import width
    v = dataclasses.replace(
        view(0, 0), instance="\x1b]0;owned\x07ログ",
        listeners=[row("受信" * 12), row("emitters\x1b[2J", "tcp")],
        outputs=[row("ファイル出力", "file", problem="disk \x1b[31mfull\x1b[0m\n")])
    for columns, height in ((80, 24), (40, 12), (200, 30)):
        lines = layout.screen(v, columns, height, "s")
        assert all(width(line) <= columns for line in lines), columns
        assert not any(ch in line for line in lines for ch in "\x1b\x07\n")
    lines = layout.screen(v, 80, 24, "s")
    assert any(line.startswith("受信受信") and "~ " in line for line in lines)
    assert any(line.startswith("emitters?[~ ") for line in lines)
    assert any(line.startswith("emitters?[2J ") for line in layout.screen(v, 200, 30, "s"))
    assert any("! ファイル出力: disk ?[31mfull?[0m?" in line for line in lines)
    # Columns line up by display width: the figures of both listeners end in one column.
    ends = [width(line) for line in lines if line.startswith(("受信", "emitters"))]
    assert len(ends) == 2 and ends[0] == ends[1]
    plain = layout.plain(v)
    assert not any("\x1b" in line for line in plain)
