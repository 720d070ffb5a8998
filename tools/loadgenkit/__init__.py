"""loadgen: drive logd's emitter port (tcp://) or HTTP ingest (http://) with generated records.

logd is benchmarked with loadgen running on the same (small) machine, so sending must cost
almost no CPU: records are pre-built into ~1 MiB blocks once, and the send loop only slices a
block and calls sendall. Per-record Python work happens only when every record has to differ
from every other one (--unique, or a small --count) or carry its own send time (--timestamps).

The schedule is open loop: the number of records due is a function of time since start only,
never of how fast the server accepted the previous ones, so a slow server shows up as lag and
catch-up bursts instead of a silently lower rate (no coordinated omission).

HTTP mode POSTs batches of JSON records over keep-alive connections. Every record carries its
own id, so records are built one by one, but ahead of time (before the start, then in chunks)
and with string formatting rather than json.dumps, which keeps a POST of 1000 records at about
a millisecond of CPU.
"""
