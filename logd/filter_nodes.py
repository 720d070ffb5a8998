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

import orjson

from logd import linescan
from logd.fields import apps_of, source_of, text
from logd.record import Batch

_EMPTY: dict[str, Any] = {}
NUMBER_TYPES = (int, float)  # JSON numbers; bool is no number here


class Columns:
    """The columns of one batch the nodes of one filter read, each made at most once."""

    __slots__ = ("_apps", "_messages", "_payloads", "_values", "batch", "ends", "n", "probed",
                 "raw")

    def __init__(self, batch: Batch, probe: Sequence[bytes] = ()) -> None:
        self.batch = batch
        self.n = batch.count
        # A lines block: words are searched in it as a whole (C-level); `ends` holds where
        # each line a word was found in ends, by where it starts. Where the first words
        # the filter looks for are in many lines, a look at each line costs less.
        self.raw = batch.raw
        # How often each probed word is in the block's first lines: an || of them looks
        # for the most frequent first (the others then look at fewer lines).
        self.probed: dict[bytes, int] = {}
        if self.raw is not None and probe and self._dense(self.raw, probe):
            self.raw = None
        self.ends: dict[int, int] = {}
        self._payloads: list[bytes] | None = None
        self._messages: list[bytes] | None = None
        self._apps: list[str] | None = None
        self._values: dict[tuple[str, ...], list[Any]] = {}

    def _dense(self, raw: bytes, needles: Sequence[bytes]) -> bool:
        """Whether the needles, together, are found once per line or more at the start of the
        block (a block comes from one connection, whose lines tend to be alike). A look at
        each line costs about one pass over it per needle; a search of the whole block costs
        a few calls per find: with seed 001's mix (ERROR or WARN in 28% of the lines) the
        search of the block costs 15% less CPU per line than a look at each."""
        end = min(len(raw), PROBE_BYTES)
        lines = raw.count(b"\n", 0, end)
        self.probed = {n: raw.count(n, 0, end) for n in needles}
        return sum(self.probed.values()) >= lines > 0

    def payloads(self) -> list[bytes]:
        if self._payloads is None:
            # Kept on the batch: routing a part of it splits it anyway (and a buffer drops
            # the split of a lines block routed whole: Batch.compact).
            self._payloads = self.batch.payloads
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
    """A test applied to one column. `needles`, when set: a record can pass only if its
    payload holds one of these bytes (a cheap look at a lines block before any parse)."""

    __slots__ = ("column", "needles", "test")

    def __init__(self, column: Callable[[Columns], Sequence[Any]], test: Test,
                 needles: tuple[bytes, ...] | None = None) -> None:
        self.column = column
        self.test = test
        self.needles = needles

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

    __slots__ = ("terms", "words")

    def __init__(self, terms: list[Node]) -> None:
        self.terms = terms
        self.words = all(map(_words_only, terms))

    def select(self, c: Columns, cand: Sequence[int] | None) -> list[int]:
        if cand is None and self.words and c.raw is not None:
            return line_indices(c.raw, self.starts_in(c, None))
        for t in self.terms:
            cand = t.select(c, cand)
            if not cand:
                return []
        assert cand is not None  # a chain has terms
        return list(cand)

    def starts_in(self, c: Columns, among: list[int] | None) -> list[int]:
        for t in self.terms:
            among = t.starts_in(c, among)  # type: ignore[attr-defined]
            if not among:
                return []
        assert among is not None
        return among


class Or(Node):
    """Each term sees only the records the terms before it did not match."""

    __slots__ = ("terms", "words")

    def __init__(self, terms: list[Node]) -> None:
        self.terms = terms
        self.words = all(map(_words_only, terms))

    def select(self, c: Columns, cand: Sequence[int] | None) -> list[int]:
        if cand is None and self.words and c.raw is not None:
            return line_indices(c.raw, self.starts_in(c, None))
        found: list[list[int]] = []
        rest = cand
        terms = self.terms
        if c.probed and self.words:
            probed = c.probed
            terms = sorted(terms, key=lambda t: -probed.get(t.needle, 0)
                           if isinstance(t, Word) else 0)
        last = len(terms) - 1
        for k, t in enumerate(terms):
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

    def starts_in(self, c: Columns, among: list[int] | None) -> list[int]:
        if among is None:
            # Each word searched in the whole block costs less than telling its search
            # which lines are left; the finds are merged.
            hits: set[int] = set()
            for t in self.terms:
                hits.update(t.starts_in(c, None))  # type: ignore[attr-defined]
            return sorted(hits)
        found: list[int] = []
        for t in self.terms:
            hit = t.starts_in(c, among)  # type: ignore[attr-defined]
            if hit:
                found.extend(hit)
                among = list(filterfalse(set(hit).__contains__, among))
                if not among:
                    break
        return sorted(found)


