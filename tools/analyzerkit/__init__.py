"""analyzer: the reference client of logd's analyzer port.

It connects, announces its weight, then reads the messages logd routes to it and acknowledges
them cumulatively, reporting what it got: counts per severity, and end-to-end latency when the
records carry loadgen's --timestamps.

One analyzer has to keep up with a couple of hundred thousand messages per second on one core,
so the receive path reads ~1 MiB at a time into one reused buffer and walks the frame headers
in place; per message it only counts, numbers, and (when the stream carries send times) pulls
out the timestamp. Everything else (acks, weight changes, --count) is triggered by comparing
the sequence number with one precomputed "next event" number.
"""
