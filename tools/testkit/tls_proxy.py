"""A TLS terminator for tests: TLS on a loopback port in front of a plaintext server (tansu,
which serves no TLS itself), as stunnel would be. It runs its own event loop in a thread.

    proxy = TlsProxy(server_ctx, ("127.0.0.1", backend_port), port=PORT).start()
    proxy.handshakes                   # TLS handshakes done
    proxy.client_cns                   # the CN of each client certificate shown
    proxy.drop_connections()           # close every connection (clients connect again)
    proxy.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading


class TlsProxy:
    def __init__(self, context: ssl.SSLContext, backend: tuple[str, int], port: int) -> None:
        self.context = context
        self.backend = backend
        self.port = port
        self.handshakes = 0
        self.client_cns: list[str] = []
        self._open: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.AbstractServer | None = None

    def start(self) -> TlsProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the TLS proxy did not start")
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(
            self._serve, "127.0.0.1", self.port, ssl=self.context,
            ssl_handshake_timeout=10))
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        self.handshakes += 1
        cert = writer.get_extra_info("peercert") or {}
        self.client_cns += [v for rdn in cert.get("subject", ()) for k, v in rdn
                            if k == "commonName"]
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.backend)
        except OSError:
            writer.close()
            return
        self._open.add(writer)
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._open.discard(writer)

    def drop_connections(self) -> None:
        def drop() -> None:
            for w in list(self._open):
                w.transport.abort()
        self._loop.call_soon_threadsafe(drop)

    def stop(self) -> None:
        def close() -> None:
            if self._server is not None:
                self._server.close()
            self._loop.stop()
        self._loop.call_soon_threadsafe(close)
        self._thread.join(10)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()
