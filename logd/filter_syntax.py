"""The text of a filter expression: tokens, the grammar, and FilterError with its caret.

    expr     := and ('||' and)*
    and      := unary ('&&' unary)*
    unary    := '!' unary | '(' expr ')' | primary
    primary  := /regex/                              the message matches
              | 'exists' '(' PATH ')'
              | NAME ('==' | '!=' | '>=' | '>' | '<=' | '<') VALUE
              | NAME ('=~' | '!~') /regex/
              | NAME 'in' '[' VALUE (',' VALUE)* ']'
              | WORD | "quoted" | 'quoted'           the payload contains it

The parser builds the nodes of logd/filter_nodes.py directly; the typing rules (what a
quoted or an unquoted operand compares as) are decided here, at compile time.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Any, NamedTuple, NoReturn

from logd import filter_nodes as fn
from logd.fields import severity_from_name

# Parentheses and negations may nest this deep. Parsing recurses about three frames per
# level and a compiled filter about three when it runs, in the router: the limit keeps both
# far below Python's recursion limit, and no route needs more than a few levels.
MAX_DEPTH = 64

_OPERAND = "a word, a quoted string, '(' or '!'"


class FilterError(ValueError):
    """What is wrong with an expression, and where.

    `message` is one line ending in "at column N" (and perhaps a hint) when it names a place;
    `column` is that N (1-based, counted in the whole expression) or None. str() is the
    message under the line of the expression it points into, with a caret at the column.
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


_TOKEN = re.compile(r"""
    \s*(?:
      (?P<op>&&|\|\||==|!=|=~|!~|>=|<=|>|<|!|\(|\))
    | "(?P<dq>(?:[^"\\]|\\.)*)"
    | '(?P<sq>(?:[^'\\]|\\.)*)'
    | /(?P<re>(?:[^/\\]|\\.)*)/
    | (?P<word>[^\s()!&|=<>"'/][^\s()!&|=<>"']*)
    )""", re.X | re.S)

# Inside the brackets of `NAME in [...]`: commas and brackets separate, words hold neither.
_LIST_TOKEN = re.compile(r"""
    \s*(?:
      (?P<op>[\[\],])
    | "(?P<dq>(?:[^"\\]|\\.)*)"
    | '(?P<sq>(?:[^'\\]|\\.)*)'
    | (?P<word>[^\s()!&|=<>"',\[\]]+)
    )""", re.X | re.S)

_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_COMPARE_OPS = {"==", "!=", ">=", "<=", ">", "<", "=~", "!~"}
_ORDER_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
_TEXT_FIELDS = ("app", "source", "listener")
_MEANT = {"&": "&&", "|": "||", "=": "=="}


class _Token(NamedTuple):
    kind: str  # "op", "word", "str" or "re"
    value: str
    column: int


def _unclosed(text: str, pos: int) -> NoReturn:
    c = text[pos]
    what = "regex" if c == "/" else "string"
    raise FilterError(f"{what} opened at column {pos + 1} is not closed; expected a closing "
                      f"{c}", text, pos + 1)


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    end = len(text.rstrip())
    in_list = False
    while pos < end:
        pattern = _LIST_TOKEN if in_list else _TOKEN
        m = pattern.match(text, pos)
        if not m or m.end() == pos:
            while text[pos].isspace():
                pos += 1
            c = text[pos]
            if c in "\"'/":
                _unclosed(text, pos)
            hint = f"; expected {_MEANT[c]!r}" if c in _MEANT else ""
            if in_list:
                hint = "; expected a value, ',' or ']'"
            raise FilterError(f"unexpected character {c!r} at column {pos + 1}{hint}",
                              text, pos + 1)
        group = m.lastgroup or ""
        start = m.start(group) + 1
        if group == "op":
            if m.group("op") == "]":
                in_list = False
            tokens.append(_Token("op", m.group("op"), start))
        elif group == "word":
            word = m.group("word")
            if word.startswith("in[") and tokens and tokens[-1].kind == "word" and not in_list:
                # `NAME in[a, b]`: the list starts right after `in`.
                tokens.append(_Token("word", "in", start))
                pos = start + 1
                in_list = True
                continue
            tokens.append(_Token("word", word, start))
        elif group == "re":
            tokens.append(_Token("re", m.group("re"), start - 1))  # the column of its '/'
        else:
            raw = m.group("dq") if m.group("dq") is not None else m.group("sq")
            tokens.append(_Token("str", re.sub(r"\\(.)", r"\1", raw, flags=re.S), start))
        pos = m.end()
        # `NAME in [`: the list's own tokens follow, up to its ']'.
        if (not in_list and len(tokens) >= 2 and tokens[-1].kind == "word"
                and tokens[-1].value == "in" and tokens[-2].kind == "word"):
            nxt = _LIST_TOKEN.match(text, pos)
            in_list = nxt is not None and nxt.group("op") == "["
    return tokens


