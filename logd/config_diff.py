"""What a reload changes: a pure comparison of the running config and the new one.

The topology applies the result (logd/topology.py); nothing here touches a component, so
every decision a reload makes can be checked without starting one.
"""

from __future__ import annotations

from dataclasses import dataclass

from logd.config import Config

# Daemon keys a running process cannot take on: they name its paths and ports.
RESTART_KEYS = ("state_dir", "control_socket", "metrics_address")


@dataclass(frozen=True)
class ConfigDiff:
    outputs_added: tuple[str, ...] = ()
    outputs_removed: tuple[str, ...] = ()
    outputs_changed: tuple[str, ...] = ()
    listeners_added: tuple[str, ...] = ()
    listeners_removed: tuple[str, ...] = ()
    listeners_changed: tuple[str, ...] = ()
    listeners_kept: tuple[str, ...] = ()   # unchanged: they may reload their certificates
    routes_changed: bool = False
    log_level: str | None = None           # the new level, when it changed
    restart_keys: tuple[str, ...] = ()     # daemon keys that differ and need a restart
    refused: tuple[str, ...] = ()          # why the new config cannot be applied at all

    @property
    def applicable(self) -> bool:
        return not self.refused


def diff(old: Config, new: Config) -> ConfigDiff:
    """What applying `new` over the running `old` means."""
    outputs_changed = tuple(n for n in new.outputs
                            if n in old.outputs and new.outputs[n] != old.outputs[n])
    listeners_removed = tuple(n for n in old.listeners if n not in new.listeners)
    listeners_added = tuple(n for n in new.listeners if n not in old.listeners)
    listeners_changed = tuple(n for n in new.listeners
                              if n in old.listeners and new.listeners[n] != old.listeners[n])
    refused: list[str] = []
    pools = sorted(n for n in (*listeners_removed, *listeners_added, *listeners_changed)
                   if "analyzer" in (_type(old, n), _type(new, n)))
    if pools:
        # Analyzers stay connected to a pool for hours; moving them is not a reload's job.
        refused.append(f"analyzer listeners change only with a restart: {', '.join(pools)}")
    if new.daemon.instance != old.daemon.instance:
        # The name is in this process's paths: its outputs would move to another instance's
        # files while its state_dir and control socket stay.
        refused.append(f"daemon.instance changes only with a restart (running as "
                       f"{old.daemon.instance!r}, the file says {new.daemon.instance!r})")
    return ConfigDiff(
        outputs_added=tuple(n for n in new.outputs if n not in old.outputs),
        outputs_removed=tuple(n for n in old.outputs if n not in new.outputs),
        outputs_changed=outputs_changed,
        listeners_added=listeners_added,
        listeners_removed=listeners_removed,
        listeners_changed=listeners_changed,
        listeners_kept=tuple(n for n in new.listeners
                             if n in old.listeners and n not in listeners_changed),
        routes_changed=new.routes != old.routes,
        log_level=new.daemon.log_level if new.daemon.log_level != old.daemon.log_level
        else None,
        restart_keys=tuple(k for k in RESTART_KEYS
                           if getattr(new.daemon, k) != getattr(old.daemon, k)),
        refused=tuple(refused),
    )


def _type(cfg: Config, listener: str) -> str | None:
    found = cfg.listeners.get(listener)
    return None if found is None else found.type
