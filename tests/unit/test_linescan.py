"""The compiled word scan over blocks of lines (logd/_linescan.c) says what its Python
reference says, never reads outside the block, and refuses bad input with an exception."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logd import linescan
from logd.linescan import AND, NOT, OR, WORD, match_lines_py, pick_lines_py
from logd.record import Batch
from testkit.props import examples

needs_compiled = pytest.mark.skipif(not linescan.COMPILED, reason="built without a C compiler")


def test_the_scan_is_compiled_where_a_c_compiler_is() -> None:
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler here: the Python path runs")
    assert linescan.COMPILED, "setup.py builds logd._linescan where a C compiler is"


# Few distinct bytes, so words are found often, partly, and across line ends.
ALPHABET = b"abE\n\x00\xff"
BYTES = st.binary(max_size=0) | st.lists(st.sampled_from(ALPHABET), max_size=300).map(bytes)
WORDS = st.lists(st.sampled_from(b"abE\x00\xff\n"), max_size=20).map(bytes)


def programs(depth: int = 3) -> st.SearchStrategy[linescan.Program]:
    word = WORDS.map(lambda w: (WORD, w))
    if depth == 0:
        return word
    inner = programs(depth - 1)
    return (word
            | st.tuples(st.sampled_from([AND, OR]), st.lists(inner, min_size=1, max_size=4)
                        .map(tuple))
            | inner.map(lambda t: (NOT, t)))


@st.composite
def blocks(draw: st.DrawFn) -> bytes:
    """Lines of 0 to 100 bytes (short and long against the 16-byte steps of the scan), and
    sometimes bytes after the last LF."""
    lines = draw(st.lists(st.lists(st.sampled_from(b"abE\x00\xff"), max_size=100).map(bytes),
                          max_size=12))
    block = b"".join(line + b"\n" for line in lines)
    return block + draw(st.sampled_from([b"", b"", b"ab", b"E"]))


@needs_compiled
@examples(400)
@given(blocks(), programs())
def test_match_lines_says_what_the_reference_says(block: bytes,
                                                   program: linescan.Program) -> None:
    assert linescan.match_lines(block, program) == match_lines_py(block, program)


@needs_compiled
@examples(200)
@given(BYTES, programs(1))
def test_any_bytes_scan_as_the_reference_says(block: bytes, program: linescan.Program) -> None:
    assert linescan.match_lines(block, program) == match_lines_py(block, program)


@needs_compiled
def test_words_at_every_offset_of_long_lines_and_never_across_a_line_end() -> None:
    # A word at each position of a 70-byte line, in the last line of the block (read without
    # looking past the block) and in a middle one (the fast steps read into the next line).
    for length in (1, 2, 3, 15, 16, 17, 33):
        word = bytes(range(65, 65 + length))
        for at in range(0, 71 - length):
            line = b"." * at + word + b"." * (70 - length - at)
            block = line + b"\n" + b"x" * 40 + b"\n" + line + b"\n"
            assert linescan.match_lines(block, (WORD, word)) == [0, 2], (length, at)
    # The word's first half ends one line, its second half starts the next.
    assert linescan.match_lines(b"xxERR\nORxx\n", (WORD, b"ERROR")) == []
    assert linescan.match_lines(b"xxERR\nORxx\n", (WORD, b"R\nO")) == []
    assert linescan.match_lines(b"a\n\nb\n", (WORD, b"")) == [0, 1, 2]


@needs_compiled
def test_buffers_of_any_kind_are_scanned() -> None:
    block = b"ERROR user\nINFO x\nWARN auth\n"
    program = (AND, ((OR, ((WORD, b"ERROR"), (WORD, b"WARN"))), (WORD, b"u")))
    for buf in (block, bytearray(block), memoryview(block)):
        assert linescan.match_lines(buf, program) == [0, 2]


GUARD_PAGE = textwrap.dedent("""
    import ctypes, mmap, sys
    from logd import linescan
    page = mmap.PAGESIZE
    m = mmap.mmap(-1, 2 * page)
    base = ctypes.addressof(ctypes.c_char.from_buffer(m))
    libc = ctypes.CDLL(None, use_errno=True)
    # The page after the block cannot be read: a read past the block's end is a SIGSEGV.
    assert libc.mprotect(ctypes.c_void_p(base + page), page, 0) == 0
    for size in range(1, 200):
        for tail in (b"\\n", b"x"):
            block = (b"ERRO" * 60)[:size - 1] + tail
            m[page - size:page] = block
            view = memoryview(m)[page - size:page]
            for word in (b"ERROR", b"RO", b"R", b"OERRO" * 4, b"zz"):
                got = linescan.match_lines(view, (linescan.WORD, word))
                assert got == linescan.match_lines_py(block, (linescan.WORD, word)), (size, word)
            picked = linescan.pick_lines(view, [0] if tail == b"\\n" else [])
            assert picked == (block if tail == b"\\n" else b"")
            view.release()
    print("ok")
