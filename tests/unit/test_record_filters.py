"""logd.record.Batch and logd.filters.compile_filter."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import TypeVar

import pytest

from logd.fields import severity_from_name
from logd.filters import FilterError, compile_filter
from logd.record import Batch

T = TypeVar("T")


def batch_of(payloads: list[bytes], source: str = "emitters") -> Batch:
    return Batch(list(payloads), None, source, 1700000000.0, sum(map(len, payloads)))


def picked(expression: str, batch: Batch) -> list[bytes]:
    return [batch.payloads[i] for i in compile_filter(expression).select(batch)]


# -- Batch --

def test_fields_parse_json_objects_only() -> None:
    batch = batch_of([b'{"app": "billing", "n": 1}', b"plain text", b"[1, 2]", b"{broken",
                      b'{"nested": {"a": true}}'])
    assert batch.fields() == [{"app": "billing", "n": 1}, None, None, None,
                              {"nested": {"a": True}}]
    assert batch.fields() is batch.fields()  # parsed once


def test_severity_from_syslog_pri() -> None:
    batch = batch_of([b"<11>sshd: failed", b"<0>kernel panic", b"<191>debug", b"<x>not pri"])
    assert batch.severity_bytes() == bytes([3, 0, 7, 6])


def test_severity_from_json_level_or_severity() -> None:
    batch = batch_of([b'{"level": "WARNING"}', b'{"severity": "crit"}', b'{"level": 5}',
                      b'{"level": "loud"}', b'{"msg": "no level"}'])
    assert batch.severity_bytes() == bytes([4, 2, 5, 6, 6])


def test_only_ascii_digits_are_level_numbers() -> None:
    # Found by tests/unit/test_filter_props.py: "፩" passes isdigit() and int() refuses it,
    # which raised ValueError out of the router; "٣" was read as 3.
    assert severity_from_name("7") == 7 and severity_from_name("07") == 7
    assert severity_from_name("\u1369") is None  # ፩
    assert severity_from_name("\u0663") is None  # ٣
    assert severity_from_name("\u00b2") is None  # ²
    batch = batch_of([b'{"level": "\xe1\x8d\xa9"}', b'{"level": "\xd9\xa3"}'])
    assert batch.severity_bytes() == bytes([6, 6])
    with pytest.raises(FilterError, match="unknown level"):
        compile_filter("level == \u00b2")


def test_severity_defaults_to_info() -> None:
    assert batch_of([b"hello", b"", b"WARN but plain"]).severity_bytes() == bytes([6, 6, 6])


def test_given_severities_are_kept() -> None:
    batch = Batch([b"a", b"b"], bytes([1, 7]), "s", 0.0, 2)
    assert batch.severity_bytes() == bytes([1, 7])


def test_from_lines_splits_payloads_and_counts_bytes() -> None:
    block = b"first\n{\"app\": \"x\"}\nthird line\n"
    batch = Batch.from_lines(block, 3, "lines", 1.0)
    assert len(batch) == 3
    assert batch.raw == block
    assert batch.payloads == [b"first", b'{"app": "x"}', b"third line"]
    assert batch.nbytes == len(block) - 3
    assert batch.fields()[1] == {"app": "x"}


def test_subset_keeps_payloads_severities_and_fields() -> None:
    batch = batch_of([b"<11>a", b"<12>b", b'{"level": "debug", "app": "c"}', b"d"])
    batch.fields()
    batch.severity_bytes()
    sub = batch.subset([0, 2])
    assert sub.payloads == [b"<11>a", b'{"level": "debug", "app": "c"}']
    assert sub.severity_bytes() == bytes([3, 7])
    assert sub.fields() == [None, {"level": "debug", "app": "c"}]
    assert sub.nbytes == len(b"<11>a") + len(b'{"level": "debug", "app": "c"}')
    assert sub.source == batch.source
    assert len(sub) == 2


def test_subset_of_framed_batch_keeps_frame_severities() -> None:
    chunk = b"".join((len(p) + 1).to_bytes(4, "big") + bytes([s]) + p
                     for s, p in [(2, b"x"), (5, b"yy"), (0, b"z")])
    batch = Batch([b"x", b"yy", b"z"], None, "s", 0.0, 4, frames=(chunk, 0, len(chunk)))
    sub = batch.subset([1, 2])
    assert sub.payloads == [b"yy", b"z"]
    assert sub.severity_bytes() == bytes([5, 0])


# -- filters --

LEVELS = batch_of([f"<{sev}>record {sev}".encode() for sev in range(8)])


def test_star_matches_everything() -> None:
    flt = compile_filter("*")
    assert flt.matches_all
    assert flt.select(LEVELS) == list(range(8))
    assert compile_filter("  * ").matches_all


def test_level_at_least_warn_picks_severities_zero_to_four() -> None:
    assert compile_filter("level >= warn").select(LEVELS) == [0, 1, 2, 3, 4]
    assert compile_filter("level > warn").select(LEVELS) == [0, 1, 2, 3]
    assert compile_filter("level <= info").select(LEVELS) == [6, 7]
    assert compile_filter("level < info").select(LEVELS) == [7]
    assert compile_filter("severity == 3").select(LEVELS) == [3]
    assert compile_filter("level != error").select(LEVELS) == [0, 1, 2, 4, 5, 6, 7]


def test_app_compares_json_app_id_then_app_then_source() -> None:
    batch = batch_of([b'{"app": "billing"}', b'{"app_id": "billing"}', b'{"app": "auth"}',
                      b"plain", b'{"msg": "no app"}',
                      b'{"app": "billing", "app_id": "web"}'], source="billing")
    assert compile_filter('app == "billing"').select(batch) == [0, 1, 3, 4]
    assert compile_filter("app != billing").select(batch) == [2, 5]
    assert compile_filter("app == web").select(batch) == [5]
    other = batch_of([b"plain", b'{"app": "billing"}'], source="emitters")
    assert compile_filter('app == "billing"').select(other) == [1]


def test_source_listener_and_json_field_comparisons() -> None:
    batch = batch_of([b'{"event": "login", "ok": true}', b'{"event": "logout"}', b"x",
                      b'{"source": "api"}'], source="lines")
    assert compile_filter("source == lines").select(batch) == [0, 1, 2]
    assert compile_filter("source == api").select(batch) == [3]
    assert compile_filter("listener == lines").select(batch) == [0, 1, 2, 3]
    assert compile_filter("listener != lines").select(batch) == []
    assert compile_filter("event == login").select(batch) == [0]
    assert compile_filter("ok == true").select(batch) == [0]


def test_field_comparisons_read_values_as_their_json_text() -> None:
    # Found by tests/unit/test_filter_props.py (minimal: `message==[null]` against
    # {"message": [null]}): fields compared as Python's str(), "[None]", while app and
    # source, templates and outputs read the same values as JSON text.
    batch = batch_of([b'{"message": [null]}', b'{"n": [1, 2], "m": {"a": 1}, "f": 1e20}',
                      b'{"n": 1.5, "ok": false, "m": null}'])
    assert compile_filter("message == [null]").select(batch) == [0]
    assert compile_filter("n == [1,2]").select(batch) == [1]
    assert compile_filter("m == '{\"a\":1}'").select(batch) == [1]
    assert compile_filter("f == 1e+20").select(batch) == [1]
    assert compile_filter("n == 1.5 && ok == false").select(batch) == [2]
    # null is no value, as a missing field is
    assert compile_filter("m != null").select(batch) == [0, 1, 2]
    assert compile_filter('app == "[1,2]"').select(batch_of([b'{"app": [1, 2]}'])) == [0]


def test_bare_and_quoted_words_match_substrings() -> None:
    batch = batch_of([b"disk full on /var", b"ERROR: disk", b"all fine", b"it's quoted"])
    assert picked("disk", batch) == [b"disk full on /var", b"ERROR: disk"]
    assert picked('"disk full"', batch) == [b"disk full on /var"]
    assert picked("'all fine'", batch) == [b"all fine"]
    assert picked('"it\'s"', batch) == [b"it's quoted"]
    assert picked("ERROR", batch) == [b"ERROR: disk"]


def test_boolean_operators_and_parentheses() -> None:
    batch = batch_of([b"a", b"b", b"a b", b"c", b"a c"])
    assert picked("a && b", batch) == [b"a b"]
    assert picked("a || c", batch) == [b"a", b"a b", b"c", b"a c"]
    assert picked("!a", batch) == [b"b", b"c"]
    assert picked("!(a || b)", batch) == [b"c"]
    assert picked("a && !(b || c)", batch) == [b"a"]


def test_and_binds_tighter_than_or() -> None:
    batch = batch_of([b"x", b"y z", b"x y", b"z"])
    # x || (y && z), not (x || y) && z
    assert picked("x || y && z", batch) == [b"x", b"y z", b"x y"]
    assert picked("(x || y) && z", batch) == [b"y z"]
    assert picked("y && z || x", batch) == [b"x", b"y z", b"x y"]


def test_seed_002_route_expression() -> None:
    batch = batch_of([b"ERROR user login failed", b"WARN auth token expired",
                      b"ERROR disk full", b"INFO payment ok", b"WARN payment retry",
                      b"DEBUG user"])
    assert picked("(ERROR || WARN) && (user || auth || payment)", batch) == [
        b"ERROR user login failed", b"WARN auth token expired", b"WARN payment retry"]


@pytest.mark.parametrize(
    ("expression", "message", "column"),
    [
        ("", "empty expression", None),
        ("   ", "empty expression", None),
        ("level >= bogus", "unknown level 'bogus' at column 10; expected a name", 10),
        ("(a", "expected '&&', '||' or ')' at column 3; the '(' at column 1 is open", 3),
        ("a &&", "expected a word, a quoted string, '(' or '!' at column 5", 5),
        ("app > 3", "'app' compares with == or != only; found '>' at column 5", 5),
        ("(a b)", "expected '&&', '||' or ')' at column 4, found 'b'", 4),
        ("a )", "expected '&&', '||' or the end of the expression at column 3, found ')'", 3),
        ("level ==", "expected a value after '==' at column 9", 9),
        ("level == &&", "expected a value after '==' at column 10, found '&&'", 10),
        ("|| a", "expected a word, a quoted string, '(' or '!' at column 1, found '||'", 1),
        ("a & b", "unexpected character '&' at column 3; expected '&&'", 3),
        ("a = b", "unexpected character '=' at column 3; expected '=='", 3),
        ('a || "b', "string opened at column 6 is not closed; expected a closing \"", 6),
    ],
)
def test_bad_expressions_raise_filter_error(expression: str, message: str,
                                            column: int | None) -> None:
    with pytest.raises(FilterError, match=re.escape(message)) as info:
        compile_filter(expression)
    assert info.value.column == column
    assert "\n" not in info.value.message


def test_error_shows_the_expression_with_a_caret_under_the_column() -> None:
    with pytest.raises(FilterError) as info:
        compile_filter("level >= warn && (user || ")
    assert info.value.message == ("expected a word, a quoted string, '(' or '!' at column 27")
    assert str(info.value) == (
        "level >= warn && (user || \n"
        "                          ^ expected a word, a quoted string, '(' or '!' at column 27")
    # the line of a multi-line expression that holds the column; tabs stay under tabs
    with pytest.raises(FilterError) as info:
        compile_filter("a &&\n\tb c")
    assert info.value.column == 9
    assert str(info.value).splitlines()[:2] == ["\tb c", "\t  ^ expected '&&', '||' or the "
                                                "end of the expression at column 9, found 'c'"]


def test_error_in_a_long_expression_shows_a_window_around_the_column() -> None:
    expression = " || ".join(f"word{i}" for i in range(100)) + " )"
    with pytest.raises(FilterError) as info:
        compile_filter(expression)
    line, caret = str(info.value).splitlines()
    assert len(line) <= 80 and line.startswith("...") and line.endswith(" )")
    assert line[caret.index("^")] == ")"


def test_nesting_is_limited_to_64_levels_while_parsing() -> None:
    batch = batch_of([b"a", b"b"])
    deepest = "(" * 30 + "!(" * 17 + "a" + ")" * 47  # 64 levels, an odd number of !
    assert compile_filter(deepest).select(batch) == [1]
    assert compile_filter("!" * 64 + "a").select(batch) == [0]
    for expression, column in [("(" * 65 + "a" + ")" * 65, 65), ("!" * 65 + "a", 65),
                               ("a || (" + "!(" * 40 + "a" + ")" * 41, 70),
                               ("(" * 5000 + "a" + ")" * 5000, 65)]:
        with pytest.raises(FilterError) as info:
            compile_filter(expression)
        assert info.value.message == f"expression nests deeper than 64 levels at column {column}"
        assert info.value.column == column


def frames_in_use() -> int:
    frame, n = sys._getframe(), 0
    while frame is not None:
        frame, n = frame.f_back, n + 1
    return n


def with_frames_left(n: int, fn: Callable[[], T]) -> T:
    """fn() run where only `n` more frames fit under the recursion limit."""
    if frames_in_use() < sys.getrecursionlimit() - n:
        return with_frames_left(n, fn)
    return fn()


def test_deepest_allowed_expression_parses_and_runs_in_a_few_hundred_frames() -> None:
    # 64 levels, each a negation and a parenthesis holding an && and an || chain: what
    # costs the most frames at parse and at run time. It must work with 250 frames left,
    # so a router called deep in the event loop cannot meet the recursion limit.
    inner = "a"
    for level in range(32):
        inner = f"!(x{level} || b && {inner})" if level % 2 else f"(!{inner} && b || x{level})"
    batch = batch_of([b"a b", b"b", b"x3"])
    flt = with_frames_left(250, lambda: compile_filter(inner))
    assert with_frames_left(250, lambda: flt.select(batch)) == flt.select(batch)
    parens = with_frames_left(250, lambda: compile_filter("(" * 64 + "b" + ")" * 64))
    assert with_frames_left(250, lambda: parens.select(batch)) == [0, 1]
    chain = compile_filter(" || ".join(["zzz"] * 10_000 + ["a"]))
    assert with_frames_left(250, lambda: chain.select(batch)) == [0]
    chain = compile_filter(" && ".join(["b"] * 10_000 + ["a"]))
    assert with_frames_left(250, lambda: chain.select(batch)) == [0]


def test_parsed_objects_are_serialized_only_when_payloads_are_asked_for() -> None:
    objs = [{"message": "a", "n": 1}, {"message": "bé"}]
    b = Batch.from_objects(objs, bytes([6, 3]), "http", 0.0, nbytes=99)
    assert b.fields() is objs and b.nbytes == 99  # an estimate until payloads exist
    assert b.payloads == [b'{"message":"a","n":1}', '{"message":"bé"}'.encode()]


def test_compact_makes_payloads_and_drops_parsed_objects() -> None:
    b = Batch.from_objects([{"message": "a"}], bytes([6]), "http", 0.0, nbytes=99)
    b.compact()
    assert b._fields is None
    assert b.payloads == [b'{"message":"a"}'] and b.nbytes == 15
    assert b.fields() == [{"message": "a"}]  # parsed again when asked for
    given = Batch.from_objects([{"message": "a"}], bytes([6]), "http", 0.0, nbytes=0,
                               payloads=[b'{ "message": "a" }'])
    given.compact()
    assert given.payloads == [b'{ "message": "a" }'] and given.nbytes == 18


# -- slices --

def _framed(payloads: list[bytes], sevs: list[int]) -> Batch:
    chunk = b"head" + b"".join((len(p) + 1).to_bytes(4, "big") + bytes([s]) + p
                               for s, p in zip(sevs, payloads, strict=True)) + b"rest"
    return Batch(list(payloads), None, "s", 1.0, sum(map(len, payloads)),
                 frames=(chunk, 4, len(chunk) - 4))


def test_slice_keeps_each_form_of_the_batch() -> None:
    payloads = [f"record {i}".encode() * (i % 7) for i in range(50)]
    sevs = [i % 8 for i in range(50)]
    block = b"".join(p + b"\n" for p in payloads)
    lines = Batch.from_lines(block, 50, "l", 2.0)
    part = lines.slice(10, 20)
    assert part._payloads is None and part.raw == b"".join(p + b"\n" for p in payloads[10:20])
    assert (part.count, part.nbytes, part.source, part.received) == \
        (10, sum(map(len, payloads[10:20])), "l", 2.0)
    framed = _framed(payloads, sevs)
    part = framed.slice(3, 9)
    assert part.severities is None and part._frames is not None  # still read lazily
    assert part.payloads == payloads[3:9] and part.severity_bytes() == bytes(sevs[3:9])
    objs = [{"message": f"m{i}"} for i in range(50)]
    parsed = Batch.from_objects(objs, bytes(sevs), "http", 3.0, 1000)
    part = parsed.slice(40, 50)
    assert part._payloads is None, "parsed objects are not serialized to slice them"
    assert part.fields() == objs[40:50] and part.severity_bytes() == bytes(sevs[40:50])
    assert part.nbytes == 200  # its share of the estimate
    assert lines.slice(0, 50) is lines and lines.slice(-2, None).payloads == payloads[48:]
    assert lines.slice(5, 5).count == 0


def test_pieces_cut_by_payload_bytes_and_keep_every_record_in_order() -> None:
    payloads = [bytes([97 + i % 26]) * (i * 37 % 300) for i in range(1000)]
    sevs = [i % 8 for i in range(1000)]
    block = b"".join(p + b"\n" for p in payloads)
    for batch in (Batch(list(payloads), bytes(sevs), "s", 1.0, sum(map(len, payloads))),
                  _framed(payloads, sevs), Batch.from_lines(block, 1000, "l", 1.0)):
        parts = batch.pieces(4096)
        assert len(parts) > 30
        assert [p for part in parts for p in part.payloads] == payloads
        assert sum(part.nbytes for part in parts) == batch.nbytes
        assert all(part.nbytes <= 4096 for part in parts)
        if batch.raw is None:
            assert b"".join(part.severity_bytes() for part in parts) == bytes(sevs)
    big = Batch([b"x" * 10_000, b"y", b"z" * 9000], None, "s", 1.0, 19_001)
    assert [p.payloads for p in big.pieces(4096)] == [[b"x" * 10_000], [b"y"], [b"z" * 9000]]
    small = Batch([b"a"], None, "s", 1.0, 1)
    assert small.pieces(4096) == [small]
