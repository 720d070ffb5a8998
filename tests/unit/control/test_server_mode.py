"""The control socket exists with mode 0660 from the moment bind() creates it."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvloop

from logd.control import server
from logd.control.server import ControlServer

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def umask_0() -> Iterator[None]:
    """A process umask that lets everyone in: what a chmod after bind would race with."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_bind_creates_the_socket_with_its_final_mode(
        tmp_path: Path, umask_0: None, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "control.sock"
    at_bind: list[int] = []

    class Watched(socket.socket):
        def bind(self, address: object) -> None:
            super().bind(address)
            at_bind.append(mode(Path(str(address))))  # before anything could chmod it

    monkeypatch.setattr(server.socket, "socket", Watched)

    async def main() -> None:
        control = ControlServer(None, str(path))  # type: ignore[arg-type]
        await control.start()
        try:
            assert mode(path) == 0o660
            assert os.umask(0) == 0, "the process umask is restored after bind"
            reader, writer = await asyncio.open_unix_connection(str(path))
            writer.write(b'{"cmd": "ping"}\n')
            assert b'"ok":true' in await reader.readline()
            writer.close()
            await writer.wait_closed()
        finally:
            await control.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
    assert at_bind == [0o660]
    assert not path.exists()


def test_a_bind_that_fails_restores_the_umask_and_names_the_key(tmp_path: Path,
                                                                umask_0: None) -> None:
    from logd.component import StartError

    path = tmp_path / ("x" * 200) / "control.sock"  # longer than a unix socket path may be
    path.parent.mkdir()

    async def main() -> None:
        await ControlServer(None, str(path)).start()  # type: ignore[arg-type]

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner, \
            pytest.raises(StartError, match=r"^daemon\.control_socket: cannot listen on "):
        runner.run(main())
    assert os.umask(0) == 0
