"""logd config texts the tests and the benchmark start from: port 0, state in a temp dir."""

from __future__ import annotations

from pathlib import Path


def ingest_config(out: Path, shutdown_timeout: str = "60s") -> str:
    """The [daemon] table and an HTTP and a TCP (frames) listener on port 0, state under
    `out`: what the output tests put their [outputs.*] table after."""
    return f"""
[daemon]
state_dir = "{out}/state"
control_socket = "{out}/control.sock"
stats_interval = "0s"
shutdown_timeout = "{shutdown_timeout}"

[listeners.http]
type = "http"
address = "127.0.0.1:0"

[listeners.emitters]
type = "tcp"
address = "127.0.0.1:0"
"""


def emitter_file_config(out_dir: Path, *, framing: str = "frames", path: str = "{app}.log",
                        output_extra: str = "", buffer: str = "",
                        listener_extra: str = "") -> str:
    """One TCP listener, "emitters", on port 0 and one file output, "files", writing under
    `out_dir` (flushed every 100 ms); the extras are lines added to their tables."""
    return f"""
[daemon]
state_dir = "{out_dir}/state"
control_socket = "{out_dir}/control.sock"
shutdown_timeout = "30s"
stats_interval = "0s"

[listeners.emitters]
type = "tcp"
address = "127.0.0.1:0"
framing = "{framing}"
{listener_extra}

[outputs.files]
type = "file"
path = "{out_dir}/{path}"
flush_interval = "100ms"
{output_extra}
{buffer}
"""


def tail_file_config(out_dir: Path, paths: list[str], *, listener_extra: str = "",
                     output_path: str = "tailed.log", output_extra: str = "",
                     buffer: str = "", poll_interval: str = "50ms") -> str:
    """One tail listener, "files_in", following `paths` (polled every 50 ms, checkpoints
    every 100 ms, rotated files closed after 300 ms of quiet), and one file output, "out",
    writing `output_path` under `out_dir`; the extras are lines added to their tables."""
    globs = ", ".join(f'"{p}"' for p in paths)
    return f"""
[daemon]
state_dir = "{out_dir}/state"
control_socket = "{out_dir}/control.sock"
shutdown_timeout = "30s"
stats_interval = "0s"

[listeners.files_in]
type = "tail"
paths = [{globs}]
poll_interval = "{poll_interval}"
checkpoint_interval = "100ms"
rotate_wait = "300ms"
{listener_extra}

[outputs.out]
type = "file"
path = "{out_dir}/{output_path}"
flush_interval = "50ms"
{output_extra}
{buffer}
"""
