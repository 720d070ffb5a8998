"""Filter expressions for routes: `compile_filter(expression) -> Filter`.

    *                                   every record
    level >= warn                       severity comparisons (== != >= > <= <), by name or 0-7
    app == "billing"    source != x     field comparisons (app, source, event, any JSON field;
                                        read as logd.fields says: JSON text if not a string)
    listener == http                    the listener the record came in on
    ERROR   "disk full"                 a bare or quoted word: the payload contains it
    a && b    a || b    !a    ( ... )   boolean logic

`level >= warn` means "warn or more severe" (syslog numbers run the other way). Parentheses
and negations nest at most MAX_DEPTH (64) levels; chains of && and || are as long as needed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple, NoReturn

from logd.fields import app_of, severity_from_name, source_of, text
from logd.record import Batch

# A predicate sees one record: (batch, index) -> bool.
Predicate = Callable[[Batch, int], bool]


# Parentheses and negations may nest this deep. Parsing recurses about three frames per
# level and a compiled filter about two when it runs, in the router: the limit keeps both
# far below Python's recursion limit, and no route needs more than a few levels.
MAX_DEPTH = 64

_OPERAND = "a word, a quoted string, '(' or '!'"


class FilterError(ValueError):
    """What is wrong with an expression, and where.

    `message` is one line ending in "at column N" when it names a place; `column` is that N
    (1-based, counted in the whole expression) or None. str() is the message under the line
    of the expression it points into, with a caret at the column.
    """

    def __init__(self, message: str, expression: str = "", column: int | None = None) -> None:
        self.message = message
        self.expression = expression
        self.column = column
        super().__init__(message)

    def __str__(self) -> str:
        if self.column is None:
            return self.message
        line, caret = self.pointer()
        return f"{line}\n{caret} {self.message}"

    def excerpt(self, indent: str = "") -> str:
        """The expression's line and the caret under it, indented (for a message of its
        own line above them); "" when the error names no column."""
        if self.column is None:
            return ""
        line, caret = self.pointer()
        return f"{indent}{line}\n{indent}{caret}"

    def pointer(self) -> tuple[str, str]:
        """(the expression's line holding the column, a caret line under it), cut to a
        window around the column so a long expression shows as one screen line."""
        text, col = self.expression, (self.column or 1) - 1
        start = text.rfind("\n", 0, col) + 1
        stop = text.find("\n", col)
        line = text[start:len(text) if stop < 0 else stop]
        at = col - start
        if len(line) > 72:
            left = max(0, min(at - 40, len(line) - 72))
            shown = line[left:left + 72]
            line = ("..." if left else "") + shown + ("..." if left + 72 < len(line) else "")
            at = at - left + (3 if left else 0)
        # Tabs stay tabs under tabs, so the caret lines up wherever the terminal puts them.
        pad = "".join(c if c == "\t" else " " for c in line[:at])
        return line, pad + " " * (at - len(pad)) + "^"


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
    )""", re.X | re.S)

_COMPARE_OPS = {"==", "!=", ">=", "<=", ">", "<"}
_MEANT = {"&": "&&", "|": "||", "=": "=="}


class _Token(NamedTuple):
    kind: str  # "op", "word" or "str"
    value: str
    column: int


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    end = len(text.rstrip())
    while pos < end:
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            while text[pos].isspace():
                pos += 1
            c = text[pos]
            if c in "\"'":
                raise FilterError(f"string opened at column {pos + 1} is not closed; expected "
                                  f"a closing {c}", text, pos + 1)
            hint = f"; expected {_MEANT[c]!r}" if c in _MEANT else ""
            raise FilterError(f"unexpected character {c!r} at column {pos + 1}{hint}",
                              text, pos + 1)
        start = m.start(m.lastgroup or 0) + 1
        if m.group("op") is not None:
            tokens.append(_Token("op", m.group("op"), start))
        elif m.group("word") is not None:
            tokens.append(_Token("word", m.group("word"), start))
        else:
            raw = m.group("dq") if m.group("dq") is not None else m.group("sq")
            tokens.append(_Token("str", re.sub(r"\\(.)", r"\1", raw, flags=re.S), start))
        pos = m.end()
    return tokens


