"""TOML -> frozen, validated config objects.

Every error names its key path ("outputs.files.rotate_bytes") and what was expected, and
all errors of a file are reported together so an operator fixes them in one pass.
"""

from __future__ import annotations

import dataclasses
import os
import re
import string
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any

from logd import registry
from logd.units import finite, parse_address, parse_duration, parse_size

Converter = Callable[[Any], Any]


class ConfigError(Exception):
    """One or more problems in a config, each as (key path, message)."""

    def __init__(self, problems: list[tuple[str, str]], source: str = "") -> None:
        self.problems = problems
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        where = f"{self.source}: " if self.source else ""
        return "\n".join(f"{where}{key}: {msg}" if key else f"{where}{msg}"
                         for key, msg in self.problems)


# -- converters: each takes the TOML value and returns the typed one or raises ValueError --

def to_str(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"expected a string, got {_tname(v)}")
    return v


def to_nonempty_str(v: Any) -> str:
    s = to_str(v)
    if not s:
        raise ValueError("expected a non-empty string")
    return s


def to_bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, got {_tname(v)}")
    return v


def to_int(lo: int | None = None, hi: int | None = None) -> Converter:
    def conv(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"expected an integer, got {_tname(v)}")
        if lo is not None and v < lo:
            raise ValueError(f"expected an integer >= {lo}, got {v}")
        if hi is not None and v > hi:
            raise ValueError(f"expected an integer <= {hi}, got {v}")
        return v
    return conv


def to_size(lo: int = 0) -> Converter:
    def conv(v: Any) -> int:
        n = parse_size(v)
        if n < lo:
            raise ValueError(f"expected a size of at least {lo} bytes, got {v!r}")
        return n
    return conv


def to_duration(v: Any) -> float:
    return parse_duration(v)


def to_address(v: Any) -> tuple[str, int]:
    return parse_address(v)


def one_of(*choices: str) -> Converter:
    def conv(v: Any) -> str:
        if v not in choices:
            shown = ", ".join(f'"{c}"' for c in choices)
            raise ValueError(f"expected one of {shown}, got {v!r}")
        return v
    return conv


def to_str_list(v: Any) -> tuple[str, ...]:
    if isinstance(v, str):
        return (v,)
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ValueError(f"expected a list of strings, got {_tname(v)}")
    return tuple(v)


def to_brokers(v: Any) -> tuple[str, ...]:
    """Kafka bootstrap brokers: one or more host:port."""
    brokers = to_str_list(v)
    if not brokers:
        raise ValueError("expected at least one host:port")
    for b in brokers:
        host, _, port = b.rpartition(":")
        if not host or not (port.isascii() and port.isdigit()):
            raise ValueError(f"expected host:port, got {b!r}")
    return brokers


def to_weights(v: Any) -> tuple[float, ...]:
    if not isinstance(v, list) or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        raise ValueError(f"expected a list of numbers, got {_tname(v)}")
    for x in v:
        if not finite(x) or x < 0:
            raise ValueError(f"weights must be finite and >= 0, got {x!r}")
    return tuple(float(x) for x in v)


INSTANCE_ENV = "LOGD_INSTANCE"
# A name that is safe as one path component, and reads the same in a systemd unit's %i.
_INSTANCE_NAME = re.compile(r"[A-Za-z0-9_@+-][A-Za-z0-9_.@+-]{0,63}")


def to_instance(v: Any) -> str:
    s = to_str(v)
    if s and not _INSTANCE_NAME.fullmatch(s):
        raise ValueError("expected a name of up to 64 letters, digits and _ . @ + - (not "
                         f"starting with .), or \"\" for none; got {s!r}")
    return s


def _tname(v: Any) -> str:
    return {dict: "a table", list: "an array", str: "a string", bool: "a boolean",
            int: "an integer", float: "a float"}.get(type(v), type(v).__name__)


def setting(default: Any = MISSING, conv: Converter | None = None, doc: str = "") -> Any:
    """A config key: its default, how a TOML value becomes the typed value, what it means."""
    if default is MISSING:
        return field(metadata={"conv": conv, "doc": doc})
    return field(default=default, metadata={"conv": conv, "doc": doc})


