"""The compiled form of a filter: a tree of nodes, each selecting records of a batch.

`node.select(columns, candidates)` returns, in ascending order, the indices among
`candidates` (None: every record) of the records the node matches. Work is column-wise:
a leaf reads one column of the batch (payloads, severities, one JSON field), computed once
per batch, and tests it with C-level map/compress; `&&` hands its survivors to the next term,
`||` hands each term only what the terms before it did not match, so later terms look at
fewer records.

Records' fields are read through `Batch.fields()` and logd.fields only; the payload bytes are
read for bare words and for the message of a record that has no fields.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from itertools import chain, compress, filterfalse, repeat
from operator import eq, is_not
from typing import Any

from logd.fields import apps_of, source_of, text
from logd.record import Batch

_EMPTY: dict[str, Any] = {}
NUMBER_TYPES = (int, float)  # JSON numbers; bool is no number here


class Columns:
    """The columns of one batch the nodes of one filter read, each made at most once."""

    __slots__ = ("_apps", "_messages", "_payloads", "_values", "batch", "ends", "n", "raw",
                 "starts")

    def __init__(self, batch: Batch) -> None:
        self.batch = batch
        self.n = batch.count
        # A lines block not yet split: words are searched in it as a whole (C-level), and
        # the lines they were found in remember where they start and end.
        self.raw = batch.raw if batch.raw is not None and batch.count > 1 else None
        self.starts: dict[int, int] = {}
        self.ends: dict[int, int] = {}
        self._payloads: list[bytes] | None = None
        self._messages: list[bytes] | None = None
        self._apps: list[str] | None = None
        self._values: dict[tuple[str, ...], list[Any]] = {}

    def payloads(self) -> list[bytes]:
        if self._payloads is None:
            # Not kept on the batch: a batch routed whole waits in buffers as its lines block.
            self._payloads = self.batch.payloads_for_a_look()
        return self._payloads

    def messages(self) -> list[bytes]:
        """Each record's message as UTF-8 bytes: its `message` field (as logd.fields reads
        it), else the whole payload."""
        if self._messages is None:
            fields = self.batch.fields()
            payloads = self.payloads()
            if fields.count(None) == len(fields):
                self._messages = payloads
            else:
                self._messages = [p if o is None else text(o.get("message", "")).encode()
                                  for o, p in zip(fields, payloads, strict=True)]
        return self._messages

    def apps(self) -> list[str]:
        if self._apps is None:
            self._apps = apps_of(self.batch.fields(), self.batch.source)
        return self._apps

    def sources(self) -> list[str]:
        source = self.batch.source
        return [source_of(o, source) for o in self.batch.fields()]

    def values(self, path: tuple[str, ...]) -> list[Any]:
        """The value at `path` of each record's fields; None where there is none."""
        col = self._values.get(path)
        if col is None:
            fields = self.batch.fields()
            dicts = [_EMPTY if o is None else o for o in fields] if None in fields else fields
            if len(path) == 1:
                col = list(map(dict.get, dicts, repeat(path[0])))  # type: ignore[arg-type]
            else:
                col = [resolve(o, path) for o in dicts]
            self._values[path] = col
        return col


def resolve(obj: Any, path: tuple[str, ...]) -> Any:
    """The value at a dotted path: at each level the longest run of the path's parts that is
    a key there, joined by dots, wins (`service.name` is a key of its own in OTLP
    attributes); None when the path leads nowhere."""
    k, n = 0, len(path)
    while k < n:
        if not isinstance(obj, dict):
            return None
        for j in range(n, k, -1):
            key = path[k] if j == k + 1 else ".".join(path[k:j])
            if key in obj:
                obj = obj[key]
                k = j
                break
        else:
            return None
    return obj


class Node:
    def select(self, c: Columns, cand: Sequence[int] | None) -> list[int]:
        raise NotImplementedError


Test = Callable[[Iterable[Any]], Iterable[Any]]  # column values -> truthy per value


class Leaf(Node):
    """A test applied to one column."""

    __slots__ = ("column", "test")

    def __init__(self, column: Callable[[Columns], Sequence[Any]], test: Test) -> None:
        self.column = column
        self.test = test

    def select(self, c: Columns, cand: Sequence[int] | None) -> list[int]:
        return _pick(self.column(c), self.test, c.n, cand)


class Severity(Node):
    """The record's severity is one of a set (syslog numbers 0-7)."""

    __slots__ = ("table",)

    def __init__(self, severities: Iterable[int]) -> None:
        table = bytearray(256)
        for s in severities:
            table[s] = 1
        self.table = bytes(table)

    def select(self, c: Columns, cand: Sequence[int] | None) -> list[int]:
        sevs = c.batch.severity_bytes()
        if cand is None:
            return list(compress(range(c.n), sevs.translate(self.table)))
        return list(compress(cand, map(self.table.__getitem__, map(sevs.__getitem__, cand))))


class Listener(Node):
    """A test of the listener's name: one answer for the whole batch."""

    __slots__ = ("test",)

    def __init__(self, test: Callable[[str], bool]) -> None:
        self.test = test

    def select(self, c: Columns, cand: Sequence[int] | None) -> list[int]:
        if not self.test(c.batch.source):
            return []
        return list(range(c.n)) if cand is None else list(cand)


class Not(Node):
    __slots__ = ("inner",)

    def __init__(self, inner: Node) -> None:
        self.inner = inner

    def select(self, c: Columns, cand: Sequence[int] | None) -> list[int]:
        hit = self.inner.select(c, cand)
        every = range(c.n) if cand is None else cand
        if not hit:
            return list(every)
        return list(filterfalse(set(hit).__contains__, every))


