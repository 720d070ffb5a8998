"""Filter expressions for routes: `compile_filter(expression) -> Filter`.

    *                                   every record
    level >= warn                       severity comparisons (== != >= > <= <), by name or 0-7
    app == "billing"    source != x     field comparisons (app, source, event, any JSON field;
                                        app and source read as logd.fields says)
    listener == http                    the listener the record came in on
    ERROR   "disk full"                 a bare or quoted word: the payload contains it
    a && b    a || b    !a    ( ... )   boolean logic

`level >= warn` means "warn or more severe" (syslog numbers run the other way).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from logd.fields import app_of, severity_from_name, source_of, text
from logd.record import Batch

# A predicate sees one record: (batch, index) -> bool.
Predicate = Callable[[Batch, int], bool]


class FilterError(ValueError):
    pass


class Filter:
    """A compiled expression; `select` returns the indices of matching records of a batch."""

    def __init__(self, expression: str, predicate: Predicate | None) -> None:
        self.expression = expression
        self._predicate = predicate
        self.matches_all = predicate is None

    def select(self, batch: Batch) -> list[int]:
        if self._predicate is None:
            return list(range(len(batch)))
        pred = self._predicate
        return [i for i in range(batch.count) if pred(batch, i)]


_TOKEN = re.compile(r"""
    \s*(?:
      (?P<op>&&|\|\||==|!=|>=|<=|>|<|!|\(|\))
    | "(?P<dq>(?:[^"\\]|\\.)*)"
    | '(?P<sq>(?:[^'\\]|\\.)*)'
    | (?P<word>[^\s()!&|=<>"']+)
    )""", re.X)

_COMPARE_OPS = {"==", "!=", ">=", "<=", ">", "<"}


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    tokens: list[tuple[str, str, int]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            while text[pos].isspace():
                pos += 1
            raise FilterError(f"unexpected character {text[pos]!r} at column {pos + 1}")
        start = m.start(m.lastgroup or 0) + 1
        if m.group("op") is not None:
            tokens.append(("op", m.group("op"), start))
        elif m.group("word") is not None:
            tokens.append(("word", m.group("word"), start))
        else:
            raw = m.group("dq") if m.group("dq") is not None else m.group("sq")
            tokens.append(("str", re.sub(r"\\(.)", r"\1", raw), start))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> tuple[str, str, int]:
        tok = self.peek()
        if tok is None:
            raise FilterError("expression ends too early")
        self.i += 1
        return tok

    def parse(self) -> Predicate:
        if not self.tokens:
            raise FilterError("empty expression")
        pred = self.or_()
        tok = self.peek()
        if tok is not None:
            raise FilterError(f"unexpected {tok[1]!r} at column {tok[2]}")
        return pred

    def or_(self) -> Predicate:
        left = self.and_()
        while (tok := self.peek()) and tok[:2] == ("op", "||"):
            self.i += 1
            right = self.and_()
            left = (lambda a, b: lambda r, i: a(r, i) or b(r, i))(left, right)
        return left

    def and_(self) -> Predicate:
        left = self.unary()
        while (tok := self.peek()) and tok[:2] == ("op", "&&"):
            self.i += 1
            right = self.unary()
            left = (lambda a, b: lambda r, i: a(r, i) and b(r, i))(left, right)
        return left

    def unary(self) -> Predicate:
        kind, value, col = self.take()
        if kind == "op" and value == "!":
            inner = self.unary()
            return lambda r, i: not inner(r, i)
        if kind == "op" and value == "(":
            inner = self.or_()
            closing = self.take()
            if closing[:2] != ("op", ")"):
                raise FilterError(f"expected ')' at column {closing[2]}")
            return inner
        if kind == "op":
            raise FilterError(f"unexpected {value!r} at column {col}")
        nxt = self.peek()
        if kind == "word" and nxt and nxt[0] == "op" and nxt[1] in _COMPARE_OPS:
            self.i += 1
            vkind, operand, vcol = self.take()
            if vkind == "op":
                raise FilterError(f"expected a value after {nxt[1]!r} at column {vcol}")
            return _comparison(value, nxt[1], operand, vcol)
        needle = value.encode()
        return lambda r, i: needle in r.payloads[i]


def _comparison(name: str, op: str, operand: str, col: int) -> Predicate:
    if name in ("level", "severity"):
        target = severity_from_name(operand)
        if target is None:
            raise FilterError(f"unknown level {operand!r} at column {col}; expected a name "
                              "(debug, info, notice, warn, error, crit, alert, emerg) or 0-7")
        # Severity numbers grow as records get less severe, so the comparison flips.
        cmp = {"==": lambda s: s == target, "!=": lambda s: s != target,
               ">=": lambda s: s <= target, ">": lambda s: s < target,
               "<=": lambda s: s >= target, "<": lambda s: s > target}[op]
        return lambda r, i: cmp(r.severity_bytes()[i])
    if op not in ("==", "!="):
        raise FilterError(f"{name!r} compares with == or != only (column {col})")
    want_equal = op == "=="
    if name == "listener":
        return lambda r, i: (r.source == operand) == want_equal
    if name in ("app", "source"):
        read = app_of if name == "app" else source_of
        return lambda r, i: (read(r.fields()[i], r.source) == operand) == want_equal

    def field_value(r: Batch, i: int) -> str | None:
        obj = r.fields()[i]
        if obj is None:
            return None
        v = obj.get(name)
        return None if v is None else text(v)

    return lambda r, i: (field_value(r, i) == operand) == want_equal


def compile_filter(expression: str) -> Filter:
    """Compile a route's `match`; raises FilterError saying what and where (column)."""
    if expression.strip() == "*":
        return Filter(expression, None)
    return Filter(expression, _Parser(expression).parse())
