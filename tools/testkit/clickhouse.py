"""A real ClickHouse server for integration tests, run from a temp dir on free loopback ports.

The server is Debian's ``clickhouse-server`` package (18.16 on bookworm), which installs the
binary as ``/usr/sbin/clickhouse-server`` (the client is ``/usr/bin/clickhouse-client``).
It is run directly -- not through the system service -- with a generated config.xml and
users.xml, so it needs nothing beyond write access to its own temp dir.

    with ClickHouseServer(tmp_path / "ch") as ch:
        ch.query("CREATE DATABASE IF NOT EXISTS logs_db")
        ... native protocol on (ch.host, ch.tcp_port), HTTP on (ch.host, ch.http_port) ...
        ch.restart()  # same ports, same data dir

    db = ClickHouseDatabase(ch)   # a database name of its own (logs_<random>), for one test
    db.url                        # clickhouse://default@127.0.0.1:PORT/logs_<random>
    db.query("SELECT count() FROM logs")   # unqualified names are in that database
    db.drop()

The server is up in ~0.1 s, uses ~80 MiB RSS idle; stop() (SIGTERM) takes ~0.3-1 s.

Notes for 18.16:
- no LowCardinality (without an experimental setting), no DateTime64, no
  ``max_server_memory_usage``; the per-query ``max_memory_usage`` of the profile is the knob.
- do not reset a table with TRUNCATE (or DROP PARTITION) when a restart follows: the parts
  it dropped can still be on disk (``old_parts_lifetime``) and come back on the next start.
  ``DROP TABLE`` + ``CREATE TABLE`` (or a fresh table name) is safe.
- stop()/start()/restart() block (subprocess wait, HTTP polling): from async code call them
  through ``asyncio.to_thread``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from types import TracebackType
from typing import IO
from xml.sax.saxutils import escape

__all__ = ["ClickHouseDatabase", "ClickHouseError", "ClickHouseServer", "clickhouse_binary",
           "server_command"]

_CANDIDATES = (
    "/usr/sbin/clickhouse-server",
    "/usr/bin/clickhouse-server",
    "/usr/bin/clickhouse",
)

INSTALL_HINT = "apt-get install -y clickhouse-server clickhouse-client"


class ClickHouseError(RuntimeError):
    """A query over HTTP failed, or the server did not come up."""


def clickhouse_binary() -> str:
    """Return the path of the ClickHouse server binary, or fail with how to install it.

    ``$CLICKHOUSE_SERVER_BIN`` if set, else ``clickhouse-server`` on PATH, else the known
    locations (Debian: ``/usr/sbin/clickhouse-server``, which is not on a non-root PATH).
    A multi-call ``clickhouse`` binary needs ``server`` after it: :func:`server_command`
    builds the full argv.
    """
    env = os.environ.get("CLICKHOUSE_SERVER_BIN")
    if env:
        if os.access(env, os.X_OK):
            return env
        raise AssertionError(f"CLICKHOUSE_SERVER_BIN={env!r} is not an executable file")
    found = shutil.which("clickhouse-server")
    if found:
        return found
    for cand in _CANDIDATES:
        if os.access(cand, os.X_OK):
            return cand
    raise AssertionError(
        f"ClickHouse server binary not found (looked on PATH and in {', '.join(_CANDIDATES)}); "
        f"run `{INSTALL_HINT}`"
    )


def server_command(config_file: str | os.PathLike[str]) -> list[str]:
    """The argv that starts the server binary with ``config_file``."""
    binary = clickhouse_binary()
    argv = [binary]
    if os.path.basename(binary) == "clickhouse":  # multi-call binary
        argv.append("server")
    argv.append(f"--config-file={os.fspath(config_file)}")
    return argv


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def _port_is_free(host: str, port: int, *, reuse: bool = True) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        if reuse:  # as the server binds: a TIME_WAIT leftover does not block it
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str, taken: set[int]) -> int:
    """A TCP port that nothing is bound to now, outside the kernel's ephemeral range.

    Outside, because the ports must stay free while the server is stopped (``restart()``
    reuses them): a port from bind(0) is an ephemeral one that any outgoing connection --
    e.g. a client retrying against the stopped server -- may be handed meanwhile.
    """
    lo, hi = _ephemeral_range()
    first, last = (10000, lo - 1) if lo > 11000 else (hi + 1, 65535)
    rnd = random.SystemRandom()
    if last - first > 100:
        for _ in range(200):
            port = rnd.randint(first, last)
            if port not in taken and _port_is_free(host, port, reuse=False):
                return port
    while True:  # fallback: let the kernel pick
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in taken:
            return port


# Strong references: a server object dropped without stop() stays here until atexit stops it.
_RUNNING: set[ClickHouseServer] = set()


@atexit.register
def _stop_leftovers() -> None:
    """Do not leave servers behind when a test run ends without calling stop()."""
    for server in list(_RUNNING):
        with contextlib.suppress(Exception):
            server.cleanup()


class ClickHouseServer:
    """One ClickHouse server process with its own config, data and logs under ``base_dir``.

    Ports are chosen once, at construction, so :meth:`restart` (and ``stop`` + ``start``)
    brings the server back on the same ports with the same data.
    """

    def __init__(
        self,
        base_dir: str | os.PathLike[str] | None = None,
        *,
        max_memory_usage: int = 2 * 1024**3,
        log_level: str = "information",
        extra_config: str = "",
    ) -> None:
        self._own_dir = base_dir is None
        if base_dir is None:
            base_dir = tempfile.mkdtemp(prefix="clickhouse-test-")
        self.base_dir = Path(base_dir).resolve()
        self.data_dir = self.base_dir / "data"
        self.log_dir = self.base_dir / "log"
        self.config_file = self.base_dir / "config.xml"
        self.users_file = self.base_dir / "users.xml"
        self.log_file = self.log_dir / "clickhouse-server.log"
        self.err_log_file = self.log_dir / "clickhouse-server.err.log"
        self.stdout_file = self.log_dir / "stdout.log"
        self.max_memory_usage = max_memory_usage
        self.log_level = log_level
        self.extra_config = extra_config
        taken: set[int] = set()
        self._tcp_port = _free_port(self.host, taken)
        taken.add(self._tcp_port)
        self._http_port = _free_port(self.host, taken)
        self._proc: subprocess.Popen[bytes] | None = None
        self._stdout: IO[bytes] | None = None
        self.start_seconds: float | None = None

    # -- properties -------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def tcp_port(self) -> int:
        """Port of the native protocol (what asynch / clickhouse-driver talk to)."""
        return self._tcp_port

    @property
    def http_port(self) -> int:
        return self._http_port

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self._http_port}/"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- config -----------------------------------------------------------------------------

    def _write_config(self) -> None:
        for d in (self.base_dir, self.data_dir, self.log_dir):
            d.mkdir(parents=True, exist_ok=True)
        for sub in ("tmp", "user_files", "format_schemas"):
            (self.data_dir / sub).mkdir(parents=True, exist_ok=True)

        def d(path: Path) -> str:  # ClickHouse wants directory paths with a trailing slash
            return escape(str(path)) + "/"

        def p(path: Path) -> str:
            return escape(str(path))

        config = f"""<?xml version="1.0"?>
