"""Properties of route filters: compiled expressions select what a plain evaluator says.

Expressions are drawn as trees from the grammar in logd/filters.py and printed as text with
random spacing and only the parentheses precedence needs (plus some that it does not);
records are JSON objects (nested objects, numbers, strings, missing fields, dotted keys),
plain text and syslog lines, as a list of payloads or as one lines block. The reference below
evaluates the tree record by record, reading fields as logd/fields.py documents them and
typing operands as the README says, without the daemon's code.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from logd.filters import FilterError, compile_filter
from logd.record import Batch
from testkit.props import examples, level_severity

# -- the expression tree and its text --


@dataclass(frozen=True)
class Word:
    needle: str
    quoted: str  # the quote character, or "" for a bare word where the needle allows


@dataclass(frozen=True)
class Compare:
    name: str
    op: str
    operand: str | int  # a field's operand is an index into the values of the records
    quoted: str


@dataclass(frozen=True)
class Not:
    inner: Node


@dataclass(frozen=True)
class And:
    left: Node
    right: Node


@dataclass(frozen=True)
class Or:
    left: Node
    right: Node


@dataclass(frozen=True)
class Regex:
    pattern: str  # on the message


@dataclass(frozen=True)
class Match:
    name: str
    op: str  # =~ or !~
    pattern: str


@dataclass(frozen=True)
class Exists:
    name: str


@dataclass(frozen=True)
class Order:
    name: str
    op: str
    number: str  # as written


@dataclass(frozen=True)
class In:
    name: str
    operands: tuple[str | int, ...]  # ints: indices into the records' values, as Compare
    quoted: tuple[str, ...]


Node = Word | Compare | Not | And | Or | Regex | Match | Exists | Order | In

VOCABULARY = ["ERROR", "warn", "user", "auth", "disk full", "a", "b", "7", "*", "true",
              "web", "billing", "ok", "x y", 'say "hi"', "back\\slash", "it's", "é", "\n"]
BARE = re.compile(r"""[^\s()!&|=<>"']+""")
QUOTES = st.sampled_from(["", '"', "'"])


def bare(text: str, q: str) -> bool:
    """Whether `text` is written unquoted: asked to be, and it can be (a '/' opens a regex)."""
    return not q and BARE.fullmatch(text) is not None and not text.startswith("/")


def quote(text: str, q: str) -> str:
    if bare(text, q):
        return text
    q = q or '"'
    # Backslash escapes: the ones needed, and now and then one that is not (\a is a).
    out = [("\\" + c if c in (q, "\\") or (c.isalpha() and i % 3 == 0) else c)
           for i, c in enumerate(text)]
    return q + "".join(out) + q


WORDS = st.builds(Word, st.sampled_from(VOCABULARY) | st.text("abcERX*.:/-", min_size=1,
                                                                max_size=4), QUOTES)

LEVEL_NAMES = ["emerg", "panic", "alert", "crit", "critical", "fatal", "err", "error", "warn",
               "warning", "notice", "info", "debug", "trace", *map(str, range(8))]
TEXT_FIELDS = ("app", "source", "listener")
FIELDS = ["app", "source", "listener", "event", "n", "message", "app_id", "tags", "level2",
          "attrs.user.id", "metadata.region", "service.name", "attrs.user", "n.a"]
FIELD_VALUES = ["web", "billing", "emitters", "http", "login", "1", "0", "-3", "true", "false",
                "0.5", "[1,2]", '{"a":1}', "null", "", "x y", "é", "42", "1.0", "1e2", "007",
                "-0"]
PATTERNS = ["a", "^E", "user|auth", "[0-9]+", "y$", "(?i)error", "^$", "é", r"\d\.", "^\\[",
            r"\/", "b.c"]
NUMBERS = ["0", "1", "-3", "0.5", "42", "1e2", "-2.25", "9"]
LEVEL_OPERANDS = st.tuples(st.sampled_from(LEVEL_NAMES), st.integers(0, 15)).map(
    lambda t: "".join(c.upper() if t[1] >> (i % 4) & 1 else c for i, c in enumerate(t[0])))