def build(cls: type, table: Any, path: str, problems: list[tuple[str, str]]) -> Any:
    """Instantiate config dataclass `cls` from a TOML table, recording problems by key path.

    Returns None when any key of this table is wrong (the problems say which).
    """
    if not isinstance(table, dict):
        problems.append((path, f"expected a table, got {_tname(table)}"))
        return None
    known = {f.name: f for f in dataclasses.fields(cls)
             if f.init and not f.metadata.get("internal")}
    ok = True
    for key in table:
        if key not in known:
            problems.append((_join(path, key), f"unknown key; expected one of: "
                             f"{', '.join(sorted(known))}"))
            ok = False
    values: dict[str, Any] = {}
    for name, f in known.items():
        key_path = _join(path, name)
        if name not in table:
            if f.default is MISSING and f.default_factory is MISSING:
                problems.append((key_path, "is required"))
                ok = False
            continue
        raw = table[name]
        conv = f.metadata.get("conv")
        try:
            nested = f.metadata.get("nested")
            if nested is not None:
                values[name] = build(nested, raw, key_path, problems)
                ok = ok and values[name] is not None
                continue
            values[name] = conv(raw) if conv else raw
        except ValueError as e:
            problems.append((key_path, str(e)))
            ok = False
    if not ok:
        return None
    try:
        obj = cls(**values)
    except ValueError as e:
        problems.append((path, str(e)))
        return None
    check = getattr(obj, "validate", None)
    if check is not None:
        for key, msg in check():
            problems.append((_join(path, key), msg))
            ok = False
    return obj if ok else None


def nested(cls: type, default_factory: Callable[[], Any], doc: str = "") -> Any:
    """A sub-table key (like `buffer = { ... }`), built with `cls`."""
    return field(default_factory=default_factory,
                 metadata={"nested": cls, "conv": None, "doc": doc})


def component_name() -> Any:
    """The component's name: the key of its table, filled in by the loader, not by users."""
    return field(default="", metadata={"internal": True})


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# -- the shared shapes --

def _memory_only(v: Any) -> str:
    if v == "disk":
        raise ValueError('only "memory" here: a disk spool is for outputs that send elsewhere '
                         "(ClickHouse, PostgreSQL, Kafka)")
    return one_of("memory")(v)


@dataclass(frozen=True)
class MemoryBufferConfig:
    """A bounded buffer in memory: what sits between the router and a writer."""

    type: str = setting("memory", lambda v: _memory_only(v),
                        "memory: records wait in RAM, bounded by max_bytes")
    max_bytes: int = setting(64 * 1024**2, to_size(lo=4096), "bound on buffered payload bytes")
    when_full: str = setting("block", one_of("block", "drop_newest"),
                             "block: listeners stop reading; drop_newest: drop and count")


@dataclass(frozen=True)
class BufferConfig(MemoryBufferConfig):
    """An output's bounded buffer, in memory or a disk spool."""

    type: str = setting("memory", one_of("memory", "disk"),
                        "memory: records wait in RAM; disk: in a spool that outlives restarts "
                        "and kill -9")
    path: str = setting("", lambda v: v if v == "" else to_nonempty_str(v),
                        "disk: the spool directory (default STATE_DIR/spool/NAME)")
    memory_bytes: int = setting(16 * 1024**2, to_size(lo=0),
                                "disk: recent batches also kept in RAM, so a writer that keeps "
                                "up reads nothing back")
    fsync_interval: float = setting(1.0, to_duration,
                                    "disk: fdatasync the spool this long after a write "
                                    "(0: never; the page cache still survives kill -9)")


DISK_DEFAULT_BYTES = 1024**3
MEMORY_DEFAULT_BYTES = 64 * 1024**2


@dataclass(frozen=True)
class DatabaseBufferConfig(BufferConfig):
    """A database output's buffer: a disk spool unless the config says memory, so one dead
    database holds its records on disk for a long while before it stalls anything."""

    type: str = setting("disk", one_of("memory", "disk"),
                        "disk: a spool that outlives restarts and kill -9; memory: RAM only")
    max_bytes: int = setting(0, to_size(lo=4096),
                             "bound on what waits (default: 1GiB on disk, 64MiB in memory)")

    def __post_init__(self) -> None:
        if not self.max_bytes:
            object.__setattr__(self, "max_bytes", DISK_DEFAULT_BYTES if self.type == "disk"
                               else MEMORY_DEFAULT_BYTES)


@dataclass(frozen=True)
class DaemonConfig:
    instance: str = setting("", to_instance,
                            "this process's name among the logd instances of a host, for "
                            "{instance} in paths (default: $LOGD_INSTANCE, else none)")
    state_dir: str = setting("/var/lib/logd", to_nonempty_str, "spools and offsets")
    control_socket: str = setting("/run/logd/control.sock", to_nonempty_str,
                                  "unix socket for logctl")
    shutdown_timeout: float = setting(30.0, to_duration,
                                      "how long SIGTERM may spend draining buffers")
    stats_interval: float = setting(60.0, to_duration,
                                    "log a METRICS line per output this often (0: only at exit)")
    log_level: str = setting("info", one_of("debug", "info", "warning", "error"),
                             "the daemon's own log level")
    metrics_address: tuple[str, int] | None = setting(
        None, lambda v: None if v == "" else to_address(v),
        "host:port for GET /metrics (Prometheus) and /health; \"\" turns it off")