def _number(token: _Token) -> int | float | None:
    """An unquoted operand written as a JSON number is a number; anything else is text."""
    if token.kind != "word":
        return None
    m = _JSON_NUMBER.fullmatch(token.value)
    if m is None:
        return None
    return float(token.value) if m.group(1) or m.group(2) else int(token.value)


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
        shown = f"/{tok.value}/" if tok.kind == "re" else tok.value
        self.fail(f"expected {what}", tok.column, f", found {shown!r}{after}")

    def peek(self, ahead: int = 0) -> _Token | None:
        k = self.i + ahead
        return self.tokens[k] if k < len(self.tokens) else None

    def at_op(self, op: str) -> bool:
        tok = self.peek()
        return tok is not None and tok.kind == "op" and tok.value == op

    def take_op(self, op: str, what: str) -> _Token:
        if not self.at_op(op):
            self.expected(what)
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def parse(self) -> fn.Node:
        if not self.tokens:
            raise FilterError("empty expression", self.text)
        node = self.or_()
        if self.peek() is not None:
            self.expected("'&&', '||' or the end of the expression")
        return node

    def or_(self) -> fn.Node:
        terms = [self.and_()]
        while self.at_op("||"):
            self.i += 1
            terms.append(self.and_())
        return terms[0] if len(terms) == 1 else fn.Or(terms)

    def and_(self) -> fn.Node:
        terms = [self.unary()]
        while self.at_op("&&"):
            self.i += 1
            terms.append(self.unary())
        return terms[0] if len(terms) == 1 else fn.And(terms)

    def unary(self) -> fn.Node:
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
                return fn.Not(inner)
            inner = self.or_()
            if not self.at_op(")"):
                self.expected("'&&', '||' or ')'", f"; the '(' at column {col} is open")
            self.i += 1
            self.depth -= 1
            return inner
        if kind == "re":
            pattern = self.regex(tok)
            return fn.Leaf(fn.Columns.messages, fn.searches(pattern), fn.regex_needles(pattern))
        nxt = self.peek()
        if kind == "word" and nxt is not None:
            if value == "exists" and nxt == ("op", "(", nxt.column):
                return self.exists()
            if nxt.kind == "op" and nxt.value in _COMPARE_OPS:
                self.i += 1
                return self.comparison(tok, nxt)
            if nxt.kind == "word" and nxt.value == "in":
                self.i += 1
                return self.membership(tok)
        return fn.Word(value.encode())

    def regex(self, tok: _Token) -> re.Pattern[bytes]:
        # The pattern runs on UTF-8 bytes, as records arrive: no decoding of payloads.
        try:
            return re.compile(tok.value.encode())
        except re.error as e:
            at = len(tok.value.encode()[:e.pos or 0].decode("utf-8", "replace"))
            self.fail(f"bad regex: {e.msg}", tok.column + 1 + at)
        except (OverflowError, RecursionError):
            self.fail("bad regex: too large", tok.column)

    def exists(self) -> fn.Node:
        self.i += 1  # the '('
        tok = self.peek()
        if tok is None or tok.kind != "word":
            self.expected("a field name after 'exists('")
        self.i += 1
        path = self.path(tok)
        self.take_op(")", "')' after the field name")
        return fn.Leaf(lambda c: c.values(path), fn.value_exists)

    def path(self, tok: _Token) -> tuple[str, ...]:
        parts = tuple(tok.value.split("."))
        if "" in parts:
            self.fail(f"expected a field name or a path like a.b.c, found {tok.value!r}",
                      tok.column)
        return parts

    def operand(self, op: _Token) -> _Token:
        tok = self.peek()
        if tok is None or tok.kind not in ("word", "str"):
            self.expected(f"a value after {op.value!r}")
        self.i += 1
        return tok

    def comparison(self, name_tok: _Token, op_tok: _Token) -> fn.Node:
        name, op = name_tok.value, op_tok.value
        if op in ("=~", "!~"):
            if name in ("level", "severity"):
                self.fail(f"{name!r} compares with == != >= > <= < or in; found {op!r}",
                          op_tok.column)
            tok = self.peek()
            if tok is None or tok.kind != "re":
                self.expected(f"a /regex/ after {op!r}")
            self.i += 1
            node = self.regex_match(name_tok, self.regex(tok))
            return fn.Not(node) if op == "!~" else node
        operand = self.operand(op_tok)
        if name in ("level", "severity"):
            target = self.level(operand)
            # Severity numbers grow as records get less severe, so the comparison flips.
            pick = {"==": lambda s: s == target, "!=": lambda s: s != target,
                    ">=": lambda s: s <= target, ">": lambda s: s < target,
                    "<=": lambda s: s >= target, "<": lambda s: s > target}[op]
            return fn.Severity(s for s in range(256) if pick(s))
        if op in _ORDER_OPS:
            if name in _TEXT_FIELDS:
                self.fail(f"{name!r} compares with == or != only; found {op!r}",
                          op_tok.column, "; > >= < <= compare numbers and levels")
            number = _number(operand)
            if number is None:
                quoted = " (a quoted value is text)" if operand.kind == "str" else ""
                self.fail(f"{op!r} compares numbers; expected a number", operand.column,
                          f", found {operand.value!r}{quoted}")
            path = self.path(name_tok)
            return fn.Leaf(lambda c: c.values(path), fn.value_compares(_ORDER_OPS[op], number))
        node = self.equality(name_tok, [operand])
        return fn.Not(node) if op == "!=" else node

    def level(self, operand: _Token) -> int:
        target = severity_from_name(operand.value)
        if target is None:
            self.fail(f"unknown level {operand.value!r}", operand.column, "; expected a name "
                      "(debug, info, notice, warn, error, crit, alert, emerg) or 0-7")
        return target

    def membership(self, name_tok: _Token) -> fn.Node:
        self.take_op("[", "'[' after 'in'")
        values = [self.list_value()]
        while self.at_op(","):
            self.i += 1
            values.append(self.list_value())
        self.take_op("]", "',' or ']'")
        if name_tok.value in ("level", "severity"):
            return fn.Severity({self.level(v) for v in values})
        return self.equality(name_tok, values)

    def list_value(self) -> _Token:
        tok = self.peek()
        if tok is None or tok.kind not in ("word", "str"):
            self.expected("a value in the list")
        self.i += 1
        return tok

    def equality(self, name_tok: _Token, operands: list[_Token]) -> fn.Node:
        """The field equals one of `operands` (== is a list of one)."""
        name = name_tok.value
        if name in _TEXT_FIELDS:
            strings = frozenset(t.value for t in operands)
            if name == "listener":
                return fn.Listener(strings.__contains__)
            column = fn.Columns.apps if name == "app" else fn.Columns.sources
            if len(strings) == 1:
                return fn.Leaf(column, fn.equals_text(next(iter(strings))))
            return fn.Leaf(column, fn.text_in(strings))
        path = self.path(name_tok)
        numbers = [n for n in map(_number, operands) if n is not None]
        texts = frozenset(t.value for t in operands if _number(t) is None)
        if len(operands) == 1:
            test = (fn.value_equals_number(numbers[0]) if numbers
                    else fn.value_equals_text(next(iter(texts))))
        else:
            test = fn.value_in(texts, frozenset(numbers))
        return fn.Leaf(lambda c: c.values(path), test,
                       None if numbers else fn.text_needles(sorted(texts)))

    def regex_match(self, name_tok: _Token, pattern: re.Pattern[bytes]) -> fn.Node:
        name = name_tok.value
        if name == "listener":
            return fn.Listener(lambda s: pattern.search(s.encode()) is not None)
        if name in ("app", "source"):
            column = fn.Columns.apps if name == "app" else fn.Columns.sources
            return fn.Leaf(column, fn.text_searches(pattern))
        path = self.path(name_tok)
        return fn.Leaf(lambda c: c.values(path), fn.value_searches(pattern),
                       fn.regex_needles(pattern))


def parse(expression: str) -> fn.Node:
    """The node tree of an expression; raises FilterError saying what and where."""
    return _Parser(expression).parse()
