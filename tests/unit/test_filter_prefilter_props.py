"""The look at a JSON lines block before it is parsed (Filter._prefilter) only ever narrows
what a filter could match: with it and without it, a filter selects the same lines, with
values written with every JSON escape (\\uXXXX, surrogate pairs, \\/), duplicate keys,
dotted keys and values of every type, for text comparisons and regexes alike."""

from __future__ import annotations

import json
import random
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from logd import linescan
from logd.filters import FilterError, compile_filter
from logd.record import Batch
from testkit.props import examples

CHARS = ["a", "b", "-", "/", '"', "\\", "é", "\u2028", "\x7f", "\n", "\t", "😀", " ", ".",
         "1", "\ufffd", "\x00"]
TEXTS = st.lists(st.sampled_from(CHARS), max_size=4).map("".join)
KEYS = st.sampled_from(["a", "b", "a.b", "m", "level", "message"])


class Obj(list[tuple[str, Any]]):
    """A JSON object as its pairs, in order: duplicate keys are written as they are."""


def values(depth: int = 2) -> st.SearchStrategy[Any]:
    base = st.one_of(TEXTS, st.integers(-3, 50), st.sampled_from([True, False, None, 1.5, 1e20]))
    if depth == 0:
        return base
    inner = values(depth - 1)
    return st.one_of(base, st.lists(inner, max_size=2),
                     st.lists(st.tuples(KEYS, inner), max_size=3).map(Obj))


def string(s: str, rnd: random.Random) -> str:
    """`s` as a JSON string, each character escaped or not at random (as senders differ)."""
    out = ['"']
    for ch in s:
        c = ord(ch)
        if ch in '"\\' or c < 0x20:
            out.append(json.dumps(ch)[1:-1] if rnd.random() < 0.5 else f"\\u{c:04x}")
        elif rnd.random() < 0.2:
            if c > 0xFFFF:
                c -= 0x10000
                out.append(f"\\u{0xD800 + (c >> 10):04x}\\u{0xDC00 + (c & 0x3FF):04x}")
            else:
                out.append("\\/" if ch == "/" else f"\\u{c:04x}")
        else:
            out.append(ch)
    return "".join([*out, '"'])


def encode(v: Any, rnd: random.Random) -> str:
    if isinstance(v, str):
        return string(v, rnd)
    if isinstance(v, Obj):
        return "{" + ",".join(f"{string(k, rnd)}:{encode(x, rnd)}" for k, x in v) + "}"
    if isinstance(v, list):
        return "[" + ",".join(encode(x, rnd) for x in v) + "]"
    if isinstance(v, float) and rnd.random() < 0.5:
        return {1.5: "15e-1", 1e20: "1E20"}[v]
    return json.dumps(v)


def operand(t: str) -> str:
    return '"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"'


def expressions(texts: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    leaves = st.one_of(
        st.tuples(KEYS, texts).map(lambda k: f"{k[0]} == {operand(k[1])}"),
        st.tuples(KEYS, st.lists(texts, min_size=1, max_size=3)).map(
            lambda k: f"{k[0]} in [{', '.join(map(operand, k[1]))}]"),
        st.sampled_from(["a", "level >= warn", "exists(b)", "m != 'x'", "a =~ /é/",
                         "m in [1, 'b']", "m =~ /ab|ba/", "/ab/", "/a(b)?b|bb/",
                         "message =~ /^ab/", "a.b =~ /b(?i:A)b/", "b =~ /(?i)AB/",
                         "m =~ /rue|ull/", "a !~ /ab/"]),
    )
    return st.recursive(leaves, lambda inner: st.one_of(
        st.tuples(inner, inner).map(lambda p: f"({p[0]} && {p[1]})"),
        st.tuples(inner, inner).map(lambda p: f"({p[0]} || {p[1]})"),
        inner.map(lambda p: f"!({p})")), max_leaves=5)


RECORDS = st.tuples(st.lists(st.tuples(KEYS, values()), max_size=4).map(Obj), st.randoms())


@examples(300)
@given(st.lists(RECORDS, min_size=1, max_size=8), st.data())
def test_the_prefilter_never_drops_a_line_the_filter_matches(
        records: list[tuple[Obj, random.Random]], data: st.DataObject) -> None:
    # Operands are mostly the records' own strings: comparisons that hit.
    held = sorted({v for obj, _ in records for _, v in obj if isinstance(v, str)})
    texts = st.sampled_from(held) | TEXTS if held else TEXTS
    expression = data.draw(expressions(texts))
    lines = [encode(obj, rnd).encode("utf-8", "surrogatepass") for obj, rnd in records]
    block = b"".join(line + b"\n" for line in lines)
    try:
        flt = compile_filter(expression)
    except FilterError:
        return
    got = flt.select(Batch.from_lines(block, len(lines), "t", 0.0))
    if linescan.COMPILED and flt._prefilter is None:
        return  # nothing to compare with
    flt._prefilter = None
    assert got == flt.select(Batch.from_lines(block, len(lines), "t", 0.0)), expression