COMPARISONS = (
    st.builds(Compare, st.sampled_from(["level", "severity"]),
              st.sampled_from(["==", "!=", ">=", ">", "<=", "<"]), LEVEL_OPERANDS, QUOTES)
    | st.builds(Compare, st.sampled_from(FIELDS), st.sampled_from(["==", "!="]),
                st.integers(0, 63), QUOTES)
    | st.builds(Regex, st.sampled_from(PATTERNS))
    | st.builds(Match, st.sampled_from(FIELDS), st.sampled_from(["=~", "!~"]),
                st.sampled_from(PATTERNS))
    | st.builds(Exists, st.sampled_from([f for f in FIELDS if f != "listener"]))
    | st.builds(Order, st.sampled_from([f for f in FIELDS if f not in TEXT_FIELDS]),
                st.sampled_from([">=", ">", "<=", "<"]), st.sampled_from(NUMBERS))
    | st.lists(st.tuples(st.integers(0, 63), QUOTES), min_size=1, max_size=3).flatmap(
        lambda items: st.builds(In, st.sampled_from(FIELDS),
                                st.just(tuple(i for i, _ in items)),
                                st.just(tuple(q for _, q in items))))
    | st.builds(In, st.sampled_from(["level", "severity"]),
                st.lists(LEVEL_OPERANDS, min_size=1, max_size=3).map(tuple),
                st.lists(QUOTES, min_size=3, max_size=3).map(tuple)))


def extend(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    return (st.builds(Not, children) | st.builds(And, children, children)
            | st.builds(Or, children, children))


TREES = st.recursive(WORDS | COMPARISONS, extend, max_leaves=8)

PRECEDENCE: dict[type, int] = {Or: 1, And: 2, Not: 3, Word: 4, Compare: 4, Regex: 4, Match: 4,
                               Exists: 4, Order: 4, In: 4}
SPACES = st.sampled_from(["", " ", "  ", "\t"])


def value_of(operand: str | int, values: list[str]) -> str:
    return operand if isinstance(operand, str) else values[operand % len(values)]


def operand_of(node: Compare, values: list[str]) -> str:
    return value_of(node.operand, values)


def list_word(text: str, q: str) -> str:
    """An element of an `in` list: a bare one holds no comma or bracket either."""
    if bare(text, q) and not any(c in text for c in ",[]"):
        return text
    return quote(text, q or '"')


def regex_text(pattern: str) -> str:
    return "/" + pattern + "/"


def text_of(draw: st.DrawFn, node: Node, values: list[str], context: int = 0) -> str:
    """`node` as filter text: parenthesized where precedence needs it, sometimes where not."""
    sp = draw(SPACES)
    if isinstance(node, Word):
        text = quote(node.needle, node.quoted)
    elif isinstance(node, Compare):
        operand = quote(operand_of(node, values), node.quoted)
        text = f"{node.name}{sp}{node.op}{sp}{operand}"
    elif isinstance(node, Regex):
        text = regex_text(node.pattern)
    elif isinstance(node, Match):
        text = f"{node.name}{sp}{node.op}{sp}{regex_text(node.pattern)}"
    elif isinstance(node, Exists):
        text = f"exists({sp}{node.name}{sp})"
    elif isinstance(node, Order):
        text = f"{node.name}{sp}{node.op}{sp}{node.number}"
    elif isinstance(node, In):
        items = [list_word(value_of(o, values), q)
                 for o, q in zip(node.operands, node.quoted, strict=False)]
        text = f"{node.name} in{sp}[{sp}" + f"{sp},{draw(SPACES)}".join(items) + "]"
    elif isinstance(node, Not):
        text = "!" + sp + text_of(draw, node.inner, values, PRECEDENCE[Not])
    else:
        op = "&&" if isinstance(node, And) else "||"
        prec = PRECEDENCE[type(node)]
        # Both operators are associative in meaning; the right operand gets parentheses
        # at the same level so the text keeps the tree's shape.
        left = text_of(draw, node.left, values, prec)
        right = text_of(draw, node.right, values, prec + 1)
        text = f"{left}{sp}{op}{draw(SPACES)}{right}"
    if PRECEDENCE[type(node)] < context or draw(st.integers(0, 9)) == 0:
        text = "(" + sp + text + draw(SPACES) + ")"
    return text


# -- records --

SCALARS = (st.none() | st.booleans() | st.integers(-3, 9) | st.sampled_from([0.5, 1.0, -2.25])
           | st.sampled_from(FIELD_VALUES) | st.text("abé ", max_size=3))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=2)
                      | st.dictionaries(st.sampled_from(["a", "b"]), inner, max_size=2),
                      max_leaves=3)
