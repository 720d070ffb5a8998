"""Container runtimes' log files -> records with fields.

- `cri` (containerd, CRI-O): `TIME STREAM P|F MESSAGE` per line; P lines are parts of one
  message, the F line ends it.
- `docker` (json-file): `{"log": "...", "stream": "stdout", "time": "..."}` per line; a
  `log` that does not end in LF is continued by the next line's.

Each record is a JSON object (`message`, `stream`, `timestamp`, and for a file named
`<pod>_<namespace>_<container>-<id>.log` in a directory named `containers`, as kubelet
names them in /var/log/containers, `pod`, `namespace`, `container`), so outputs, filters
and path templates read them as fields. A line that is not in the format is kept as a
record whose message is the line, counted as `bad`.
"""

from __future__ import annotations

import os
import re
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


class _ContainerDecoder:
    """What both formats share: grouping parts into messages, offsets at record ends."""

    holds_groups = False

    def __init__(self, path: str, max_bytes: int) -> None:
        self.extra = kubernetes_fields(path)
        self.max_bytes = max_bytes

    def parse(self, line: bytes) -> tuple[str, str, str, bool] | None:
        """(message, stream, time, whether the message ends here); None: not the format."""
        raise NotImplementedError

    def decode(self, data: bytes, *, full: bool, timeout: bool, finished: bool,
               source: str, received: float) -> Decoded:
        end = len(data)
        lf = data.rfind(b"\n")
        lines = data[:lf + 1].split(b"\n") if lf >= 0 else [b""]
        lines.pop()
        if finished and lf != end - 1 and end:
            lines.append(data[lf + 1:])
        objs: list[dict[str, Any]] = []
        parts: list[str] = []
        size = pos = consumed = cut = bad = 0
        extra = self.extra
        stream = when = ""
        for line in lines:
            pos = min(end, pos + len(line) + 1)
            parsed = self.parse(line)
            if parsed is None:
                bad += 1
                if parts:  # a message broken off by a bad line: what came of it goes out
                    objs.append({"message": "".join(parts), "stream": stream,
                                 "timestamp": when, **extra})
                    parts, size = [], 0
                objs.append({"message": line.decode("utf-8", "replace"), **extra})
                consumed = pos
                continue
            message, stream, when, complete = parsed
            parts.append(message)
            size += len(message)
            if complete or size >= self.max_bytes:
                if not complete:
                    cut += 1
                objs.append({"message": "".join(parts), "stream": stream,
                             "timestamp": when, **extra})
                parts, size = [], 0
                consumed = pos
        if parts and (finished or (full and not objs)):
            objs.append({"message": "".join(parts), "stream": stream, "timestamp": when,
                         **extra})
            consumed = pos
            cut += 0 if finished else 1
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
