"""systemd's notify protocol: READY=1, RELOADING=1, STOPPING=1, WATCHDOG=1 over $NOTIFY_SOCKET.

Without NOTIFY_SOCKET (not run by systemd) every call is a no-op.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time


class Notifier:
    def __init__(self) -> None:
        self.address = os.environ.get("NOTIFY_SOCKET", "")
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *fields: str) -> None:
        if not self.address:
            return
        addr = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(fields).encode(), addr)
        except OSError:
            pass  # systemd gone or not listening: nothing to tell

    def ready(self, status: str = "") -> None:
        self.send("READY=1", f"STATUS={status or 'running'}", f"MAINPID={os.getpid()}")

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=draining buffers")

    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half the unit's WatchdogSec), or None."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or not usec.isdigit() or (pid and pid != str(os.getpid())):
            return None
        return int(usec) / 1e6 / 2

    async def watchdog(self) -> None:
        """Ping the watchdog for as long as the event loop turns."""
        interval = self.watchdog_interval()
        if interval is None or not self.address:
            return
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(interval)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