# Digits of other scripts too: "0-7" means ASCII digits.
LEVELS = (st.sampled_from(LEVEL_NAMES).map(str.upper) | st.sampled_from(LEVEL_NAMES)
          | st.integers(-1, 9) | st.text(max_size=2) | SCALARS
          | st.text(st.characters(categories=["Nd", "No"]), min_size=1, max_size=2))

NUMBER_VALUES = (st.integers(-3, 50) | st.sampled_from([0.5, 1.0, -2.25, 42.0, 100, 1e2, -0.0])
                 | st.sampled_from(["42", "1", "0.5"]) | st.booleans() | st.none())
USERS = st.fixed_dictionaries({}, optional={"id": NUMBER_VALUES, "name": VALUES})
OBJECTS = st.fixed_dictionaries({}, optional={
    "app": VALUES, "app_id": VALUES, "level": LEVELS, "severity": LEVELS, "source": VALUES,
    "event": VALUES, "n": VALUES | NUMBER_VALUES, "message": st.sampled_from(VOCABULARY) | VALUES,
    "tags": VALUES, "level2": VALUES | NUMBER_VALUES,
    "attrs": st.fixed_dictionaries({}, optional={"user": USERS | VALUES}) | VALUES,
    "attrs.user": st.fixed_dictionaries({}, optional={"id": NUMBER_VALUES}),
    "metadata": st.fixed_dictionaries({}, optional={"region": st.sampled_from(
        ["eu-west-1", "us-east-1", "1"]) | VALUES}),
    "service.name": VALUES, "service": st.fixed_dictionaries({}, optional={"name": VALUES})})
PLAIN = st.lists(st.sampled_from(VOCABULARY) | st.text(max_size=3), max_size=4).map(" ".join)
SYSLOG = st.tuples(st.integers(0, 999), PLAIN).map(lambda t: f"<{t[0]}>{t[1]}")
PAYLOADS = (OBJECTS.map(lambda o: json.dumps(o, ensure_ascii=False)) | PLAIN | SYSLOG
            | st.sampled_from(["{broken", "[1, 2]", "<x>not pri", "{}", '"text"'])
            ).map(str.encode)


@dataclass
class Records:
    payloads: list[bytes]
    source: str
    severities: bytes | None  # from the wire (frames), when it said
    as_block: bool = False  # arrived as one lines block (no payload holds a line feed)

    def batch(self) -> Batch:
        if self.as_block and self.severities is None and not any(
                b"\n" in p for p in self.payloads):
            block = b"".join(p + b"\n" for p in self.payloads)
            return Batch.from_lines(block, len(self.payloads), self.source, 0.0)
        return Batch(list(self.payloads), self.severities, self.source, 0.0,
                     sum(map(len, self.payloads)))


WIRE_SEVERITIES = st.none() | st.lists(st.integers(0, 7), max_size=8).map(bytes)


@st.composite
def records(draw: st.DrawFn) -> Records:
    payloads = draw(st.lists(PAYLOADS, min_size=1, max_size=8))
    sevs = draw(WIRE_SEVERITIES)
    if sevs is not None:
        sevs = (sevs * len(payloads))[:len(payloads)] or None
    return Records(payloads, draw(st.sampled_from(["emitters", "http", "web"])), sevs,
                   draw(st.booleans()))


# -- the reference --

def json_text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, separators=(",", ":"),
                                                   ensure_ascii=False)


def obj_of(payload: bytes) -> dict[str, Any] | None:
    if not payload.startswith(b"{"):
        return None
    try:
        obj = json.loads(payload)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def severity(payload: bytes, wire: int | None) -> int:
    if wire is not None:
        return wire
    obj = obj_of(payload)
    if obj is not None:
        level = obj.get("level")
        found = level_severity(obj.get("severity") if level is None else level)
        return 6 if found is None else found
    m = re.match(rb"<(\d{1,3})>", payload)
    return int(m.group(1)) & 7 if m and int(m.group(1)) <= 191 else 6  # PRI: 0-191