class Word(Node):
    """The payload contains a word. In a lines block the word is searched in the whole block
    (C-level), each find taken to its line's start and end: a few C calls per line found,
    none per line passed over, and no split of the block into lines."""

    __slots__ = ("needle", "rare_at", "test")

    def __init__(self, needle: bytes) -> None:
        self.needle = needle
        self.rare_at = rare_index(needle)
        self.test = contains(needle)

    def select(self, c: Columns, cand: Sequence[int] | None) -> list[int]:
        raw = c.raw
        if raw is None:
            return _pick(c.payloads(), self.test, c.n, cand)
        if cand is None:
            return line_indices(raw, self.starts_in(c, None))
        if len(cand) * 4 >= c.n:
            found = line_indices(raw, self.starts_in(c, None))
            return list(filter(set(found).__contains__, cand))
        return _pick(c.payloads(), self.test, c.n, cand)

    def starts_in(self, c: Columns, among: list[int] | None) -> list[int]:
        """Where the lines holding the needle start in the block, in order; with `among`
        (line starts found before), only those lines are searched."""
        raw, needle, ends = c.raw, self.needle, c.ends
        assert raw is not None
        if b"\n" in needle:
            return []  # no line of a block holds a line feed
        find = raw.find
        if among is not None:
            return [s for s in among if find(needle, s, ends[s]) >= 0]
        rfind = raw.rfind
        hits: list[int] = []
        pos = 0
        k = self.rare_at
        if k >= 0:
            # memchr (vectorized) finds the needle's rarest byte; each place it is found is
            # checked for the whole needle. Where that byte proves common in this block, the
            # search below takes over.
            rare, startswith = self.needle[k:k + 1], raw.startswith
            misses = 0
            at = find(rare, k)
            while at >= 0:
                if startswith(needle, at - k):
                    start = rfind(b"\n", pos, at - k) + 1 or pos
                    end = find(b"\n", at)
                    hits.append(start)
                    ends[start] = end
                    pos = end + 1
                    at = find(rare, pos + k)
                    continue
                misses += 1
                if misses > 64 + 4 * len(hits):
                    break
                at = find(rare, at + 1)
            else:
                return hits
        while True:
            at = find(needle, pos)
            if at < 0 or at == len(raw):  # b"" is found at the very end too: no line there
                return hits
            start = rfind(b"\n", pos, at) + 1 or pos
            end = find(b"\n", at)  # the block ends with one
            hits.append(start)
            ends[start] = end
            pos = end + 1


# Bytes by how common they are in log text, most common first (letters in English order,
# then digits and the usual punctuation): a needle's byte found late in this order, or not
# in it (capitals, brackets, UTF-8), is rare, and worth a memchr.
_COMMON = (b" etaoinshrdlcumwfgypbvkjxqz0123456789.:,-/=\"_'()\t"
           b"ETAOINSHRDLCUMWFGYPBVKJXQZ")
_COMMONNESS = {b: len(_COMMON) - i for i, b in enumerate(_COMMON)}
_RARE_ENOUGH = _COMMONNESS[ord("\t")]  # capitals, and what is not in the list


def rare_index(needle: bytes) -> int:
    """Where the needle's least common byte is, if it is rarer than lower-case letters,
    digits and the usual punctuation (memchr then finds candidates faster than a search for
    the whole needle); else -1."""
    if len(needle) < 2:
        return -1  # a one-byte search is a memchr already
    k = min(range(len(needle)), key=lambda i: _COMMONNESS.get(needle[i], 0))
    return k if _COMMONNESS.get(needle[k], 0) < _RARE_ENOUGH else -1


def line_indices(raw: bytes, starts: list[int]) -> list[int]:
    """The indices of the lines starting at `starts` (ascending): one count of line feeds,
    up to the last of them."""
    count = raw.count
    out: list[int] = []
    line = prev = 0
    for s in starts:
        line += count(b"\n", prev, s)
        out.append(line)
        prev = s
    return out


