"""The tail listener's config: what files, read how, followed how.

logd/listeners/tail.py is the listener; the registry finds this class through it.
"""

from __future__ import annotations

import re
from dataclasses import MISSING as REQUIRED
from dataclasses import dataclass
from typing import Any

from logd.config import (
    component_name,
    nested,
    one_of,
    setting,
    to_duration,
    to_int,
    to_size,
    to_str_list,
)


def _to_globs(v: Any) -> tuple[str, ...]:
    globs = to_str_list(v)
    if not globs or not all(globs):
        raise ValueError("expected one or more file paths or globs")
    return globs


def _to_regex(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError("expected a regular expression")
    try:
        re.compile(v.encode())
    except re.error as e:
        raise ValueError(f"not a regular expression: {e}") from None
    return v


@dataclass(frozen=True)
class MultilineConfig:
    start: str = setting(REQUIRED, _to_regex,
                         "a line matching this regular expression starts a record; the "
                         "lines after it that do not are appended")
    max_lines: int = setting(500, to_int(1), "lines per record at most; more start another")
    timeout: float = setting(1.0, to_duration,
                             "a record whose file stays quiet this long goes out as it is")


@dataclass(frozen=True)
class TailListenerConfig:
    paths: tuple[str, ...] = setting(REQUIRED, _to_globs,
                                     "files to follow: paths or globs (* ? [..] **), looked "
                                     "at again every poll_interval")
    type: str = setting("tail", one_of("tail"))
    exclude: tuple[str, ...] = setting((), to_str_list,
                                       "globs of files not to follow, matched against the "
                                       "file name and the whole path")
    start: str = setting("beginning", one_of("beginning", "end"),
                         "where files present at the first start (no checkpoint yet) are "
                         "read from; files that appear later are read from their beginning")
    format: str = setting("lines", one_of("lines", "cri", "docker"),
                          "lines: one record per line; cri: containerd/CRI-O log files; "
                          "docker: docker's json-file logs")
    multiline: MultilineConfig | None = nested(  # noqa: RUF009
        MultilineConfig, lambda: None,
        "{ start = REGEX, max_lines, timeout }: lines grouped into records")
    max_line_bytes: int = setting(1024**2, to_size(lo=1024),
                                  "longer lines are cut into records this long (counted); "
                                  "also the size of each read")
    poll_interval: float = setting(0.25, to_duration,
                                   "how often the globs are looked at again and quiet files "
                                   "checked for growth (10 times less often when inotify "
                                   "watches every glob's directory)")
    rotate_wait: float = setting(5.0, to_duration,
                                 "a file no longer at its path (rotated, deleted) is closed "
                                 "once read to its end and quiet this long")
    max_open_files: int = setting(1024, to_int(1),
                                  "descriptors held at most; the least recently active files "
                                  "are closed and reopened at their offset")
    checkpoint_interval: float = setting(1.0, to_duration,
                                         "how often secured offsets are written to the "
                                         "state directory")
    stats_files: int = setting(10, to_int(0),
                               "files shown in stats (those with most bytes left to read)")
    name: str = component_name()

    def validate(self) -> list[tuple[str, str]]:
        if self.multiline is not None and self.format != "lines":
            return [("multiline", 'only with format = "lines"')]
        if self.poll_interval <= 0:
            return [("poll_interval", "expected a duration above 0")]
        return []
