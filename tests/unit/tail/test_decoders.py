"""Decoders of the tail listener: a read -> records, and how much of the read they used."""

from __future__ import annotations

import orjson

from logd.tail.containers import PART_WAIT, CriDecoder, DockerDecoder, kubernetes_fields
from logd.tail.decoders import LinesDecoder, MultilineDecoder

KW = {"source": "files", "received": 0.0}
POD = "/var/log/containers/web-1_prod_app-" + "f" * 64 + ".log"


def test_lines_are_one_block_up_to_the_last_lf() -> None:
    d = LinesDecoder().decode(b"a\nbb\nccc", full=False, timeout=False, finished=False, **KW)
    assert d.batch is not None and d.batch.raw == b"a\nbb\n" and d.batch.count == 2
    assert d.consumed == 5 and d.cut == 0


def test_an_unterminated_line_waits_unless_the_file_is_finished() -> None:
    dec = LinesDecoder()
    assert dec.decode(b"partial", full=False, timeout=False, finished=False, **KW).batch is None
    done = dec.decode(b"a\npartial", full=False, timeout=False, finished=True, **KW)
    assert done.batch is not None and done.batch.payloads == [b"a", b"partial"]
    assert done.consumed == 9


def test_a_window_without_lf_is_cut_not_dropped() -> None:
    d = LinesDecoder().decode(b"x" * 10, full=True, timeout=False, finished=False, **KW)
    assert d.batch is not None and d.batch.payloads == [b"x" * 10]
    assert d.consumed == 10 and d.cut == 1


def test_multiline_holds_the_last_group_until_the_next_start_or_the_timeout() -> None:
    dec = MultilineDecoder(r"^\S", 100)
    data = b"A first\n  more\nB second\n  tail\n"
    d = dec.decode(data, full=False, timeout=False, finished=False, **KW)
    assert d.batch is not None and d.batch.payloads == [b"A first\n  more"]
    assert d.consumed == len(b"A first\n  more\n")
    rest = data[d.consumed:]
    later = dec.decode(rest, full=False, timeout=True, finished=False, **KW)
    assert later.batch is not None and later.batch.payloads == [b"B second\n  tail"]
    assert later.consumed == len(rest)


def test_multiline_max_lines_starts_another_record() -> None:
    dec = MultilineDecoder(r"^\S", 2)
    d = dec.decode(b"A\n 1\n 2\n 3\nB\n", full=False, timeout=False, finished=False, **KW)
    assert d.batch is not None and d.batch.payloads == [b"A\n 1", b" 2\n 3"]


def test_cri_partials_are_joined_and_a_trailing_partial_is_held() -> None:
    dec = CriDecoder(POD, 1 << 20)
    data = (b"T1 stdout P hel\nT2 stdout F lo\nT3 stderr F two words\nT4 stdout P held "
            b"back\n")
    d = dec.decode(data, full=False, timeout=False, finished=False, **KW)
    assert d.batch is not None
    fields = d.batch.fields()
    assert [f["message"] for f in fields if f] == ["hello", "two words"]
    assert fields[1] == {"message": "two words", "stream": "stderr", "timestamp": "T3",
                         "pod": "web-1", "namespace": "prod", "container": "app"}
    assert d.consumed == data.index(b"T4")


def test_cri_lines_not_in_the_format_are_kept_and_counted() -> None:
    d = CriDecoder("/x.log", 1 << 20).decode(b"garbage\nT stdout F ok\n", full=False,
                                             timeout=False, finished=False, **KW)
    assert d.bad == 1 and d.batch is not None
    assert [f["message"] for f in d.batch.fields() if f] == ["garbage", "ok"]


def test_docker_split_logs_are_joined_and_the_payload_is_json() -> None:
    lines = [{"log": "a ", "stream": "stdout", "time": "t1"},
             {"log": "b\n", "stream": "stdout", "time": "t2"}]
    data = b"".join(orjson.dumps(x) + b"\n" for x in lines)
    d = DockerDecoder("/x.log", 1 << 20).decode(data, full=False, timeout=False,
                                                finished=False, **KW)
    assert d.batch is not None and d.consumed == len(data)
    assert orjson.loads(d.batch.payloads[0]) == {"message": "a b", "stream": "stdout",
                                                 "timestamp": "t2"}


def test_kubernetes_fields_come_from_kubelet_names_in_a_containers_directory() -> None:
    assert kubernetes_fields(POD) == {"pod": "web-1", "namespace": "prod", "container": "app"}
    assert kubernetes_fields("/var/log/app/web-1_prod_app-" + "f" * 64 + ".log") == {}
    assert kubernetes_fields("/var/log/containers/plain.log") == {}