@dataclass(frozen=True)
class RouteConfig:
    to: tuple[str, ...] = setting(MISSING, to_str_list, "outputs (or analyzer listeners)")
    match: str = setting("*", to_nonempty_str, "filter expression; \"*\" matches everything")
    weights: tuple[float, ...] = setting((), to_weights,
                                         "with weights, each record goes to one of `to`, "
                                         "picked by weight")

    def validate(self) -> list[tuple[str, str]]:
        if self.weights and len(self.weights) != len(self.to):
            return [("weights", f"expected {len(self.to)} weights, one per name in `to`, "
                     f"got {len(self.weights)}")]
        if self.weights and not any(self.weights):
            return [("weights", "at least one weight must be above 0")]
        return []


@dataclass(frozen=True)
class Config:
    daemon: DaemonConfig
    listeners: dict[str, Any]
    outputs: dict[str, Any]
    routes: dict[str, RouteConfig]
    source: str = ""


def load(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file; raises ConfigError naming every problem.

    `env` is where $LOGD_INSTANCE is read (the process environment when None).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([("", f"cannot read config: {e.strerror}")], str(p)) from None
    except UnicodeDecodeError as e:
        raise ConfigError([("", f"not UTF-8 at byte offset {e.start}")], str(p)) from None
    return loads(text, source=str(p), env=env)


def loads(text: str, source: str = "<string>",
          env: Mapping[str, str] | None = None) -> Config:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([("", f"invalid TOML: {e}")], source) from None
    return from_dict(doc, source, env)


def check_file(path: str, env: Mapping[str, str] | None = None) -> int:
    """`--check-config` / `logctl check-config`: print the verdict; 0 if valid, 2 if not."""
    import sys
    try:
        load(path, env)
    except ConfigError as e:
        print(e.render(), file=sys.stderr)
        return 2
    print(f"{path}: ok")
    return 0


def from_dict(doc: dict[str, Any], source: str = "<dict>",
              env: Mapping[str, str] | None = None) -> Config:
    problems: list[tuple[str, str]] = []
    sections = {"daemon", "listeners", "outputs", "routes"}
    for key in doc:
        if key not in sections:
            problems.append((key, "unknown section; expected one of: "
                             + ", ".join(sorted(sections))))

    instance = _instance(doc.get("daemon"), os.environ if env is None else env, problems)
    doc = _fill_instance(doc, instance, problems)
    daemon = build(DaemonConfig, doc.get("daemon", {}), "daemon", problems)
    if daemon is not None and instance:
        daemon = dataclasses.replace(daemon, instance=instance)
    listeners = _components(doc.get("listeners", {}), "listeners", registry.LISTENERS, problems)
    outputs = _components(doc.get("outputs", {}), "outputs", registry.OUTPUTS, problems)

    for name in set(listeners) & set(outputs):
        problems.append((f"outputs.{name}", "a listener has the same name; names must differ "
                         "because routes refer to both"))
    if not listeners and "listeners" not in {p.split(".")[0] for p, _ in problems}:
        problems.append(("listeners", "at least one listener is required"))

    routes: dict[str, RouteConfig] = {}
    raw_routes = doc.get("routes", {})
    if not isinstance(raw_routes, dict):
        problems.append(("routes", f"expected a table of routes, got {_tname(raw_routes)}"))
        raw_routes = {}
    destinations = set(outputs) | {n for n, c in listeners.items() if c.type == "analyzer"}
    for name, table in raw_routes.items():
        route = build(RouteConfig, table, f"routes.{name}", problems)
        if route is None:
            continue
        for dest in route.to:
            if dest not in destinations:
                problems.append((f"routes.{name}.to", f"no output or analyzer listener named "
                                 f"{dest!r}; known: {', '.join(sorted(destinations)) or 'none'}"))
        from logd import filters
        try:
            filters.compile_filter(route.match)
        except filters.FilterError as e:
            # The message stays on the key's line; the expression and a caret go below it.
            excerpt = e.excerpt("    ")
            problems.append((f"routes.{name}.match",
                             e.message + (f"\n{excerpt}" if excerpt else "")))
        routes[name] = route
    if problems:
        raise ConfigError(problems, source)
    assert daemon is not None
    return Config(daemon=daemon, listeners=listeners, outputs=outputs, routes=routes,
                  source=source)


def _instance(daemon: Any, env: Mapping[str, str],
              problems: list[tuple[str, str]]) -> str | None:
    """The instance name: `[daemon] instance`, else $LOGD_INSTANCE, else "". None when the
    name given is none (build() or this reports it)."""
    if isinstance(daemon, dict) and "instance" in daemon:
        try:
            return to_instance(daemon["instance"])
        except ValueError:
            return None
    try:
        return to_instance(env.get(INSTANCE_ENV, ""))
    except ValueError as e:
        problems.append(("daemon.instance", f"from ${INSTANCE_ENV}: {e}"))
        return None


def _fill_instance(doc: dict[str, Any], instance: str | None,
                   problems: list[tuple[str, str]]) -> dict[str, Any]:
    """`doc` with {instance} replaced by the instance name in the keys that instances sharing
    one config file must not share: the daemon's paths and metrics port, and the outputs'
    files (a file output's `path`, `dead_letter`, `buffer.path`).

    A key that uses {instance} when no instance is set is a problem, and is left out (so its
    value is not reported again as a bad one); so is any such key when the instance name
    itself is bad (that is reported already).
    """
    doc = dict(doc)
    places: list[tuple[dict[str, Any], str, str, bool]] = []  # (table, key, key path, template)
    if isinstance(doc.get("daemon"), dict):
        doc["daemon"] = daemon = dict(doc["daemon"])
        for key in ("state_dir", "control_socket", "metrics_address"):
            places.append((daemon, key, f"daemon.{key}", False))
    if isinstance(doc.get("outputs"), dict):
        doc["outputs"] = outputs = dict(doc["outputs"])
        for name, table in outputs.items():
            if not isinstance(table, dict):
                continue
            outputs[name] = table = dict(table)
            places.append((table, "path", f"outputs.{name}.path", table.get("type") == "file"))
            places.append((table, "dead_letter", f"outputs.{name}.dead_letter", False))
            if isinstance(table.get("buffer"), dict):
                table["buffer"] = buffer = dict(table["buffer"])
                places.append((buffer, "path", f"outputs.{name}.buffer.path", False))
    for table, key, key_path, template in places:
        value = table.get(key)
        if not isinstance(value, str) or not _uses_instance(value, template):
            continue
        if instance is None:
            del table[key]
            continue
        try:
            table[key] = _fill(value, instance, template)
        except ValueError as e:
            problems.append((key_path, str(e)))
            del table[key]
    return doc


def _uses_instance(value: str, template: bool) -> bool:
    if not template:
        return "{instance}" in value
    try:
        return any(name == "instance" for _, name, _, _ in string.Formatter().parse(value))
    except ValueError:
        return False  # a broken template: the output's own check says how


def _fill(value: str, instance: str, template: bool) -> str:
    """`value` with its {instance} replaced. In a str.format template (a file output's path)
    only {instance} fields are, so {{instance}} stays literal text."""
    if not instance:
        raise ValueError(f"uses {{instance}}, but no instance is set: set [daemon] instance "
                         f"or the environment variable {INSTANCE_ENV}")
    if not template:
        return value.replace("{instance}", instance)
    out = []
    for literal, name, spec, conv in string.Formatter().parse(value):
        out.append(literal.replace("{", "{{").replace("}", "}}"))
        if name is None:
            continue
        shown = "{" + name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
        if name != "instance":
            out.append(shown)
        elif spec or conv:
            raise ValueError(f"template field {shown} has a format; expected a plain "
                             "{instance}")
        else:
            out.append(instance)  # no braces in a name (see _INSTANCE_NAME): nothing to escape
    return "".join(out)


def _components(tables: Any, section: str, kinds: dict[str, registry.Kind],
                problems: list[tuple[str, str]]) -> dict[str, Any]:
    if not isinstance(tables, dict):
        problems.append((section, f"expected a table of named {section}, got {_tname(tables)}"))
        return {}
    out: dict[str, Any] = {}
    for name, table in tables.items():
        path = f"{section}.{name}"
        if not isinstance(table, dict):
            problems.append((path, f"expected a table, got {_tname(table)}"))
            continue
        kind_name = table.get("type")
        if kind_name is None:
            problems.append((f"{path}.type", f"is required; one of: {', '.join(sorted(kinds))}"))
            continue
        kind = kinds.get(kind_name) if isinstance(kind_name, str) else None
        if kind is None:
            problems.append((f"{path}.type", f"unknown type {kind_name!r}; expected one of: "
                             f"{', '.join(sorted(kinds))}"))
            continue
        cfg = build(kind.config_class(), table, path, problems)
        if cfg is not None:
            out[name] = dataclasses.replace(cfg, name=name)
    return out


def describe(cls: type) -> list[tuple[str, Any, str]]:
    """(key, default, doc) for each key of a config class: for help text and docs."""
    rows = []
    for f in dataclasses.fields(cls):
        if not f.init or f.metadata.get("internal"):
            continue
        default = f.default if f.default is not MISSING else "(required)"
        rows.append((f.name, default, f.metadata.get("doc", "")))
    return rows