<yandex>
    <logger>
        <level>{escape(self.log_level)}</level>
        <log>{p(self.log_file)}</log>
        <errorlog>{p(self.err_log_file)}</errorlog>
        <size>50M</size>
        <count>2</count>
    </logger>
    <listen_host>{self.host}</listen_host>
    <tcp_port>{self._tcp_port}</tcp_port>
    <http_port>{self._http_port}</http_port>
    <max_connections>256</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>50</max_concurrent_queries>
    <mark_cache_size>67108864</mark_cache_size>
    <uncompressed_cache_size>67108864</uncompressed_cache_size>
    <path>{d(self.data_dir)}</path>
    <tmp_path>{d(self.data_dir / "tmp")}</tmp_path>
    <user_files_path>{d(self.data_dir / "user_files")}</user_files_path>
    <format_schema_path>{d(self.data_dir / "format_schemas")}</format_schema_path>
    <include_from>{p(self.base_dir / "metrika.xml")}</include_from>
    <users_config>{p(self.users_file)}</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <umask>022</umask>
    <mlock_executable>false</mlock_executable>
    <builtin_dictionaries_reload_interval>3600</builtin_dictionaries_reload_interval>
    <max_session_timeout>3600</max_session_timeout>
    <default_session_timeout>60</default_session_timeout>
    <dictionaries_config>{d(self.base_dir / "dictionaries")}*.xml</dictionaries_config>
    {self.extra_config}
</yandex>
"""
        users = f"""<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>{int(self.max_memory_usage)}</max_memory_usage>
            <use_uncompressed_cache>0</use_uncompressed_cache>
            <load_balancing>random</load_balancing>
            <background_pool_size>4</background_pool_size>
            <max_threads>2</max_threads>
            <!-- an idle native connection is checked for shutdown every poll_interval s:
                 the default 10 makes every stop() with an open client take 10 s -->
            <poll_interval>1</poll_interval>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks>
                <ip>::1</ip>
                <ip>127.0.0.1</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