class And(Node):
    """Each term sees only the records the terms before it matched."""

    __slots__ = ("terms",)

    def __init__(self, terms: list[Node]) -> None:
        self.terms = terms

    def select(self, c: Columns, cand: Sequence[int] | None) -> list[int]:
        for t in self.terms:
            cand = t.select(c, cand)
            if not cand:
                return []
        assert cand is not None  # a chain has terms
        return list(cand)


class Or(Node):
    """Each term sees only the records the terms before it did not match."""

    __slots__ = ("terms", "words")

    def __init__(self, terms: list[Node]) -> None:
        self.terms = terms
        self.words = all(isinstance(t, Word) for t in terms)

    def select(self, c: Columns, cand: Sequence[int] | None) -> list[int]:
        if cand is None and c.raw is not None and self.words:
            # Each word searched in the whole block costs less than telling its search
            # which lines are left; the finds are merged.
            hits: set[int] = set()
            for t in self.terms:
                hits.update(t.select(c, None))
            return sorted(hits)
        found: list[list[int]] = []
        rest = cand
        last = len(self.terms) - 1
        for k, t in enumerate(self.terms):
            hit = t.select(c, rest)
            if not hit:
                continue
            found.append(hit)
            if k == last:
                break
            rest = list(filterfalse(set(hit).__contains__,
                                    range(c.n) if rest is None else rest))
            if not rest:
                break
        if len(found) <= 1:
            return found[0] if found else []
        return sorted(chain.from_iterable(found))  # disjoint ascending runs: a cheap merge


class Word(Node):
    """The payload contains a word. In a lines block the word is searched in the whole block
    and each find mapped to its line: a handful of C calls per line found, none per line
    passed over, and no split of the block into lines."""

    __slots__ = ("needle", "test")

    def __init__(self, needle: bytes) -> None:
        self.needle = needle
        self.test = contains(needle)

    def select(self, c: Columns, cand: Sequence[int] | None) -> list[int]:
        raw = c.raw
        if raw is None or b"\n" in self.needle:
            if raw is not None:
                return []  # no line of a block holds a line feed
            return _pick(c.payloads(), self.test, c.n, cand)
        if cand is None:
            return self.find_lines(c, raw)
        starts = c.starts
        if all(map(starts.__contains__, cand)):
            # Where earlier terms found these lines: search within each.
            find, needle, ends = raw.find, self.needle, c.ends
            return [i for i in cand if find(needle, starts[i], ends[i]) >= 0]
        if len(cand) * 4 >= c.n:
            return list(filter(set(self.find_lines(c, raw)).__contains__, cand))
        return _pick(c.payloads(), self.test, c.n, cand)

    def find_lines(self, c: Columns, raw: bytes) -> list[int]:
        """The indices of the lines of the block that hold the needle."""
        needle = self.needle
        find, rfind, count = raw.find, raw.rfind, raw.count
        starts, ends = c.starts, c.ends
        hits: list[int] = []
        pos = line = 0
        while True:
            at = find(needle, pos)
            if at < 0:
                return hits
            line += count(b"\n", pos, at)
            end = find(b"\n", at)  # the block ends with one
            hits.append(line)
            starts[line] = rfind(b"\n", pos, at) + 1 or pos
            ends[line] = end
            pos = end + 1
            line += 1


def _pick(col: Sequence[Any], test: Test, n: int, cand: Sequence[int] | None) -> list[int]:
    if cand is None:
        return list(compress(range(n), test(col)))
    return list(compress(cand, test(map(col.__getitem__, cand))))


# -- tests of values: one column of values in, one truth value per value out --

def contains(needle: bytes) -> Test:
    """Bytes that contain `needle`."""
    return lambda col: map(bytes.__contains__, col, repeat(needle))


def searches(pattern: re.Pattern[bytes]) -> Test:
    """Bytes `pattern` finds a match in."""
    return lambda col: map(pattern.search, col)


def equals_text(s: str) -> Test:
    """Texts (app, source: always strings) equal to `s`."""
    return lambda col: map(eq, col, repeat(s))


def text_in(strings: frozenset[str]) -> Test:
    return lambda col: map(strings.__contains__, col)


def text_searches(pattern: re.Pattern[bytes]) -> Test:
    return lambda col: (pattern.search(s.encode()) for s in col)


# JSON values: None is a missing field (and a null is no value, as before); a value that is
# not a string reads as its JSON text where a string is asked for.

def _value_text(v: Any) -> str | None:
    return v if type(v) is str else None if v is None else text(v)


def value_equals_text(s: str) -> Test:
    def test(col: Iterable[Any]) -> Iterable[bool]:
        return (v == s if type(v) is str else v is not None and text(v) == s for v in col)
    return test


def value_equals_number(x: int | float) -> Test:
    def test(col: Iterable[Any]) -> Iterable[bool]:
        return (type(v) in NUMBER_TYPES and v == x for v in col)
    return test


def value_compares(op: Callable[[Any, Any], bool], x: int | float) -> Test:
    def test(col: Iterable[Any]) -> Iterable[bool]:
        return (type(v) in NUMBER_TYPES and op(v, x) for v in col)
    return test


def value_in(strings: frozenset[str], numbers: frozenset[int | float]) -> Test:
    def test(col: Iterable[Any]) -> Iterable[bool]:
        return (v is not None and (_value_text(v) in strings
                                   or (type(v) in NUMBER_TYPES and v in numbers))
                for v in col)
    return test


def value_searches(pattern: re.Pattern[bytes]) -> Test:
    def test(col: Iterable[Any]) -> Iterable[Any]:
        return (v is not None and pattern.search(_value_text(v).encode())  # type: ignore[union-attr]
                for v in col)
    return test


def value_exists(col: Iterable[Any]) -> Iterable[bool]:
    return map(is_not, col, repeat(None))
