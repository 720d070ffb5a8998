"""Properties of the cri and docker decoders, read as the tail listener reads a growing file:
each stream's messages come out once, whole and in order, whatever the interleaving of the
streams' parts and however the file grows between reads."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from logd.tail.containers import CriDecoder, DockerDecoder
from testkit.props import examples

STREAMS = ("stdout", "stderr")
GARBAGE = b"a line in no container format\n"


def cri_line(stream: str, part: str, last: bool) -> bytes:
    return f"2026-12-02T10:00:00.000000001Z {stream} {'F' if last else 'P'} {part}\n".encode()


def docker_line(stream: str, part: str, last: bool) -> bytes:
    log = part + ("\n" if last else "")
    return json.dumps({"log": log, "stream": stream, "time": "t"}).encode() + b"\n"


FORMATS: dict[str, tuple[type[CriDecoder] | type[DockerDecoder],
                         Callable[[str, str, bool], bytes]]] = {
    "cri": (CriDecoder, cri_line), "docker": (DockerDecoder, docker_line)}


@st.composite
def container_files(draw: st.DrawFn, bad_lines: bool
                    ) -> tuple[str, list[bytes], dict[str, list[str]]]:
    """(format, the file's lines, each stream's messages in order): messages of 1-3 parts,
    the two streams' parts interleaved at random, each stream's in its order."""
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    parts_of: dict[str, list[tuple[str, bool]]] = {}
    messages: dict[str, list[str]] = {}
    for s in STREAMS:
        messages[s], parts_of[s] = [], []
        for i in range(draw(st.integers(0, 5))):
            n = draw(st.integers(1, 3))
            parts = [f"{s[3]}{i}.{k}" + "x" * draw(st.integers(0, 30)) for k in range(n)]
            messages[s].append("".join(parts))
            parts_of[s] += [(p, k == n - 1) for k, p in enumerate(parts)]
    order = draw(st.permutations([s for s in STREAMS for _ in parts_of[s]]))
    encode = FORMATS[fmt][1]
    taken = dict.fromkeys(STREAMS, 0)
    lines = []
    for s in order:
        part, last = parts_of[s][taken[s]]
        taken[s] += 1
        lines.append(encode(s, part, last))
        if bad_lines and draw(st.integers(0, 9)) == 0:
            lines.append(GARBAGE)
    return fmt, lines, messages


def read_growing(fmt: str, data: bytes, window: int, max_bytes: int,
                 growth: list[int]) -> tuple[list[dict[str, Any]], int]:
    """The records a decoder gives for `data` written `growth` bytes at a time, each read
    from the consumed offset as logd/listeners/tail.py reads, then the file finished."""
    decoder = FORMATS[fmt][0]("/var/log/x.log", max_bytes)
    offset = written = cut = 0
    records: list[dict[str, Any]] = []
    steps = 0
    while written < len(data):
        written = min(len(data), written + growth[steps % len(growth)])
        steps += 1
        while True:
            window_data = data[offset:min(written, offset + window)]
            full = len(window_data) == window
            d = decoder.decode(window_data, full=full, timeout=False, finished=False,
                               source="t", received=0.0)
            if d.batch is not None:
                records += [f for f in d.batch.fields() if f is not None]
                cut += d.cut
                offset += d.consumed
            if not full or not d.consumed:
                break
    while offset < len(data):  # the file is finished: rotated away and read to its end
        window_data = data[offset:offset + window]
        last = offset + len(window_data) >= len(data)
        d = decoder.decode(window_data, full=len(window_data) == window, timeout=True,
                           finished=last, source="t", received=0.0)
        if d.batch is not None:
            records += [f for f in d.batch.fields() if f is not None]
            cut += d.cut
            offset += d.consumed
        if last or not d.consumed:
            break
    assert offset == len(data)
    return records, cut


GROWTH = st.lists(st.integers(1, 200), min_size=1, max_size=10)


@examples(300)
@given(container_files(bad_lines=False), GROWTH)
def test_each_streams_messages_once_whole_and_in_order(
        case: tuple[str, list[bytes], dict[str, list[str]]], growth: list[int]) -> None:
    fmt, lines, messages = case
    records, cut = read_growing(fmt, b"".join(lines), 1 << 20, 1 << 20, growth)
    assert cut == 0
    for s in STREAMS:
        assert [r["message"] for r in records if r.get("stream") == s] == messages[s]


@examples(300)
@given(container_files(bad_lines=True), GROWTH, st.integers(100, 400), st.integers(5, 200))
def test_small_windows_cuts_and_bad_lines_lose_and_repeat_nothing(
        case: tuple[str, list[bytes], dict[str, list[str]]], growth: list[int], window: int,
        max_bytes: int) -> None:
    fmt, lines, messages = case
    if any(len(line) >= window for line in lines):
        return  # a line longer than the window is cut by bytes: another property
    records, _ = read_growing(fmt, b"".join(lines), window, max_bytes, growth)
    for s in STREAMS:
        assert "".join(r["message"] for r in records if r.get("stream") == s) == \
            "".join(messages[s])
    assert sum("stream" not in r for r in records) == b"".join(lines).count(GARBAGE)