def test_cri_parts_are_joined_per_stream_when_streams_interleave() -> None:
    """A long stdout line's parts with stderr lines between them: each stream's message
    whole, none glued to the other's; the stderr line waits behind the pending stdout part,
    so what a decode consumed is always a point with nothing pending before it."""
    dec = CriDecoder(POD, 1 << 20)
    data = (b"T1 stdout P long-\nT2 stderr F err one\nT3 stdout P line-\nT4 stderr P er\n"
            b"T5 stdout F end\nT6 stderr F r two\nT7 stdout P held\nT8 stderr F behind\n")
    d = dec.decode(data, full=False, timeout=False, finished=False, **KW)
    assert d.batch is not None
    got = [(f["stream"], f["message"]) for f in d.batch.fields() if f]
    assert got == [("stderr", "err one"), ("stdout", "long-line-end"), ("stderr", "err two")]
    assert d.consumed == data.index(b"T7")  # "behind" waits for "held" to end
    rest = data[d.consumed:] + b"T9 stdout F !\n"
    later = dec.decode(rest, full=False, timeout=False, finished=False, **KW)
    assert later.batch is not None and later.consumed == len(rest)
    assert [(f["stream"], f["message"]) for f in later.batch.fields() if f] == [
        ("stderr", "behind"), ("stdout", "held!")]


def test_docker_parts_are_joined_per_stream() -> None:
    lines = [{"log": "out-", "stream": "stdout", "time": "t1"},
             {"log": "err\n", "stream": "stderr", "time": "t2"},
             {"log": "line\n", "stream": "stdout", "time": "t3"}]
    data = b"".join(orjson.dumps(x) + b"\n" for x in lines)
    d = DockerDecoder("/x.log", 1 << 20).decode(data, full=False, timeout=False,
                                                finished=False, **KW)
    assert d.batch is not None and d.consumed == len(data)
    assert [(f["stream"], f["message"]) for f in d.batch.fields() if f] == [
        ("stderr", "err"), ("stdout", "out-line")]


def test_a_window_full_of_one_streams_parts_goes_out_cut() -> None:
    dec = CriDecoder("/x.log", 1 << 20)
    data = b"T1 stdout P a\nT2 stderr F b\nT3 stdout P c\n"
    d = dec.decode(data, full=True, timeout=False, finished=False, **KW)
    assert d.batch is not None and d.consumed == len(data) and d.cut == 1
    assert [(f["stream"], f["message"]) for f in d.batch.fields() if f] == [
        ("stderr", "b"), ("stdout", "ac")]


def test_a_part_that_holds_the_other_stream_too_long_goes_out_as_it_is() -> None:
    """stdout ended without a line feed, then only stderr: its records wait behind the
    part for PART_WAIT at most (the file keeps growing, so no quiet timeout comes)."""
    dec = CriDecoder("/x.log", 1 << 20)
    data = b"T1 stdout P no newline\n" + b"".join(b"T2 stderr F e%d\n" % i for i in range(50))
    held = dec.decode(data, full=False, timeout=False, finished=False, **KW)
    assert held.batch is None and held.consumed == 0
    data += b"T3 stderr F later\n"
    assert dec.decode(data, full=False, timeout=False, finished=False, **KW).batch is None
    dec._held_since -= PART_WAIT  # held that long
    d = dec.decode(data, full=False, timeout=False, finished=False, **KW)
    assert d.batch is not None and d.consumed == len(data) and d.cut == 1
    got = [(f["stream"], f["message"]) for f in d.batch.fields() if f]
    assert got[-1] == ("stdout", "no newline")
    assert [m for s, m in got if s == "stderr"] == [*(f"e{i}" for i in range(50)), "later"]
    # A quiet file's tick (timeout) sends a held part at once.
    quiet = CriDecoder("/x.log", 1 << 20).decode(b"T1 stdout P partial\n", full=False,
                                                 timeout=True, finished=False, **KW)
    assert quiet.batch is not None and quiet.cut == 1
    assert [f["message"] for f in quiet.batch.fields() if f] == ["partial"]


def test_a_truncated_file_starts_its_parts_wait_anew() -> None:
    dec = CriDecoder("/x.log", 1 << 20)
    assert dec.decode(b"T1 stdout P old\n", full=False, timeout=False, finished=False,
                      **KW).batch is None
    dec._held_since = (dec._held_since or 0.0) - PART_WAIT  # held that long, then cut short
    dec.reset()
    fresh = dec.decode(b"T1 stdout P new-\n", full=False, timeout=False, finished=False, **KW)
    assert fresh.batch is None and fresh.consumed == 0  # waits for its end, as any part