""")


@needs_compiled
def test_the_scan_reads_nothing_past_the_end_of_the_block() -> None:
    """Blocks that end right before a page that cannot be read (a subprocess: a read past
    the end would kill it with SIGSEGV, not the test run)."""
    done = subprocess.run([sys.executable, "-c", GUARD_PAGE], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"


@needs_compiled
@pytest.mark.parametrize("program, error", [
    ((9, b"x"), ValueError),
    ((WORD, "x"), TypeError),
    ((AND, [(WORD, b"x")]), TypeError),
    ([WORD, b"x"], TypeError),
    ((WORD,), TypeError),
    ((OR, ((WORD, b"x"), (WORD, 3))), TypeError),
])
def test_a_malformed_program_raises(program: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        linescan.match_lines(b"x\n", program)  # type: ignore[arg-type]


@needs_compiled
def test_a_program_nested_past_the_bound_raises_instead_of_exhausting_the_stack() -> None:
    program: linescan.Program = (WORD, b"a")
    for _ in range(100_000):
        program = (NOT, program)
    with pytest.raises(ValueError, match="nested too deeply"):
        linescan.match_lines(b"a\n", program)


@examples(300)
@given(blocks(), st.data())
def test_pick_lines_joins_the_lines_at_the_indices(block: bytes, data: st.DataObject) -> None:
    n = block.count(b"\n")
    indices = sorted(data.draw(st.sets(st.integers(0, max(0, n - 1)), max_size=n)))
    lines = block.split(b"\n")[:n]
    want = b"".join(lines[i] + b"\n" for i in indices)
    assert linescan.pick_lines(block, indices) == want
    assert pick_lines_py(block, indices) == want
    assert want.count(b"\n") == len(indices)


@needs_compiled
@pytest.mark.parametrize("indices, error", [
    ([1, 0], ValueError), ([0, 0], ValueError), ([3], IndexError), ([-1], ValueError),
    (["x"], TypeError),
])
def test_pick_lines_refuses_indices_out_of_order_or_range(indices: list[object],
                                                         error: type[Exception]) -> None:
    with pytest.raises(error):
        linescan.pick_lines(b"a\nb\nc\n", indices)  # type: ignore[arg-type]


def test_a_part_of_a_lines_block_is_a_lines_block_with_the_picked_lines() -> None:
    block = b"".join(b"line %d\n" % i for i in range(10))
    batch = Batch.from_lines(block, 10, "lines", 1.5, form="syslog")
    part = batch.subset([1, 4, 9])
    assert part.raw == b"line 1\nline 4\nline 9\n"
    assert part.count == 3 and part.payloads == [b"line 1", b"line 4", b"line 9"]
    assert (part.source, part.received, part.form) == ("lines", 1.5, "syslog")
    assert part.nbytes == sum(map(len, part.payloads))
    batch.severities = bytes(range(10))
    assert batch.subset([2, 3]).severities == b"\x02\x03"
