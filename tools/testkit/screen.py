"""A terminal screen rebuilt from what a full-screen program wrote: the escape codes of
VT100 and xterm it uses (cursor moves, erasing, the alternate screen, the cursor shown or
hidden), so a test can read the screen a person would see.

Text written past the right edge is not wrapped but recorded in `overflows`: a program
that means to fit the terminal never writes there.
"""

from __future__ import annotations

import re

_CSI = re.compile(r"\x1b\[([?0-9;]*)([@-~])")


class Screen:
    def __init__(self, columns: int, rows: int) -> None:
        self.columns, self.rows = columns, rows
        self.cells = [[" "] * columns for _ in range(rows)]
        self.row = self.col = 0
        self.alternate = False
        self.cursor_visible = True
        self.overflows: list[str] = []   # the row's text when something went past the edge
        self.unknown: list[str] = []     # escape sequences this screen does not interpret

    def resize(self, columns: int, rows: int) -> None:
        self.columns, self.rows = columns, rows
        self.cells = [[" "] * columns for _ in range(rows)]
        self.row = self.col = 0

    def lines(self) -> list[str]:
        return ["".join(r).rstrip() for r in self.cells]

    def text(self) -> str:
        return "\n".join(self.lines())

    def feed(self, data: str) -> None:
        i = 0
        while i < len(data):
            ch = data[i]
            if ch == "\x1b":
                m = _CSI.match(data, i)
                if m is None:
                    self.unknown.append(repr(data[i:i + 8]))
                    i += 1
                    continue
                self._csi(m.group(1), m.group(2))
                i = m.end()
                continue
            if ch == "\r":
                self.col = 0
            elif ch == "\n":
                self._newline()
            elif ch >= " ":
                self._put(ch)
            i += 1

    def _put(self, ch: str) -> None:
        if self.col >= self.columns:
            self.overflows.append("".join(self.cells[self.row]) + ch)
            return
        self.cells[self.row][self.col] = ch
        self.col += 1

    def _newline(self) -> None:
        if self.row == self.rows - 1:
            self.cells = [*self.cells[1:], [" "] * self.columns]
        else:
            self.row += 1

    def _csi(self, params: str, final: str) -> None:
        if params.startswith("?"):
            on = final == "h"
            if params == "?1049":
                self.alternate = on
                if on:
                    self._erase(0, self.rows)
            elif params == "?25":
                self.cursor_visible = on
            else:
                self.unknown.append(params + final)
            return
        args = [int(a) if a else 0 for a in params.split(";")] if params else []
        if final == "H":
            row = (args[0] if args else 1) or 1
            col = (args[1] if len(args) > 1 else 1) or 1
            self.row, self.col = min(row, self.rows) - 1, min(col, self.columns) - 1
        elif final == "K":
            if self.row < self.rows:
                self.cells[self.row][self.col:] = [" "] * (self.columns - self.col)
        elif final == "J":
            if args and args[0] == 2:
                self._erase(0, self.rows)
            else:
                self.cells[self.row][self.col:] = [" "] * (self.columns - self.col)
                self._erase(self.row + 1, self.rows)
        elif final != "m":  # colours and attributes do not change the text
            self.unknown.append(params + final)

    def _erase(self, first: int, last: int) -> None:
        for r in range(first, last):
            self.cells[r] = [" "] * self.columns
