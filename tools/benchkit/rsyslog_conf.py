"""rsyslog's config for a scenario, in RainerScript: lines over TCP (imptcp) on one port, the
scenario's condition, an asynchronous omfile writing each line as it came (raw + LF).

Tuned for throughput the way an operator would: imptcp (epoll, not imtcp's poll loop), a
main queue holding as many records as logd's 64 MiB buffer, batches of 1024, omfile with a
1 MiB buffer written by its own thread, flushed each second and never fsynced, as logd's
file output here. The input waits for room when the queue is full, so a sender is slowed
down, not dropped: logd's `when_full = "block"`.

imptcp's flow control is off: it sleeps the sender while the queue is merely near full, to
keep room for inputs that cannot wait (UDP); with TCP alone it only costs throughput (half
of it in json_filter, measured here). One main queue worker, rsyslog's default: two made
json_filter slower on two cores (58k against 94k records/s).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

BUFFER_BYTES = 64 << 20          # logd's file output buffer in these runs
MIN_QUEUE_RECORDS = 10_000
DEQUEUE_BATCH = 1024
IO_BUFFER = "1m"
# How long an input waits for room in a full queue before rsyslog drops a record: long
# enough that nothing is dropped while the output is merely slower than the senders.
ENQUEUE_TIMEOUT_MS = 60_000


@dataclass(frozen=True)
class RsyslogSetup:
    port: int
    out_file: Path
    work_dir: Path
    condition: str | None        # a RainerScript condition; None writes every record
    parse_json: bool             # mmjsonparse the raw line first (for $!field conditions)
    record_bytes: int            # typical record size, to size the queue like logd's buffer


def queue_records(record_bytes: int) -> int:
    """Main queue size in records: logd's buffer size over the record size."""
    return max(MIN_QUEUE_RECORDS, BUFFER_BYTES // max(1, record_bytes))


def _quoted(path: Path) -> str:
    text = str(path)
    if '"' in text or "\\" in text:
        raise ValueError(f"{text!r}: a path rsyslog's config cannot quote")
    return f'"{text}"'


def render(setup: RsyslogSetup) -> str:
    """The whole rsyslog.conf text."""
    write = (f"action(type=\"omfile\" file={_quoted(setup.out_file)} template=\"raw\"\n"
             f"           asyncWriting=\"on\" ioBufferSize=\"{IO_BUFFER}\" "
             "flushInterval=\"1\" flushOnTXEnd=\"off\")")
    body = []
    if setup.parse_json:
        # Debian 12's 8.2302 has no find-json mode: an empty cookie parses lines that are
        # nothing but a JSON object, and useRawMsg skips the syslog header parse's idea of
        # where the message starts.
        body.append('action(type="mmjsonparse" cookie="" useRawMsg="on")')
    if setup.condition is None:
        body.append(write)
    else:
        body.append(f"if {setup.condition} then {{\n    {write}\n  }}")
    rules = "\n  ".join(body)
    return f"""\
# Written by tools/bench compare.
global(workDirectory={_quoted(setup.work_dir)} maxMessageSize="64k")

main_queue(
  queue.type="LinkedList"
  queue.size="{queue_records(setup.record_bytes)}"
  queue.dequeueBatchSize="{DEQUEUE_BATCH}"
  queue.timeoutEnqueue="{ENQUEUE_TIMEOUT_MS}"
)

module(load="imptcp")
{'module(load="mmjsonparse")' + chr(10) if setup.parse_json else ''}
# The line as received, and LF: what logd's raw file format writes.
template(name="raw" type="string" string="%rawmsg%\\n")

ruleset(name="bench") {{
  {rules}
}}

input(type="imptcp" address="127.0.0.1" port="{setup.port}" ruleset="bench"
      flowControl="off")
"""