def lookup(obj: Any, name: str) -> Any:
    """The value at a dotted path: at each level the longest run of parts that is a key."""
    parts = name.split(".")
    while parts:
        if not isinstance(obj, dict):
            return None
        for j in range(len(parts), 0, -1):
            key = ".".join(parts[:j])
            if key in obj:
                obj, parts = obj[key], parts[j:]
                break
        else:
            return None
    return obj


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def equals(obj: dict[str, Any] | None, name: str, source: str, operand: str,
           unquoted: bool) -> bool:
    """`name == operand` as the README types it."""
    if name in TEXT_FIELDS:
        return field_text(obj, name, source) == operand
    value = None if obj is None else lookup(obj, name)
    if value is None:
        return False
    if unquoted and JSON_NUMBER.fullmatch(operand):
        return is_number(value) and value == json.loads(operand)
    return json_text(value) == operand


def message(payload: bytes) -> bytes:
    obj = obj_of(payload)
    if obj is None:
        return payload
    return json_text(obj.get("message", "")).encode()


def field_text(obj: dict[str, Any] | None, name: str, source: str) -> str | None:
    if name == "app":
        if obj is None:
            return source
        for key in ("app_id", "app"):
            if obj.get(key) is not None:
                return json_text(obj[key])
        return source
    if name == "source":
        return source if obj is None or obj.get("source") is None else json_text(obj["source"])
    if name == "listener":
        return source
    value = None if obj is None else lookup(obj, name)
    return None if value is None else json_text(value)


def evaluate(node: Node, recs: Records, i: int, values: list[str]) -> bool:
    if isinstance(node, Word):
        return node.needle.encode() in recs.payloads[i]
    if isinstance(node, Not):
        return not evaluate(node.inner, recs, i, values)
    if isinstance(node, And):
        return evaluate(node.left, recs, i, values) and evaluate(node.right, recs, i, values)
    if isinstance(node, Or):
        return evaluate(node.left, recs, i, values) or evaluate(node.right, recs, i, values)
    payload, source = recs.payloads[i], recs.source
    wire = None if recs.severities is None else recs.severities[i]
    obj = obj_of(payload)
    if isinstance(node, Regex):
        return re.search(node.pattern.encode(), message(payload)) is not None
    if isinstance(node, Match):
        text = field_text(obj, node.name, source)
        found = text is not None and re.search(node.pattern.encode(), text.encode()) is not None
        return found == (node.op == "=~")
    if isinstance(node, Exists):
        return obj is not None and lookup(obj, node.name) is not None
    if isinstance(node, Order):
        value = None if obj is None else lookup(obj, node.name)
        if not is_number(value):
            return False
        x = json.loads(node.number)
        return {">=": value >= x, ">": value > x, "<=": value <= x, "<": value < x}[node.op]
    if isinstance(node, In):
        operands = [value_of(o, values) for o in node.operands]
        if node.name in ("level", "severity"):
            sevs = {level_severity(o) for o in operands}
            return severity(payload, wire) in sevs
        return any(equals(obj, node.name, source, o, bare(o, q) and not any(
            c in o for c in ",[]")) for o, q in zip(operands, node.quoted, strict=False))
    operand = operand_of(node, values)
    if node.name in ("level", "severity"):
        target = level_severity(operand)
        assert target is not None
        sev = severity(payload, wire)
        # "greater" is more severe: a lower number.
        return {"==": sev == target, "!=": sev != target, ">=": sev <= target,
                ">": sev < target, "<=": sev >= target, "<": sev > target}[node.op]
    return equals(obj, node.name, source, operand, bare(operand, node.quoted)) == (
        node.op == "==")


def expected(tree: Node, text: str, recs: Records, values: list[str]) -> list[int]:
    if text.strip() == "*":
        return list(range(len(recs.payloads)))
    return [i for i in range(len(recs.payloads)) if evaluate(tree, recs, i, values)]


# -- properties --

def values_in(recs: Records) -> list[str]:
    """What the records' fields read as: operands that make comparisons hit."""
    found = set()
    for p in recs.payloads:
        obj = obj_of(p)
        for name in FIELDS:
            value = field_text(obj, name, recs.source)
            if value is not None:
                found.add(value)
    return sorted(found)


