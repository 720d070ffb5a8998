"""logd.filters.compile_filter: the expression language of routes and taps."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import TypeVar

import pytest

from logd import linescan
from logd.filters import FilterError, compile_filter
from logd.record import Batch

T = TypeVar("T")


def batch_of(payloads: list[bytes], source: str = "emitters") -> Batch:
    return Batch(list(payloads), None, source, 1700000000.0, sum(map(len, payloads)))


def picked(expression: str, batch: Batch) -> list[bytes]:
    return [batch.payloads[i] for i in compile_filter(expression).select(batch)]


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
    # Found by tests/unit/test_filters_props.py (minimal: `message==[null]` against
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


# -- reaching into records: regexes, paths, numbers, lists, exists --

RECORDS = batch_of([
    b'{"message": "request timeout", "metadata": {"region": "eu-west-1"}, '
    b'"attrs": {"user": {"id": 42}}, "duration_ms": 300, "level": "warn", "app": "web"}',
    b'{"message": "ok", "attrs": {"user": {"id": "42"}}, "duration_ms": 100, '
    b'"level": "error", "app_id": "api"}',
    b'{"attrs": {"user": {"id": 42.0}}, "duration_ms": 250, "level": "fatal"}',
    b"ERROR user timeout in plain text",
    b'{"attrs": {"user": null}, "duration_ms": true, "metadata": {"region": 1}}',
    b'{"service.name": "checkout", "service": {"name": "cart"}, "message": ["x"]}',
], source="lines")


def lines_batch(payloads: list[bytes], source: str = "lines") -> Batch:
    return Batch.from_lines(b"".join(p + b"\n" for p in payloads), len(payloads), source,
                            1700000000.0)


@pytest.mark.parametrize(("expression", "want"), [
    ('metadata.region == "eu-west-1"', [0]),
    ("metadata.region == 1", [4]),          # the number 1
    ('metadata.region == "1"', [4]),        # its JSON text
    ("attrs.user.id == 42", [0, 2]),        # 42 and 42.0, not "42"
    ('attrs.user.id == "42"', [0, 1]),      # the string, and the number's JSON text
    ("attrs.user.id != 42", [1, 3, 4, 5]),
    ("duration_ms > 250", [0]),             # true is no number
    ("duration_ms >= 250", [0, 2]),
    ("duration_ms < 250 || duration_ms <= 99", [1]),
    ("exists(attrs.user)", [0, 1, 2]),      # null is no value
    ("exists(attrs.user.id) && !exists(metadata)", [1, 2]),
    ("level in [error, fatal]", [1, 2]),
    ("level in[warn]", [0]),
    ('app in ["web", "api"]', [0, 1]),
    ("app in [lines]", [2, 3, 4, 5]),       # no app: the listener's name
    ("service.name == checkout", [5]),      # the longest key that is there wins
    ("service == '{\"name\":\"cart\"}'", [5]),
    ("/timeout/", [0, 3]),                  # the message: a JSON record's, else the payload
    ("/^ERROR user/", [3]),
    ('/^\\["x"\\]$/', [5]),                 # a message that is no string: its JSON text
    ("/^$/", [2, 4]),                       # no message: ""
    ("message =~ /time/", [0]),             # a field: the JSON field only
    ("app =~ /^a/ || app !~ /./", [1]),
    ("attrs.user.id =~ /^4/", [0, 1, 2]),   # the JSON text of 42.0 is "42.0"
    ("metadata.region !~ /eu/", [1, 2, 3, 4, 5]),
    ("listener =~ /^li/", [0, 1, 2, 3, 4, 5]),
    ("(timeout || ok) && duration_ms > 200", [0]),
])
def test_fields_regexes_numbers_and_lists(expression: str, want: list[int]) -> None:
    assert compile_filter(expression).select(RECORDS) == want
    same = lines_batch(RECORDS.payloads)
    assert compile_filter(expression).select(same) == want


def test_a_quoted_number_is_text_and_an_unquoted_one_a_number() -> None:
    batch = batch_of([b'{"n": 1}', b'{"n": 1.0}', b'{"n": "1"}', b'{"n": true}', b'{"n": "01"}',
                      b'{"n": 10}'])
    assert compile_filter("n == 1").select(batch) == [0, 1]
    assert compile_filter('n == "1"').select(batch) == [0, 2]
    assert compile_filter("n == 1.0").select(batch) == [0, 1]
    assert compile_filter("n == 1e1").select(batch) == [5]
    assert compile_filter("n == 01").select(batch) == [4]     # no JSON number: text
    assert compile_filter("n == true").select(batch) == [3]
    assert compile_filter("n in [1, \"01\"]").select(batch) == [0, 1, 4]


def test_words_in_a_lines_block_select_as_in_a_payload_list() -> None:
    payloads = [b"INFO user", b"ERROR disk", b"WARN auth", b"", b"ERROR payment ERROR",
                b"WARN", b"x ERROR user", b"{\"message\": \"WARN user\"}"]
    expression = "(ERROR || WARN) && (user || auth || payment)"
    assert compile_filter(expression).select(lines_batch(payloads)) == [2, 4, 6, 7]
    assert compile_filter(expression).select(batch_of(payloads)) == [2, 4, 6, 7]
    assert compile_filter('"R\nW" || !ERROR').select(lines_batch(payloads)) == [0, 2, 3, 5, 7]
    # Where the first words are in few lines, the block is searched whole and never split;
    # where they are found once per line or more, each line is looked at: the same answer
    # either way.
    sparse = [b"INFO x user"] * 40 + [b"ERROR user", b"WARN x"]
    block = lines_batch(sparse)
    assert compile_filter(expression).select(block) == [40]
    assert block.raw is not None and block._payloads is None
    dense = [b"ERROR x user", b"WARN x"] * 20 + [b"ERROR WARN x"]
    block = lines_batch(dense)
    flt = compile_filter(expression)
    assert flt.select(block) == list(range(0, 40, 2))
    # The compiled scan looks at each line of the block without splitting it; the Python
    # path splits it, and the router's part of it is made of that split.
    assert (block._payloads is None) == linescan.COMPILED
    flt._program = None
    block = lines_batch(dense)
    assert flt.select(block) == list(range(0, 40, 2))
    assert block._payloads is not None
    block.compact()
    assert block._payloads is None and block.payloads == dense  # a buffer keeps the block


@pytest.mark.parametrize(
    ("expression", "message", "column"),
    [
        ("x > abc", "'>' compares numbers; expected a number at column 5, found 'abc'", 5),
        ('x > "3"', "found '3' (a quoted value is text)", 6),
        ("x =~ 'a'", "expected a /regex/ after '=~' at column 7, found 'a'", 7),
        ("level =~ /x/", "'level' compares with == != >= > <= < or in; found '=~' at column 7",
         7),
        ("/a(/", "bad regex: missing ), unterminated subpattern at column 3", 3),
        ("x =~ /a[/", "bad regex: unterminated character set at column 8", 8),
        ("/abc", "regex opened at column 1 is not closed; expected a closing /", 1),
        ("a == /x/", "expected a value after '==' at column 6, found '/x/'", 6),
        ("a in [", "expected a value in the list at column 7", 7),
        ("a in []", "expected a value in the list at column 7, found ']'", 7),
        ("a in [b c]", "expected ',' or ']' at column 9, found 'c'", 9),
        ("a in b", "expected '[' after 'in' at column 6, found 'b'", 6),
        ("level in [warn, nope]", "unknown level 'nope' at column 17", 17),
        ("exists(", "expected a field name after 'exists(' at column 8", 8),
        ("exists(a b)", "expected ')' after the field name at column 10, found 'b'", 10),
        ("a..b == 1", "expected a field name or a path like a.b.c, found 'a..b' at column 1", 1),
        ("app >= 3", "'app' compares with == or != only; found '>=' at column 5", 5),
    ],
)
def test_bad_expressions_of_the_new_forms(expression: str, message: str, column: int) -> None:
    with pytest.raises(FilterError, match=re.escape(message)) as info:
        compile_filter(expression)
    assert info.value.column == column
    assert "\n" not in info.value.message
    line, caret = info.value.pointer()
    assert line == expression and caret == " " * (column - 1) + "^"


def test_a_word_with_a_rare_byte_is_found_where_that_byte_is_common_too() -> None:
    # "ERROR" is looked for by its rarest byte first; a block full of that byte (more
    # than the look-ups it is worth) is searched for the whole word instead, from where
    # the first search stopped.
    payloads = [b"ERROR first"] + [b"RRRR no" for _ in range(100)] + [b"x ERROR", b"ERRO",
                                                                       b"RERROR"]
    want = [0, 101, 103]
    assert compile_filter("ERROR").select(lines_batch(payloads)) == want
    assert compile_filter("ERROR").select(batch_of(payloads)) == want
    assert compile_filter("ERROR && !x").select(lines_batch(payloads)) == [0, 103]


def test_an_or_of_words_looks_for_the_most_frequent_first_with_the_same_answer() -> None:
    # In a block whose lines mostly hold WARN, WARN is looked for before ERROR; the
    # records picked, and their order, do not change.
    payloads = [b"WARN user"] * 30 + [b"ERROR user", b"WARN", b"ERROR WARN user", b"x"]
    want = [*range(30), 30, 32]
    for expression in ["(ERROR || WARN) && user", "(WARN || ERROR) && user"]:
        assert compile_filter(expression).select(lines_batch(payloads)) == want
        assert compile_filter(expression).select(batch_of(payloads)) == want


def test_field_values_narrow_the_lines_parsed_with_the_same_answer() -> None:
    """`metadata.region == "eu-west-1"` on JSON lines parses only the lines that hold
    eu-west-1 or a backslash: a value written with escapes still matches, one elsewhere in
    the line does not, and a number-like operand is never narrowed by its text."""
    payloads = [b'{"metadata": {"region": "eu-west-1"}}',
                b'{"metadata": {"region": "us-east-1"}, "note": "eu-west-1"}',
                b'{"metadata": {"region": "eu\\u002dwest-1"}}',
                b'{"metadata": {"region": "us-east-1"}}',
                b'not json eu-west-1',
                b'{"n": 4.2e1}', b'{"n": "42.0"}', b'{"n": 42}']
    flt = compile_filter('metadata.region == "eu-west-1"')
    assert (flt._prefilter is not None) == linescan.COMPILED
    block = lines_batch(payloads)
    assert flt.select(block) == [0, 2]
    if linescan.COMPILED:
        assert block._fields is None  # the block itself was never parsed
    assert compile_filter('metadata.region in ["eu-west-1", "nowhere"]').select(
        lines_batch(payloads)) == [0, 2]
    assert compile_filter('n == "42.0"').select(lines_batch(payloads)) == [5, 6]
    assert compile_filter('n == 42').select(lines_batch(payloads)) == [5, 7]
    assert compile_filter('ERROR || metadata.region == "eu-west-1"').select(
        lines_batch(payloads)) == [0, 2]


def test_fields_of_syslog_lines_are_never_narrowed_by_their_text() -> None:
    """A syslog facility's name is derived from the PRI number: no line holds it."""
    lines = [b"<34>1 2026-12-02T10:00:00Z web1 sshd 42 ID1 - login failed",
             b"<13>1 2026-12-02T10:00:01Z web1 app 43 ID2 - hello auth"]
    block = b"".join(line + b"\n" for line in lines)
    batch = Batch.from_lines(block, 2, "syslog", 0.0, form="syslog")
    assert compile_filter('facility == "auth"').select(batch) == [0]


