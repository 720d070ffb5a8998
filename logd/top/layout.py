"""A View as lines of text: `screen` for a terminal of a given size (names cut, counts
shortened, rows that do not fit counted on a "+N more" line), `plain` for a pipe or a
script (names whole, counts exact).

Columns, per listener and per output:
  REC/S    records per second (listeners: taken in; outputs, analyzer pools: delivered)
  BYTES/S  bytes per second, likewise
  TOTAL    records so far (the counter REC/S is the rate of)
  QUEUE    what waits in the buffer (bytes; records where bytes are not reported)
  FILL     QUEUE as a share of the buffer's bound
  DROPS    records a full drop_newest buffer refused
  ERRS     errors (bad input, refused connections, failed writes)
  RETRY    writes tried again
  LAG      how far a listener is behind its source (records, or bytes as a size)
Below them, on rows left over, what a component says is wrong ("! NAME: problem").
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass

from logd.top import human
from logd.top.cells import fit, ljust, printable, rjust
from logd.top.cells import width as text_width
from logd.top.figures import Lag, Row, View

DASH = "-"
MIN_NAME, MIN_TYPE, MAX_TYPE = 11, 8, 10


@dataclass(frozen=True)
class Column:
    title: str
    width: int
    cell: Callable[[Row, bool], str]   # (row, full): full = plain output, exact counts


def _rate(value: float | None, fmt: Callable[[float], str]) -> str:
    return DASH if value is None else fmt(value)


def _opt(value: int | None, full: bool) -> str:
    if value is None:
        return DASH
    return str(value) if full else human.count(value)


def _total(r: Row, full: bool) -> str:
    if r.records is None:
        return DASH
    return str(r.records) if full else human.exact(r.records, 7)


def _queue(r: Row, full: bool) -> str:
    if r.queued_bytes is not None:
        return human.size(r.queued_bytes)
    return _opt(r.queued_records, full)


def _fill(r: Row, full: bool) -> str:
    return DASH if r.fill_pct is None else f"{min(r.fill_pct, 999):.0f}%"


def lag_text(lag: Lag | None, full: bool) -> str:
    if lag is None:
        return DASH
    return human.size(lag.value) if lag.unit == "bytes" else _opt(lag.value, full)


COLUMNS = (
    Column("REC/S", 6, lambda r, f: _rate(r.records_per_s, human.count)),
    Column("BYTES/S", 7, lambda r, f: _rate(r.bytes_per_s, human.size)),
    Column("TOTAL", 7, _total),
    Column("QUEUE", 6, _queue),
    Column("FILL", 4, _fill),
    Column("DROPS", 5, lambda r, f: _opt(r.dropped, f)),
    Column("ERRS", 5, lambda r, f: _opt(r.errors, f)),
    Column("RETRY", 5, lambda r, f: _opt(r.retries, f)),
    Column("LAG", 6, lambda r, f: lag_text(r.lag, f)),
)
FIGURES_WIDTH = sum(c.width + 1 for c in COLUMNS)  # each with the space before it


def header(v: View) -> str:
    name = "logd" + (f"@{v.instance}" if v.instance else "")
    parts = [f"{name} {v.version}".rstrip()]
    if v.uptime_s is not None:
        parts.append(f"up {human.duration(v.uptime_s)}")
    parts.append(f"in {_rate(v.in_per_s, human.count)}/s")
    parts.append(f"out {_rate(v.out_per_s, human.count)}/s")
    parts.append(f"cpu {DASH if v.cpu_pct is None else f'{v.cpu_pct:.1f}%'}")
    parts.append(f"rss {DASH if v.rss_bytes is None else human.size(v.rss_bytes)}")
    if v.pid is not None:
        parts.append(f"pid {v.pid}")
    return "  ".join(parts)


@dataclass(frozen=True)
class Widths:
    name: int
    type: int
    figures: tuple[int, ...]   # one per COLUMNS


def _cells(r: Row, full: bool) -> list[str]:
    return [printable(r.name), printable(r.type), *(c.cell(r, full) for c in COLUMNS)]


def _widths(v: View, columns: int | None) -> Widths:
    rows = [*v.listeners, *v.outputs]
    name_w = max([len("LISTENER"), *(text_width(printable(r.name)) for r in rows)])
    type_w = max([len("TYPE"), *(text_width(printable(r.type)) for r in rows)])
    if columns is None:  # plain: every column as wide as its widest cell
        cells = [_cells(r, True)[2:] for r in rows]
        return Widths(name_w, type_w, tuple(max([c.width, *(len(row[i]) for row in cells)])
                                             for i, c in enumerate(COLUMNS)))
    # The figures keep their width; names get what is left, types up to MAX_TYPE of it.
    type_room = columns - FIGURES_WIDTH - 1 - MIN_NAME
    type_w = max(min(type_w, MAX_TYPE, type_room), MIN_TYPE)
    name_w = max(min(name_w, columns - FIGURES_WIDTH - 1 - type_w), MIN_NAME)
    return Widths(name_w, type_w, tuple(c.width for c in COLUMNS))


def _line(cells: list[str], w: Widths, cut: bool) -> str:
    name, type_, *figures = cells
    if cut:
        name, type_ = fit(name, w.name), fit(type_, w.type)
    out = [ljust(name, w.name), ljust(type_, w.type)]
    out += [rjust(f, fw) for f, fw in zip(figures, w.figures, strict=True)]
    return " ".join(out).rstrip()


def _section(title: str, rows: list[Row], shown: int | None, w: Widths,
             full: bool) -> list[str]:
    """The title line and `shown` lines for rows (all when None), the last of them a
    "+N more" line when some rows are left out."""
    cut = not full
    lines = [_line([title, "TYPE", *(c.title for c in COLUMNS)], w, cut)]
    if not rows:
        return [*lines, "  (none)"]
    if shown is not None and shown < len(rows):
        visible = max(shown - 1, 0)
        body = [_line(_cells(r, full), w, cut) for r in rows[:visible]]
        return [*lines, *body, f"  +{len(rows) - visible} more"]
    return [*lines, *(_line(_cells(r, full), w, cut) for r in rows)]


def screen(v: View, width: int, height: int, status: str) -> list[str]:
    """At most `height` lines of at most `width` columns: the header, listeners, outputs,
    and `status` on the last line."""
    w = _widths(v, width)
    # header, blank, two section titles, the blank between them, the status line
    room = max(height - 6, 0)
    n_lst, n_out = max(len(v.listeners), 1), max(len(v.outputs), 1)
    lst_rows = min(n_lst, max(room // 2, room - n_out))
    out_rows = min(n_out, room - lst_rows)
    lines = [header(v), ""]
    lines += _section("LISTENER", v.listeners, lst_rows, w, full=False)
    lines += [""]
    lines += _section("OUTPUT", v.outputs, out_rows, w, full=False)
    problems = problem_lines(v)
    left = height - 1 - len(lines) - 1  # a blank line before them
    if problems and left > 0:
        if len(problems) > left:
            problems = [*problems[:left - 1], f"! +{len(problems) - left + 1} more"]
        lines += ["", *problems]
    lines = lines[:max(height - 1, 0)]
    lines += [""] * (height - 1 - len(lines))
    lines.append(status)
    return [fit(printable(line), width) for line in lines[:height]]


def problem_lines(v: View) -> list[str]:
    return [printable(f"! {r.name}: {r.problem}") for r in (*v.listeners, *v.outputs)
            if r.problem]


def plain(v: View) -> list[str]:
    """Every row, names in full and counts exact: for a pipe or a script."""
    w = _widths(v, None)
    problems = problem_lines(v)
    return [printable(header(v)), "",
            *_section("LISTENER", v.listeners, None, w, full=True), "",
            *_section("OUTPUT", v.outputs, None, w, full=True),
            *(["", *problems] if problems else [])]


def unreachable(message: str, width: int, height: int, status: str) -> list[str]:
    """The screen while logd does not answer: what went wrong, and that top keeps trying."""
    # Wrapped, long paths broken too: the reason is the one thing on this screen.
    lines = ["logd: not reachable; trying again", "",
             *textwrap.wrap(message, max(width, 1), break_on_hyphens=False)]
    lines = lines[:max(height - 1, 0)]
    lines += [""] * (height - 1 - len(lines))
    lines.append(status)
    return [fit(printable(line), width) for line in lines[:height]]
