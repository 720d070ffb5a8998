"""A real PostgreSQL server for tests: Debian's `postgresql` binaries, run directly.

    server = PostgresServer()
    server.start()               # initdb in a temp dir, postgres on a free loopback port
    server.query("SELECT 1")     # through psql, as text (-At)
    server.dsn                   # postgresql://logd@127.0.0.1:PORT/logd
    server.stop(); server.start()  # same port, same data
    db = server.create_database()  # a database of its own (logd_<random>), for one test
    db.dsn; db.query("SELECT count(*) FROM logs"); db.drop()
    server.cleanup()

PostgreSQL refuses to run as root: when the tests run as root the cluster belongs to the
`postgres` user (Debian's package makes it) and its directory is made outside pytest's
root-only temp dirs. The cluster trusts local connections and skips fsync: test speed.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

INSTALL_HINT = "apt-get install -y postgresql"


class PostgresError(RuntimeError):
    pass


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: int(Path(p).parent.parent.name))
    if found:
        return Path(found[-1]).parent
    postgres = shutil.which("postgres")
    if postgres:
        return Path(postgres).parent
    raise PostgresError(f"no PostgreSQL server binaries; {INSTALL_HINT}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.port = _free_port()
        self.as_root = os.geteuid() == 0
        self.dir = Path(tempfile.mkdtemp(prefix="logd-pg-"))
        self.data = self.dir / "data"
        self.user = "logd"
        self.database = "logd"
        self._proc: subprocess.Popen[bytes] | None = None
        if self.as_root:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self._run(["initdb", "-D", str(self.data), "-U", self.user, "--auth=trust",
                   "--no-sync", "-E", "UTF8", "--locale=C"])

    @property
    def dsn(self) -> str:
        return self.dsn_of(self.database)

    def _cmd(self, args: list[str]) -> list[str]:
        return [str(self.bin / args[0]), *args[1:]]

    def _as(self) -> dict[str, Any]:
        """Popen arguments that run a program as the cluster's owner (directly, so signals
        reach it)."""
        if not self.as_root:
            return {}
        pw = pwd.getpwnam("postgres")
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": [],
                "env": {**os.environ, "HOME": str(self.dir)}}

    def _run(self, args: list[str]) -> str:
        done = subprocess.run(self._cmd(args), capture_output=True, text=True, timeout=120,
                              cwd=self.dir, **self._as())
        if done.returncode != 0:
            raise PostgresError(f"{args[0]} failed: {done.stderr.strip() or done.stdout}")
        return done.stdout

    def start(self, timeout: float = 60) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        log = open(self.dir / "server.log", "ab")  # noqa: SIM115 (the server keeps it)
        self._proc = subprocess.Popen(
            self._cmd(["postgres", "-D", str(self.data), "-p", str(self.port),
                       "-c", "listen_addresses=127.0.0.1",
                       "-c", f"unix_socket_directories={self.dir}",
                       "-c", "fsync=off", "-c", "synchronous_commit=off",
                       "-c", "full_page_writes=off"]),
            stdout=log, stderr=log, cwd=self.dir, **self._as())
        log.close()
        end = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise PostgresError(f"postgres exited: {self.server_log()[-2000:]}")
            ready = subprocess.run(self._cmd(["pg_isready", "-h", "127.0.0.1", "-p",
                                              str(self.port), "-U", self.user]),
                                   capture_output=True, timeout=30, **self._as())
            if ready.returncode == 0:
                break
            if time.monotonic() > end:
                raise PostgresError(f"postgres did not come up: {self.server_log()[-2000:]}")
            time.sleep(0.1)  # polling the server's readiness: no event to await
        if "logd" not in self.query("SELECT datname FROM pg_database", database="postgres"):
            self.query("CREATE DATABASE logd", database="postgres")

    def server_log(self) -> str:
        path = self.dir / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def query(self, sql: str, database: str | None = None) -> str:
        return self._run(["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
                          "-d", database or self.database, "-v", "ON_ERROR_STOP=1", "-At",
                          "-c", sql])

    def dsn_of(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> PostgresDatabase:
        """A new, empty database on this server (a test's own)."""
        db = PostgresDatabase(self, name or f"logd_{uuid.uuid4().hex[:10]}")
        self.query(f'CREATE DATABASE "{db.name}"', database="postgres")
        return db

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)  # a fast shutdown: clients are not waited for
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class PostgresDatabase:
    """One database on a (maybe shared) server: what one test's logd writes into."""

    def __init__(self, server: PostgresServer, name: str) -> None:
        self.server = server
        self.name = name

    @property
    def dsn(self) -> str:
        return self.server.dsn_of(self.name)

    def query(self, sql: str) -> str:
        return self.server.query(sql, database=self.name)

    def count(self, table: str = "logs") -> int:
        """Rows in ``table``; 0 while logd has not made it yet, or the server is down."""
        try:
            return int(self.query(f"SELECT count(*) FROM {table}"))
        except PostgresError:
            return 0

    def drop(self) -> None:
        # FORCE: a logd that was killed may leave a connection the server has not reaped yet.
        self.server.query(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)',
                          database="postgres")
