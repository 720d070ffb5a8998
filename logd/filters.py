"""Filter expressions for routes and taps: `compile_filter(expression) -> Filter`.

    *                                   every record
    ERROR   "disk full"                 a bare or quoted word: the payload contains it
    /timeout|refused/                   a regex the message matches (UTF-8 bytes, see below)
    level >= warn                       severity comparisons (== != >= > <= <), by name or 0-7
    level in [error, fatal]             one of these severities
    app == "billing"    source != x     app, source and listener, read as logd.fields says
    app in ["web", "api"]   app =~ /^w/
    metadata.region == "eu-west-1"      a JSON field, by its path (a.b.c)
    attrs.user.id == 42                 an unquoted number compares as a number
    duration_ms > 250                   > >= < <= compare numbers
    event =~ /^log(in|out)$/   e !~ /x/ a regex the field's text matches (or does not)
    exists(attrs.user)                  the field is there (and not null)
    a && b    a || b    !a    ( ... )   boolean logic

Typing rules. A quoted operand is text: it equals a field that is that string, or whose JSON
text it is (`tags == '["a"]'`). An unquoted operand written as a JSON number (42, -1.5, 1e3)
is a number: it equals JSON numbers of that value (42 and 42.0), never the string "42", and
neither does it equal true or false. Other unquoted operands are text, as quoted ones
(`ok == true` reads the JSON text "true"). A missing field or a null equals nothing, so
`!=` and `!~` are true of it and `>`, `in` and `=~` are false. app, source and listener are
always text; level and severity keep their names and numbers 0-7 ("greater" is more
severe). Regexes (Python syntax) run on UTF-8 bytes: `.` is one byte, `\\w`, `\\d` and `(?i)`
know ASCII only; `/` inside one is written `\\/`.

A path's parts are separated by dots; at each level the longest run of parts that is a key
there wins, so `service.name` reads a key "service.name" when there is one.

Parentheses and negations nest at most MAX_DEPTH (64) levels; chains of && and || are as
long as needed.
"""

from __future__ import annotations

from logd import linescan
from logd.filter_nodes import Columns, Node, prefilter_program, probe_needles, word_program
from logd.filter_syntax import MAX_DEPTH, FilterError, parse
from logd.record import JSON, Batch

__all__ = ["MAX_DEPTH", "Filter", "FilterError", "compile_filter"]


class Filter:
    """A compiled expression; `select` returns the indices of matching records of a batch."""

    def __init__(self, expression: str, root: Node | None) -> None:
        self.expression = expression
        self._root = root
        self._probe = probe_needles(root) if root is not None else []
        # An expression of words on a block of lines: each line looked at once, in C.
        self._program = word_program(root) if root is not None and linescan.COMPILED else None
        # Otherwise, where words and field values tell which lines may match: only those
        # lines are parsed and tested.
        self._prefilter = prefilter_program(root) \
            if root is not None and linescan.COMPILED and self._program is None else None
        self.matches_all = root is None

    def select(self, batch: Batch) -> list[int]:
        """Called by the router (and taps) once per batch; indices in ascending order."""
        if self._root is None:
            return list(range(batch.count))
        if not batch.count:
            return []
        if batch.raw is not None:
            if self._program is not None:
                return linescan.match_lines(batch.raw, self._program)
            # Only JSON payloads hold their fields' values as written (a syslog facility's
            # name, say, is derived from a number).
            if self._prefilter is not None and batch.form == JSON:
                maybe = linescan.match_lines(batch.raw, self._prefilter)
                if len(maybe) < batch.count:
                    if not maybe:
                        return []
                    part = batch.subset(maybe)
                    found = self._root.select(Columns(part, self._probe), None)
                    return list(map(maybe.__getitem__, found))
        return self._root.select(Columns(batch, self._probe), None)


def compile_filter(expression: str) -> Filter:
    """Compile a route's `match`; raises FilterError saying what and where (column)."""
    if expression.strip() == "*":
        return Filter(expression, None)
    return Filter(expression, parse(expression))
