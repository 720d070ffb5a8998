"""The syslog parser on the RFCs' own examples, and the batch form built on it."""

from __future__ import annotations

from logd.buffers import codec
from logd.fields import app_of, level_text, message_of, metadata_json, time_of
from logd.record import Batch
from logd.syslog.parse import parse

# RFC 5424, section 6.5.
EXAMPLE1 = (b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - "
            b"\xef\xbb\xbf'su root' failed for lonvick on /dev/pts/8")
EXAMPLE2 = (b"<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - "
            b"%% It's time to make the do-nuts.")
EXAMPLE3 = (b'<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 '
            b'[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"] '
            b"\xef\xbb\xbfAn application event log entry...")
EXAMPLE4 = (b'<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 '
            b'[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"]'
            b'[examplePriority@32473 class="high"]')


def test_rfc5424_example_1_bom_stripped_nil_procid_absent() -> None:
    assert parse(EXAMPLE1) == {
        "facility": "auth", "level": "crit", "timestamp": "2003-10-11T22:14:15.003Z",
        "host": "mymachine.example.com", "app": "su", "msgid": "ID47",
        "message": "'su root' failed for lonvick on /dev/pts/8"}


def test_rfc5424_example_2() -> None:
    assert parse(EXAMPLE2) == {
        "facility": "local4", "level": "notice",
        "timestamp": "2003-08-24T05:14:15.000003-07:00", "host": "192.0.2.1",
        "app": "myproc", "procid": "8710", "message": "%% It's time to make the do-nuts."}


def test_rfc5424_example_3_structured_data() -> None:
    f = parse(EXAMPLE3)
    assert f["sd"] == {"exampleSDID@32473": {"iut": "3", "eventSource": "Application",
                                             "eventID": "1011"}}
    assert f["message"] == "An application event log entry..."


def test_rfc5424_example_4_two_elements_no_message() -> None:
    f = parse(EXAMPLE4)
    assert f["sd"] == {"exampleSDID@32473": {"iut": "3", "eventSource": "Application",
                                             "eventID": "1011"},
                       "examplePriority@32473": {"class": "high"}}
    assert f["message"] == ""


def test_sd_escapes() -> None:
    f = parse(rb'<13>1 - - - - - [x@1 a="q\"uote" b="back\\slash" c="br\]acket" d="\n"] m')
    assert f["sd"] == {"x@1": {"a": 'q"uote', "b": "back\\slash", "c": "br]acket",
                               "d": "\\n"}}
    assert f["message"] == "m"
    assert "host" not in f and "timestamp" not in f


def test_rfc3164_examples() -> None:
    f = parse(b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8")
    assert f["host"] == "mymachine" and f["app"] == "su" and f["facility"] == "auth"
    assert f["level"] == "crit" and f["message"].startswith("'su root' failed")
    assert f["timestamp"][4:19] == "-10-11T22:14:15"
    f = parse(b"<13>Feb  5 17:32:18 10.0.0.99 Use the BFG!")
    assert f["host"] == "10.0.0.99" and f["message"] == "Use the BFG!" and "app" not in f
    f = parse(b"<13>Oct  1 02:03:04 host cron[4711]: job done")
    assert (f["app"], f["procid"], f["message"]) == ("cron", "4711", "job done")


def test_after_a_valid_pri_anything_else_is_the_message() -> None:
    assert parse(b"<0>1990 Oct 22 10:52:01 TZ-6 scapegoat sched[0]: All Folks!") == {
        "facility": "kern", "level": "emerg",
        "message": "1990 Oct 22 10:52:01 TZ-6 scapegoat sched[0]: All Folks!"}
    # A 5424 header cut short: read as the rest of the message.
    assert parse(b"<13>1 2003-10-11T22:14:15.003Z host")["message"] == \
        "1 2003-10-11T22:14:15.003Z host"


def test_no_valid_pri_is_kept_whole() -> None:
    for msg in (b"<999>1 - - - - - - x", b"<x>y", b"no pri", b"", b"<192>z", b"\xff\xfe"):
        assert parse(msg) == {"message": msg.decode("utf-8", "replace")}


def test_fields_read_as_logd_reads_a_record() -> None:
    f = parse(EXAMPLE3)
    assert app_of(f, "syslog") == "evntslog"
    assert level_text(f, 5) == "notice"
    assert message_of(f, b"") == "An application event log entry..."
    assert time_of(f, 0.0) == 1065910455.003
    assert b'"host":"mymachine.example.com"' in metadata_json(f)
    assert b'"sd":{"exampleSDID@32473"' in metadata_json(f)


def test_syslog_batches_keep_their_form_through_slices_and_the_spool() -> None:
    block = b"\n".join([EXAMPLE1, EXAMPLE2, EXAMPLE3, b"<x>bad"]) + b"\n"
    batch = Batch.from_lines(block, 4, "syslog", 1.0e9, "syslog")
    assert batch.fields()[0]["app"] == "su"  # type: ignore[index]
    for part in [batch.slice(1, 3), batch.subset([1, 2]), *batch.pieces(100)]:
        assert part.form == "syslog"
    sliced = batch.slice(1, 3)
    assert [f["app"] for f in sliced.fields()] == ["myproc", "evntslog"]  # type: ignore[index]
    for b in (Batch.from_lines(block, 4, "syslog", 1.0e9, "syslog"),
              Batch(block.split(b"\n")[:-1], None, "syslog", 1.0e9, len(block), form="syslog")):
        kind, body = codec.encode(b)
        replayed = codec.decode(kind, body)
        assert replayed.form == "syslog"
        assert replayed.fields() == [parse(p) for p in block.split(b"\n")[:-1]]
        assert replayed.severity_bytes() == bytes([2, 5, 5, 6])


def test_json_batches_store_no_form() -> None:
    b = Batch.from_lines(b'{"a": 1}\n', 1, "tcp", 1.0)
    kind, body = codec.encode(b)
    assert codec.decode(kind, body).form == "json"
    assert b"json" not in body