class _Parser:
    """Recursive descent; `depth` counts the parentheses and negations open."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0

    def fail(self, message: str, column: int, after: str = "") -> NoReturn:
        raise FilterError(f"{message} at column {column}{after}", self.text, column)

    def expected(self, what: str, after: str = "") -> NoReturn:
        tok = self.peek()
        if tok is None:
            self.fail(f"expected {what}", len(self.text) + 1, after)
        self.fail(f"expected {what}", tok.column, f", found {tok.value!r}{after}")

    def peek(self) -> _Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def at_op(self, op: str) -> bool:
        tok = self.peek()
        return tok is not None and tok.kind == "op" and tok.value == op

    def parse(self) -> Predicate:
        if not self.tokens:
            raise FilterError("empty expression", self.text)
        pred = self.or_()
        if self.peek() is not None:
            self.expected("'&&', '||' or the end of the expression")
        return pred

    def or_(self) -> Predicate:
        terms = [self.and_()]
        while self.at_op("||"):
            self.i += 1
            terms.append(self.and_())
        return _any(terms)

    def and_(self) -> Predicate:
        terms = [self.unary()]
        while self.at_op("&&"):
            self.i += 1
            terms.append(self.unary())
        return _all(terms)

    def unary(self) -> Predicate:
        tok = self.peek()
        if tok is None or (tok.kind == "op" and tok.value not in ("!", "(")):
            self.expected(_OPERAND)
        self.i += 1
        kind, value, col = tok
        if kind == "op":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                self.fail(f"expression nests deeper than {MAX_DEPTH} levels", col)
            if value == "!":
                inner = self.unary()
                self.depth -= 1
                return lambda r, i: not inner(r, i)
            inner = self.or_()
            if not self.at_op(")"):
                self.expected("'&&', '||' or ')'", f"; the '(' at column {col} is open")
            self.i += 1
            self.depth -= 1
            return inner
        nxt = self.peek()
        if kind == "word" and nxt and nxt.kind == "op" and nxt.value in _COMPARE_OPS:
            self.i += 1
            operand = self.peek()
            if operand is None or operand.kind == "op":
                self.expected(f"a value after {nxt.value!r}")
            self.i += 1
            return _comparison(self, value, nxt, operand)
        needle = value.encode()
        return lambda r, i: needle in r.payloads[i]


def _any(terms: list[Predicate]) -> Predicate:
    # A chain is one closure, not one per operator: `a || b || ...` of any length runs in
    # one frame.
    if len(terms) == 1:
        return terms[0]
    if len(terms) == 2:
        a, b = terms
        return lambda r, i: a(r, i) or b(r, i)

    def any_term(r: Batch, i: int) -> bool:
        # A plain loop: any() over a generator costs a generator per record, a third more.
        for t in terms:  # noqa: SIM110
            if t(r, i):
                return True
        return False

    return any_term


def _all(terms: list[Predicate]) -> Predicate:
    if len(terms) == 1:
        return terms[0]
    if len(terms) == 2:
        a, b = terms
        return lambda r, i: a(r, i) and b(r, i)

    def all_terms(r: Batch, i: int) -> bool:
        for t in terms:  # noqa: SIM110 (as in _any)
            if not t(r, i):
                return False
        return True

    return all_terms


def _comparison(parser: _Parser, name: str, op_token: _Token, operand_token: _Token
                ) -> Predicate:
    op, operand, col = op_token.value, operand_token.value, operand_token.column
    if name in ("level", "severity"):
        target = severity_from_name(operand)
        if target is None:
            parser.fail(f"unknown level {operand!r}", col, "; expected a name (debug, info, "
                        "notice, warn, error, crit, alert, emerg) or 0-7")
        # Severity numbers grow as records get less severe, so the comparison flips.
        cmp = {"==": lambda s: s == target, "!=": lambda s: s != target,
               ">=": lambda s: s <= target, ">": lambda s: s < target,
               "<=": lambda s: s >= target, "<": lambda s: s > target}[op]
        return lambda r, i: cmp(r.severity_bytes()[i])
    if op not in ("==", "!="):
        parser.fail(f"{name!r} compares with == or != only; found {op!r}", op_token.column)
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