PROBE_BYTES = 32768


def probe_needles(node: Node) -> list[bytes]:
    """The words an expression of words looks for first, in the whole block: the
    first term of an &&, and each word of an || of words."""
    if not _words_only(node):
        return []
    while isinstance(node, And):
        node = node.terms[0]
    if isinstance(node, Word):
        return [node.needle]
    assert isinstance(node, Or)
    return [t.needle for t in node.terms if isinstance(t, Word)]


def word_program(node: Node) -> linescan.Program | None:
    """The expression as a program for linescan.match_lines, if it tests words only."""
    if isinstance(node, Word):
        return (linescan.WORD, node.needle)
    if isinstance(node, Not):
        inner = word_program(node.inner)
        return None if inner is None else (linescan.NOT, inner)
    if isinstance(node, (And, Or)):
        terms = tuple(map(word_program, node.terms))
        if None in terms:
            return None
        return (linescan.AND if isinstance(node, And) else linescan.OR, terms)
    return None


def prefilter_program(node: Node) -> linescan.Program | None:
    """A program of words every line the expression matches passes (a necessary condition,
    not a sufficient one), for a look at a lines block before its records are parsed; None
    when nothing can be said without parsing."""
    if isinstance(node, Word):
        return (linescan.WORD, node.needle)
    if isinstance(node, Leaf) and node.needles is not None:
        return (linescan.OR, tuple((linescan.WORD, n) for n in node.needles))
    if isinstance(node, And):
        terms = tuple(t for t in map(prefilter_program, node.terms) if t is not None)
        return (linescan.AND, terms) if terms else None
    if isinstance(node, Or):
        alternatives = []
        for t in node.terms:
            cond = prefilter_program(t)
            if cond is None:
                return None  # a term that may match any line
            alternatives.append(cond)
        return (linescan.OR, tuple(alternatives))
    return None


def text_needles(texts: Iterable[str]) -> tuple[bytes, ...] | None:
    """What a JSON payload holds if one of its string values is one of `texts`: each text
    as it is written inside a JSON string, or a backslash (the value was written with
    escapes). None when a text could also be the JSON text of a number, boolean, null,
    object or array (written in the payload in another form: 42 as 4.2e1)."""
    needles = []
    for t in texts:
        if "\ufffd" in t:
            return None  # what bytes that are not UTF-8 read as: not in the payload as such
        try:
            if type(orjson.loads(t)) is not str:
                return None
        except orjson.JSONDecodeError:
            pass
        needles.append(orjson.dumps(t)[1:-1])
    needles.append(b"\\")
    return tuple(needles)


def regex_needles(pattern: re.Pattern[bytes]) -> tuple[bytes, ...] | None:
    """What a JSON payload holds if a field's (or the message's) text matches `pattern`:
    for each alternative at the top of the regex, its longest run of letters that every
    match contains; or a backslash (the text written with escapes). Only runs of two or more
    ASCII letters and _ count: a field's text is its JSON text where it is no string, and
    such a run reads the same there as in the payload (a number's text has no two letters
    side by side; true, false and null are kept as written). None when the regex ignores
    case or an alternative has no such run."""
    try:
        from re import _parser  # type: ignore[attr-defined]
        parsed = _parser.parse(pattern.pattern, pattern.flags)
    except Exception:  # the private parser changed: no narrowing
        return None
    if parsed.state.flags & (re.IGNORECASE | re.LOCALE) or pattern.flags & re.IGNORECASE:
        return None
    items = list(parsed)
    branch = len(items) == 1 and items[0][0] is _parser.BRANCH
    alternatives = items[0][1][1] if branch else [items]
    needles = []
    for alternative in alternatives:
        best, run = b"", bytearray()
        for op, arg in [*alternative, (None, None)]:
            if op is _parser.LITERAL and (65 <= arg <= 90 or 97 <= arg <= 122 or arg == 95):
                run.append(arg)
                continue
            if len(run) > len(best):
                best = bytes(run)
            run.clear()
        if len(best) < 2:
            return None
        needles.append(best)
    needles.append(b"\\")
    return tuple(needles)


def _words_only(node: Node) -> bool:
    if isinstance(node, Word):
        return True
    return isinstance(node, (And, Or)) and all(map(_words_only, node.terms))


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