"""
        self.config_file.write_text(config)
        # include_from points here (not at /etc/metrika.xml) so no system file leaks in.
        (self.base_dir / "metrika.xml").write_text('<?xml version="1.0"?>\n<yandex/>\n')
        self.users_file.write_text(users)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> None:
        """Start the server and wait until ``SELECT 1`` answers over HTTP.

        Raises :class:`ClickHouseError` with the tail of the server's logs if the process
        exits or does not answer within ``timeout`` seconds.
        """
        if self.running:
            return
        self._cleanup_proc()  # a process that died by itself: forget it
        argv = server_command(self.config_file)  # fails early if not installed
        self._write_config()
        # After a stop() the kernel may still hold the ports briefly; wait for them.
        deadline = time.monotonic() + min(timeout, 15)
        while not all(_port_is_free(self.host, p) for p in (self._tcp_port, self._http_port)):
            if time.monotonic() > deadline:
                raise ClickHouseError(
                    f"ports {self._tcp_port}/{self._http_port} on {self.host} are in use"
                )
            time.sleep(0.1)
        t0 = time.monotonic()
        stdout = open(self.stdout_file, "ab")  # noqa: SIM115 -- closed by _cleanup_proc()
        self._stdout = stdout
        try:
            self._proc = subprocess.Popen(
                argv,
                cwd=self.base_dir,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C of pytest does not hit it half-way
            )
        except BaseException:
            self._cleanup_proc()
            raise
        _RUNNING.add(self)
        try:
            self._wait_ready(self._proc, t0 + timeout, timeout)
        except BaseException:
            self.stop(timeout=10)
            raise
        self.start_seconds = time.monotonic() - t0

    def _wait_ready(self, proc: subprocess.Popen[bytes], deadline: float, timeout: float) -> None:
        last_error = ""
        while True:
            rc = proc.poll()
            if rc is not None:
                raise ClickHouseError(
                    f"clickhouse-server exited with code {rc} during startup\n{self.log_tail()}"
                )
            try:
                if self.query("SELECT 1", timeout=2).strip() == "1":
                    return
            except (OSError, ClickHouseError) as exc:
                last_error = repr(exc)
            if time.monotonic() > deadline:
                raise ClickHouseError(
                    f"clickhouse-server did not answer SELECT 1 within {timeout}s "
                    f"(last error: {last_error})\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL. Safe to call twice."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=10)
        self._cleanup_proc()

    def kill(self) -> None:
        """SIGKILL at once (a crash, not a shutdown). Safe to call twice."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=10)
        self._cleanup_proc()

    def restart(self, timeout: float = 60) -> None:
        """Stop, then start again on the same ports with the same data dir."""
        self.stop()
        self.start(timeout=timeout)

    def _cleanup_proc(self) -> None:
        self._proc = None
        _RUNNING.discard(self)
        if self._stdout is not None:
            self._stdout.close()
            self._stdout = None

    def cleanup(self) -> None:
        """Stop, and remove the temp dir if this object created it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> ClickHouseServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    # -- queries & diagnostics --------------------------------------------------------------

    def query(self, sql: str, timeout: float = 30, database: str | None = None) -> str:
        """Run ``sql`` over the HTTP interface; return the body, or raise with the error text.
        Unqualified table names are in ``database`` (else the server's default)."""
        url = self.http_url
        if database is not None:
            url += "?" + urllib.parse.urlencode({"database": database})
        req = urllib.request.Request(
            url, data=sql.encode(), method="POST", headers={"Connection": "close"}
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.read().decode()
        except urllib.error.HTTPError as exc:
            try:
                body = exc.read().decode(errors="replace").strip()
            finally:
                exc.close()
            raise ClickHouseError(f"HTTP {exc.code} for {sql[:200]!r}: {body}") from None

    def rss_bytes(self) -> int | None:
        """Resident memory of the server process, from /proc (None if not running)."""
        if not self.running or self._proc is None:
            return None
        try:
            for line in Path(f"/proc/{self._proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the error log, the stdout/stderr capture and the main log."""
        out = []
        for f in (self.err_log_file, self.stdout_file, self.log_file):
            try:
                text = f.read_text(errors="replace").splitlines()
            except OSError:
                continue
            if text:
                out.append(f"--- {f} (last {lines} lines) ---")
                out.extend(text[-lines:])
        return "\n".join(out) if out else "(no server logs)"


class ClickHouseDatabase:
    """A database of one test on a (maybe shared) server: a name of its own, so tests that
    share a server never see each other's tables.

    The database is not created here: logd's ClickHouse output creates the database it is
    given, and that is worth testing too. Queries before it exists fail; :meth:`count`
    reads that as no rows yet.
    """

    def __init__(self, server: ClickHouseServer, name: str | None = None) -> None:
        self.server = server
        self.name = name or f"logs_{uuid.uuid4().hex[:10]}"

    @property
    def url(self) -> str:
        """What a logd config's ``url`` says to write into this database."""
        return f"clickhouse://default@{self.server.host}:{self.server.tcp_port}/{self.name}"

    @property
    def tcp_port(self) -> int:
        return self.server.tcp_port

    def query(self, sql: str, timeout: float = 30) -> str:
        return self.server.query(sql, timeout, database=self.name)

    def count(self, table: str = "logs") -> int:
        """Rows in ``table``; 0 while logd has not created it (or the database) yet."""
        try:
            return int(self.query(f"SELECT count() FROM {table}").strip())
        except ClickHouseError:
            return 0

    def drop(self) -> None:
        self.server.query(f"DROP DATABASE IF EXISTS {self.name}")
