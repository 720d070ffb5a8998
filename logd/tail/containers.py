"""Container runtimes' log files -> records with fields.

- `cri` (containerd, CRI-O): `TIME STREAM P|F MESSAGE` per line; P lines are parts of one
  message, the F line of the same stream ends it.
- `docker` (json-file): `{"log": "...", "stream": "stdout", "time": "..."}` per line; a
  `log` that does not end in LF is continued by the next line's of the same stream.

Each record is a JSON object (`message`, `stream`, `timestamp`, and for a file named
`<pod>_<namespace>_<container>-<id>.log` in a directory named `containers`, as kubelet
names them in /var/log/containers, `pod`, `namespace`, `container`), so outputs, filters
and path templates read them as fields. A line that is not in the format is kept as a
record whose message is the line, counted as `bad`.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

import orjson

from logd.fields import INFO
from logd.record import Batch
from logd.tail.decoders import NOTHING, Decoded

_KUBE_NAME = re.compile(r"(?P<pod>[^_]+)_(?P<namespace>[^_]+)_(?P<container>.+)-"
                        r"(?P<id>[0-9a-f]{64})\.log")


def kubernetes_fields(path: str) -> dict[str, str]:
    """pod, namespace and container of a kubelet-named container log file; {} otherwise."""
    directory, name = os.path.split(path)
    if os.path.basename(directory) != "containers":
        return {}
    m = _KUBE_NAME.fullmatch(name)
    if m is None:
        return {}
    return {"pod": m["pod"], "namespace": m["namespace"], "container": m["container"]}


# How long a part of one stream may hold back what follows it (the other stream's records)
# before it goes out as it is, counted as cut: a container whose stdout ended without a line
# feed, then logs only to stderr, must not stall its file.
PART_WAIT = 5.0


class _ContainerDecoder:
    """What both formats share: grouping parts into messages, offsets at record ends."""

    holds_groups = True  # a pending part: a timeout (the file quiet PART_WAIT) sends it

    def __init__(self, path: str, max_bytes: int) -> None:
        self.extra = kubernetes_fields(path)
        self.max_bytes = max_bytes
        # Since when a part pending at the start of the window has held the file's offset.
        self._held_since: float | None = None

    def reset(self) -> None:
        self._held_since = None

    def parse(self, line: bytes) -> tuple[str, str, str, bool] | None:
        """(message, stream, time, whether the message ends here); None: not the format."""
        raise NotImplementedError

    def decode(self, data: bytes, *, full: bool, timeout: bool, finished: bool,
               source: str, received: float) -> Decoded:
        """Parts are joined per stream: a runtime writes stdout and stderr into one file, and
        a long stdout line's parts may have stderr lines between them. A record goes out once
        no stream has a part pending before the point it ends at, so `consumed` is always a
        point where every message before it is out and none after it is."""
        end = len(data)
        lf = data.rfind(b"\n")
        lines = data[:lf + 1].split(b"\n") if lf >= 0 else [b""]
        lines.pop()
        if finished and lf != end - 1 and end:
            lines.append(data[lf + 1:])
        objs: list[dict[str, Any]] = []    # out: every record up to `consumed`
        ready: list[dict[str, Any]] = []   # complete, behind a part still pending
        pending: dict[str, tuple[list[str], int, str]] = {}  # stream -> parts, size, time
        pos = consumed = cut = bad = 0
        extra = self.extra
        for line in lines:
            pos = min(end, pos + len(line) + 1)
            parsed = self.parse(line)
            if parsed is None:
                bad += 1
                # Messages broken off by a line not in the format: what came of them goes out.
                for stream, (parts, _, when) in pending.items():
                    ready.append({"message": "".join(parts), "stream": stream,
                                  "timestamp": when, **extra})
                pending.clear()
                ready.append({"message": line.decode("utf-8", "replace"), **extra})
            else:
                message, stream, when, complete = parsed
                parts, size, _ = pending.pop(stream, ([], 0, ""))
                parts.append(message)
                size += len(message)
                if complete or size >= self.max_bytes:
                    if not complete:
                        cut += 1
                    ready.append({"message": "".join(parts), "stream": stream,
                                  "timestamp": when, **extra})
                else:
                    pending[stream] = (parts, size, when)
            if not pending:
                objs += ready
                ready = []
                consumed = pos
        now = time.monotonic()
        stale = consumed == 0 and self._held_since is not None \
            and now - self._held_since >= PART_WAIT
        if pending and (finished or timeout or stale or (full and not objs)):
            # The file ends here, one message fills the window, or a part has held the
            # offset for too long: what is held goes out.
            for stream, (parts, _, when) in pending.items():
                ready.append({"message": "".join(parts), "stream": stream, "timestamp": when,
                              **extra})
                cut += 0 if finished else 1
            objs += ready
            consumed = pos
            pending = {}
        if not pending:
            self._held_since = None
        elif consumed or self._held_since is None:
            self._held_since = now  # a part newly at the start of what is read next
        if not objs:
            if full and lf < 0:  # one line longer than the window: its start, as it is
                objs.append({"message": data.decode("utf-8", "replace"), **extra})
                return Decoded(Batch.from_objects(objs, bytes([INFO]), source, received, end),
                               end, cut=1, bad=1)
            return NOTHING
        return Decoded(Batch.from_objects(objs, bytes([INFO]) * len(objs), source, received,
                                          consumed), consumed, cut=cut, bad=bad)


class CriDecoder(_ContainerDecoder):
    def parse(self, line: bytes) -> tuple[str, str, str, bool] | None:
        fields = line.split(b" ", 3)
        if len(fields) < 3 or fields[2] not in (b"F", b"P"):
            return None
        message = fields[3].decode("utf-8", "replace") if len(fields) == 4 else ""
        return (message, fields[1].decode("utf-8", "replace"),
                fields[0].decode("utf-8", "replace"), fields[2] == b"F")


class DockerDecoder(_ContainerDecoder):
    def parse(self, line: bytes) -> tuple[str, str, str, bool] | None:
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(obj, dict):
            return None
        log = obj.get("log")
        if not isinstance(log, str):
            return None
        complete = log.endswith("\n")
        stream = obj.get("stream")
        when = obj.get("time")
        return (log[:-1] if complete else log, stream if isinstance(stream, str) else "",
                when if isinstance(when, str) else "", complete)