@st.composite
def cases(draw: st.DrawFn) -> tuple[Records, Node, str, list[str]]:
    recs = draw(records())
    # Field comparisons pick operands the records hold, or others.
    values = [*values_in(recs), *FIELD_VALUES]
    tree = draw(TREES)
    return recs, tree, text_of(draw, tree, values), values


@examples(300)
@given(cases())
def test_compiled_filters_select_what_the_reference_says(
        case: tuple[Records, Node, str, list[str]]) -> None:
    recs, tree, text, values = case
    want = expected(tree, text, recs, values)
    flt = compile_filter(text)
    assert flt.select(recs.batch()) == want, text
    # Words on a lines block go to the compiled scan, and field values narrow the lines that
    # are parsed: without either, the Python path must say the same.
    if flt._program is not None or flt._prefilter is not None:
        flt._program = flt._prefilter = None
        assert flt.select(recs.batch()) == want, text


TOKENS = st.sampled_from(["(", ")", "!", "&&", "||", "==", "!=", ">=", "<", "&", "|", "=",
                          "level", "severity", "app", "listener", "warn", "x", "*", '"', "'",
                          '"a b"', "\\", " ", "\t", "\n"]) | st.characters() | st.text(max_size=3)


@examples(300)
@given(st.text(max_size=30) | st.lists(TOKENS, max_size=16).map("".join), records())
def test_any_text_compiles_or_fails_with_a_filter_error(text: str, recs: Records) -> None:
    try:
        flt = compile_filter(text)
    except FilterError as e:
        assert e.message and "\n" not in e.message
        if e.column is not None:
            assert 1 <= e.column <= len(text) + 1
            assert f"at column {e.column}" in e.message
            line, caret = e.pointer()
            assert caret.endswith("^") and len(caret) <= len(line) + 1
            assert str(e).endswith(e.message)
        return
    flt.select(recs.batch())  # and a filter that compiles runs on any records


FIXED = Records([b"<3>a b", b'{"level": "debug", "message": "a"}', b"plain", b"<6>b"],
                "emitters", None)


@examples(200)
@given(st.text(max_size=4) | st.text(st.characters(categories=["Nd", "No"]), max_size=2)
       | LEVEL_OPERANDS, st.sampled_from(["==", "!=", ">=", ">", "<=", "<"]),
       st.sampled_from(["level", "severity"]))
def test_a_level_operand_is_a_level_or_a_filter_error(operand: str, op: str,
                                                      name: str) -> None:
    node = Compare(name, op, operand, '"')
    text = f"{name} {op} {quote(operand, node.quoted)}"
    if level_severity(operand) is None:
        try:
            compile_filter(text)
        except FilterError as e:
            assert "unknown level" in str(e)
            return
        raise AssertionError(f"{text!r} compiled")
    assert compile_filter(text).select(FIXED.batch()) == expected(node, text, FIXED, [])


NESTINGS = st.sampled_from(["(", "!", "!(", "(!", "( "])
CHAINS = st.sampled_from([" && ", " || ", "&&", "||"])


@examples(60)
@given(NESTINGS, st.integers(0, 3000))
def test_any_nesting_depth_compiles_and_runs_or_is_refused(opener: str, depth: int) -> None:
    closer = ")" * opener.count("(")
    text = opener * depth + "a" + closer * depth
    try:
        flt = compile_filter(text)
    except FilterError as e:
        assert "nests deeper than" in str(e)
        return
    negations = opener.count("!") * depth
    want = [i for i, p in enumerate(FIXED.payloads) if (b"a" in p) != (negations % 2 == 1)]
    assert flt.select(FIXED.batch()) == want


@examples(60)
@given(CHAINS, st.integers(1, 5000))
def test_long_chains_compile_and_run(op: str, terms: int) -> None:
    flt = compile_filter(op.join(["zzz"] * (terms - 1) + ["a"]))
    picked = flt.select(FIXED.batch())
    if "|" in op or terms == 1:
        assert picked == [i for i, p in enumerate(FIXED.payloads) if b"a" in p]
    else:
        assert picked == []
