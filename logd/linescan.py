"""Word filters over a block of LF-terminated lines, and picking lines out of a block.

`match_lines(block, program)` returns the indices of the lines a program of words matches:
a tree of tuples, (WORD, b"word") | (AND, (terms...)) | (OR, (terms...)) | (NOT, term).
`pick_lines(block, indices)` joins the lines at ascending indices, each with its LF.

Both are compiled (logd/_linescan.c) where the install had a C compiler; COMPILED says
whether they are. The Python versions here are the reference the compiled ones are tested
against, and what runs without them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

WORD, AND, OR, NOT = 0, 1, 2, 3

Program = tuple[int, Any]


def match_lines_py(block: bytes, program: Program) -> list[int]:
    lines = block.split(b"\n")
    lines.pop()  # what follows the last LF is not a line
    return [i for i, line in enumerate(lines) if _evaluate(program, line)]


def _evaluate(node: Program, line: bytes) -> bool:
    op, arg = node
    if op == WORD:
        return arg in line
    if op == AND:
        return all(_evaluate(t, line) for t in arg)
    if op == OR:
        return any(_evaluate(t, line) for t in arg)
    if op == NOT:
        return not _evaluate(arg, line)
    raise ValueError(f"unknown program op {op}")


def pick_lines_py(block: bytes, indices: Sequence[int]) -> bytes:
    if not indices:
        return b""
    lines = block.split(b"\n")
    lines.pop()
    return b"\n".join([lines[i] for i in indices]) + b"\n"


try:
    from logd._linescan import match_lines, pick_lines
    COMPILED = True
except ImportError:  # installed without a C compiler
    match_lines, pick_lines = match_lines_py, pick_lines_py
    COMPILED = False

__all__ = ["AND", "COMPILED", "NOT", "OR", "WORD", "Program", "match_lines", "match_lines_py",
           "pick_lines", "pick_lines_py"]
