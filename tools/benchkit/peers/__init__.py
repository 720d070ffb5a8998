"""The tools under test. Each peer writes its own config for a scenario, starts on a free
loopback port, writes kept records as raw lines into one output folder, and stops."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from benchkit.scenarios import Scenario


@dataclass
class Running(ABC):
    """A started tool: where to send, what to measure, and how it was configured."""

    pid: int
    port: int
    out_dir: Path
    command: list[str]
    config_name: str
    config_text: str

    @abstractmethod
    def stop(self) -> None:
        """Stops the tool and waits for it to exit, what it buffered written out."""


class Peer(Protocol):
    name: str

    def missing(self) -> str | None:
        """None when the tool can run; else one line naming the package and the command
        that installs it."""

    def version(self) -> str:
        """What was measured: a version or commit, one line."""

    def start(self, workdir: Path, scenario: Scenario) -> Running:
        """The tool running on `scenario` with its files under `workdir`."""


PEERS = ("logd", "rsyslog")


def peer_named(name: str) -> Peer:
    """The peer of that name, imported when asked for; ValueError lists the known ones."""
    if name == "logd":
        from benchkit.peers.logd import LogdPeer
        return LogdPeer()
    if name == "rsyslog":
        from benchkit.peers.rsyslog import RsyslogPeer
        return RsyslogPeer()
    raise ValueError(f"unknown peer {name!r} (known: {', '.join(PEERS)})")