@pytest.mark.timeout(10)
def test_an_empty_quoted_word_matches_every_line_on_every_path() -> None:
    """"" is found at the very end of a block too, past its last line: the Python search
    of a whole block once looped there forever."""
    block = b"a x\nb\n"
    for expression, want in [('"" && level >= warn', []), ('!""', []), ('"" || /x/', [0, 1]),
                             ('""', [0, 1]), ('a && ""', [0])]:
        flt = compile_filter(expression)
        assert flt.select(Batch.from_lines(block, 2, "t", 0.0)) == want, expression
        flt._program = flt._prefilter = None
        assert flt.select(Batch.from_lines(block, 2, "t", 0.0)) == want, expression


@pytest.mark.parametrize("regex, needles", [
    (rb"user|payment", (b"user", b"payment", b"\\")),
    (rb"pay(ment)?s", (b"pay", b"\\")),
    (rb"users|user", (b"user", b"\\")),          # a common prefix taken out of the branch
    (rb"^log(in|out)$", (b"log", b"\\")),
    (rb"[0-9]+ms", (b"ms", b"\\")),
    (rb"(?i)user", None),                       # any case: not narrowed
    (rb"a|bc", None),                           # one alternative without two letters
    (rb"x.y", None),
    (rb"4.2e1", None),                          # digits: a number's text may differ
])
def test_what_a_regex_needs_a_json_line_to_hold(regex: bytes,
                                                needles: tuple[bytes, ...] | None) -> None:
    from logd.filter_nodes import regex_needles
    assert regex_needles(re.compile(regex)) == needles


def test_a_regex_narrows_json_lines_with_the_same_answer() -> None:
    payloads = [b'{"message": "user login"}', b'{"message": "other", "note": "user"}',
                b'{"message": "us\\u0065r"}', b'plain user line', b'{"message": 1}',
                b'{"message": {"user": true}}']
    flt = compile_filter("/user|payment/")
    assert (flt._prefilter is not None) == linescan.COMPILED
    assert flt.select(lines_batch(payloads)) == [0, 2, 3, 5]
    flt._prefilter = None
    assert flt.select(lines_batch(payloads)) == [0, 2, 3, 5]
