"""Properties of the config loader on random TOML documents built from the real key names.

Any document loads or raises ConfigError (nothing else); every problem names a key path the
document has, or a section or required key it lacks, and says what was expected rather than
repeating a Python error. A valid document's values come back as written: sizes, durations
and addresses as README says they read, computed here without logd.units.
"""

from __future__ import annotations

import dataclasses
import math
import re
from datetime import UTC, date, datetime, time, timedelta, timezone
from fractions import Fraction
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from logd import registry
from logd.config import (
    BufferConfig,
    Config,
    ConfigError,
    DaemonConfig,
    MemoryBufferConfig,
    RouteConfig,
    build,
    loads,
)
from logd.units import parse_address, parse_duration, parse_size
from testkit.props import examples

# -- TOML text from Python values (tomllib only reads) --

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_key(k: str) -> str:
    return k if _BARE_KEY.fullmatch(k) else toml_str(k)


def toml_str(s: str) -> str:
    out = []
    for c in s:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return toml_str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, (datetime, date, time)):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(map(toml_value, v)) + "]"
    assert isinstance(v, dict)
    return "{" + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + "}"


def toml(doc: dict[str, Any]) -> str:
    """Sections as [tables] (their tables as [section.name]), the rest inline."""
    # Keys that are not tables come first: after a [header] they would belong to it.
    lines = [f"{toml_key(section)} = {toml_value(body)}" for section, body in doc.items()
             if not isinstance(body, dict)]
    for section, body in doc.items():
        if not isinstance(body, dict):
            continue
        plain = {k: v for k, v in body.items() if not isinstance(v, dict)}
        lines.append(f"[{toml_key(section)}]")
        lines.extend(f"{toml_key(k)} = {toml_value(v)}" for k, v in plain.items())
        for name, table in body.items():
            if isinstance(table, dict):
                lines.append(f"[{toml_key(section)}.{toml_key(name)}]")
                lines.extend(f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"


# -- random documents --

def keys_of(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init and not f.metadata.get("internal")]


# Values a config might hold, good somewhere: for some key each is right, for most wrong.
PLAUSIBLE_VALUES: list[Any] = [
    "64MiB", "1.5GB", "4096", "0", "2 kib", "12XB", "-3MiB", 4096, 0, 1, 2, 64, 65536,
    "30s", "500ms", "1h30m", "0s", "1x", "", "1.5s", 30, 0.5, -1,
    "127.0.0.1:0", ":0", "[::1]:0", "::1:80", "host:99999",
    "tcp", "http", "analyzer", "file", "clickhouse", "kafka", "postgres", "frames", "lines",
    "memory", "disk", "block", "drop_newest", "raw", "json", "never", "flush", "rotate",
    "all", "leader", "none", "gzip", "app", "info", "debug", "warning",
    "/tmp/logd-props/{app}.log", "/tmp/{nope}.log", "/tmp/{app", "{app:{x}}.log", "/tmp/{}.log",
    "/tmp/logd-props/{instance}/{app}.log", "/tmp/{instance:>3}.log", "127.0.0.1:1{instance}",
    "clickhouse://default@127.0.0.1:9000/logs", "postgresql://logd@127.0.0.1/logd",
    "mysql://x", "logs", "Bad-Name", "127.0.0.1:9092", ["127.0.0.1:9092"], ["a:b"],
    "level >= warn", "(a", "*", "a &&", "level >= bogus",
    ["files"], ["emitters"], ["files", "db"], "files", [1.0, 2.0], [0, 0], [1.0],
    True, False, 0o640, 0o1000]
PLAUSIBLE = st.sampled_from(PLAUSIBLE_VALUES)

# Digits of any script where numbers are read from text; integers past 64 bits (TOML says
# 64, tomllib reads any) and past what a float holds.
DIGITS = st.text(st.sampled_from("0123456789") | st.characters(categories=["Nd", "No"]),
                 min_size=1, max_size=4)
SHAPED = (st.tuples(st.sampled_from(["127.0.0.1:", ":", "[::1]:", "h:"]), DIGITS).map("".join)
          | st.tuples(DIGITS, st.sampled_from(["", "s", "ms", "h", "MiB", "KB"])).map("".join))
SCALARS = (st.text(max_size=6) | st.integers(-2**70, 2**70) | st.floats() | st.booleans()
           | st.sampled_from([2**63, -2**63 - 1, 10**400, -10**400])
           | st.datetimes(timezones=st.none() | st.just(UTC))
           | st.dates() | st.times() | SHAPED)
ANY = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                   | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=4)
VALUES = PLAUSIBLE | PLAUSIBLE | ANY


def good_values(cls: type, key: str) -> list[Any]:
    """The plausible values `key` of `cls` takes on its own (asked of the loader itself:
    documents need mostly good keys to reach the checks across keys)."""
    good = []
    for v in PLAUSIBLE_VALUES:
        problems: list[tuple[str, str]] = []
        build(cls, {key: v}, "", problems)
        if not any(p == key for p, _ in problems):
            good.append(v)
    return good


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`good` nine times in ten: a document with one bad key in ten reaches the checks
    across keys, and all of them see bad values often enough."""
    return st.integers(0, 9).flatmap(lambda n: bad if n == 9 else good)


def rarely(draw: st.DrawFn) -> bool:
    # Hypothesis leans to small numbers: the rare case is the largest.
    return draw(st.integers(0, 9)) == 9


def tables(cls: type) -> st.SearchStrategy[dict[str, Any]]:
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for k in keys_of(cls):
        if k == "buffer":
            optional[k] = st.deferred(lambda: BUFFERS)
            continue
        good = good_values(cls, k)
        optional[k] = mostly(st.sampled_from(good), VALUES) if good else VALUES
    unknown = mostly(st.just({}), st.fixed_dictionaries({"bogus": VALUES}))
    return st.tuples(st.fixed_dictionaries({}, optional=optional), unknown).map(
        lambda t: {**t[0], **t[1]})


BUFFERS = mostly(tables(BufferConfig), VALUES)


@st.composite
def components(draw: st.DrawFn, kinds: dict[str, st.SearchStrategy[dict[str, Any]]]) -> Any:
    kind = draw(mostly(st.sampled_from(sorted(kinds)), st.sampled_from(["", "bogus"]) | VALUES))
    table = draw(kinds[kind] if isinstance(kind, str) and kind in kinds else
                 st.fixed_dictionaries({}, optional={"address": VALUES, "path": VALUES}))
    if not rarely(draw):
        table["type"] = kind
    return draw(VALUES) if rarely(draw) else table


LISTENERS = {k: tables(kind.config_class()) for k, kind in registry.LISTENERS.items()}
OUTPUTS = {k: tables(kind.config_class()) for k, kind in registry.OUTPUTS.items()}
NAMES = st.sampled_from(["emitters", "http", "files", "db", "a.b", "x y", ""])


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    if draw(st.booleans()):
        doc["daemon"] = draw(mostly(tables(DaemonConfig), VALUES))
    if not rarely(draw):
        doc["listeners"] = draw(st.dictionaries(NAMES, components(LISTENERS), min_size=1,
                                                max_size=3))
    if not rarely(draw):
        doc["outputs"] = draw(st.dictionaries(NAMES, components(OUTPUTS), max_size=3))
    if draw(st.booleans()):
        doc["routes"] = draw(st.dictionaries(NAMES, mostly(tables(RouteConfig), VALUES),
                                             max_size=2))
    if rarely(draw):
        doc[draw(st.sampled_from(["plugins", "daemon", "routes"]))] = draw(VALUES)
    return doc


def resolves(doc: Any, path: str) -> Any:
    """The value at a dotted key path, where names may hold dots; KeyError if none."""
    if path == "":
        return doc
    if isinstance(doc, dict):
        for key in doc:
            if path == key:
                return doc[key]
            if path.startswith(key + "."):
                try:
                    return resolves(doc[key], path[len(key) + 1:])
                except KeyError:
                    continue
    raise KeyError(path)


SECTIONS = {"daemon", "listeners", "outputs", "routes"}
REQUIRED = {"type", "to", "cert", "key", "paths", "start"}  # key names the config may require
# What a message must not be: a Python error passed through as the explanation.
RAW_PYTHON = re.compile(r"invalid literal|object of type|NoneType|unhashable|Traceback|"
                        r"not supported between|could not convert|int too large")


def check_problem(doc: dict[str, Any], key: str, message: str) -> None:
    assert message and not RAW_PYTHON.search(message), (key, message)
    if key in SECTIONS:
        return
    try:
        resolves(doc, key)
        return
    except KeyError:
        pass
    parent, _, last = key.rpartition(".")
    assert last in REQUIRED, f"{key!r} is not in the document: {message}"
    resolves(doc, parent)


@examples(200)
@given(documents())
def test_any_document_loads_or_raises_config_error_naming_its_keys(
        doc: dict[str, Any]) -> None:
    text = toml(doc)
    try:
        cfg = loads(text, source="props.toml")
    except ConfigError as e:
        assert e.problems
        for key, message in e.problems:
            check_problem(doc, key, message)
        return
    assert isinstance(cfg, Config) and cfg.listeners
    # What the loader accepts, the components can use.
    for out in cfg.outputs.values():
        if out.type == "file":
            out.path.format(app="a", event="e", date="d", severity="s", source="s", pod="p",
                            namespace="n")


CLASSES = [DaemonConfig, RouteConfig, BufferConfig, MemoryBufferConfig,
           *(k.config_class() for k in registry.LISTENERS.values()),
           *(k.config_class() for k in registry.OUTPUTS.values())]


# Values at the edges of what converters read: each tried on every key below.
EDGES = st.sampled_from([10**400, -10**400, 2**63, -2**63 - 1, float("nan"), float("inf"),
                         -0.0, 1e308, "", " ", "0", "-0", "1e3", "NaN", "inf", "\u00b2",
                         "\u0663", "1\u00b2KB", "\u0663s", ":\u00b2", "1.5.5MB", "01:02",
                         "1h-5m", "5 s", [], {}, [[]], [10**400], [-1.0]])


@examples(150)
@given(EDGES | SCALARS | PLAUSIBLE | ANY)
def test_any_value_of_any_key_is_taken_or_named(value: Any) -> None:
    for cls in CLASSES:
        for name in keys_of(cls):
            problems: list[tuple[str, str]] = []
            build(cls, {name: value}, "t", problems)
            for path, message in problems:
                assert path.startswith("t"), path
                assert message and not RAW_PYTHON.search(message), (name, path, message)


# Paths as str.format templates: literal text, {{ }}, and fields with what the format
# mini-language allows after a name (conversion, spec, nested fields), and broken braces.
TEMPLATE_FIELD = st.builds(
    lambda name, conv, spec: "{" + name + conv + spec + "}",
    st.sampled_from(["app", "date", "event", "severity", "source", "", "0", "app.x", "x"]),
    st.sampled_from(["", "", "!r", "!s", "!x"]),
    st.sampled_from(["", ""]) | st.text("d>0123456789x{}", max_size=3).map(lambda t: ":" + t))
TEMPLATE_PIECES = (TEMPLATE_FIELD | st.sampled_from(["/tmp/", "-", ".log", "{{", "}}", "{",
                                                     "}"]))


@examples(200)
@given(st.lists(TEMPLATE_PIECES, max_size=10).map("".join))
def test_a_path_template_that_loads_renders_for_any_record(path: str) -> None:
    from logd.outputs.file import FileOutputConfig
    problems: list[tuple[str, str]] = []
    cfg = build(FileOutputConfig, {"path": path or "x"}, "t", problems)
    if cfg is None:
        assert [p for p, _ in problems] == ["t.path"]
        return
    fields = {"app": "a", "event": "e", "date": "2026-01-01", "severity": "info",
              "source": "s"}
    cfg.path.format(**fields)


# -- valid documents, and what they must load as --

SIZE_UNITS = {"": 1, "B": 1, "k": 1000, "KB": 1000, "MB": 1000**2, "gb": 1000**3,
              "KiB": 1024, "Mi": 1024**2, "MiB": 1024**2, "GiB": 1024**3, "tib": 1024**4}


@st.composite
def sizes(draw: st.DrawFn, lo: int = 0) -> tuple[Any, int]:
    """(a size as written, its bytes: the number times the unit, fractions of a byte cut)."""
    if draw(st.booleans()):
        n = draw(st.integers(lo, lo + 2**40))
        return n, n
    unit = draw(st.sampled_from(sorted(SIZE_UNITS)))
    whole = draw(st.integers(0, 10**9))  # more digits: more room for a float to round
    frac = draw(st.none() | st.text("0123456789", min_size=1, max_size=3))
    number = str(whole) if frac is None else f"{whole}.{frac}"
    want = math.floor(Fraction(number) * SIZE_UNITS[unit])
    if want < lo:
        return lo, lo
    gap = draw(st.sampled_from(["", " "]))
    return f"{number}{gap}{unit}", want


DURATION_UNITS = {"ms": Fraction(1, 1000), "s": 1, "m": 60, "h": 3600, "d": 86400}


@st.composite
def durations(draw: st.DrawFn) -> tuple[Any, float]:
    if draw(st.booleans()):
        n = draw(st.integers(0, 10**6) | st.floats(0, 1e6))
        return n, float(n)
    parts = draw(st.lists(st.tuples(
        st.integers(0, 1000).map(str) | st.decimals(0, 100, places=2).map(str),
        st.sampled_from(sorted(DURATION_UNITS))), min_size=1, max_size=3))
    return ("".join(n + u for n, u in parts),
            float(sum(Fraction(n) * DURATION_UNITS[u] for n, u in parts)))


@st.composite
def addresses(draw: st.DrawFn) -> tuple[str, tuple[str, int]]:
    host = draw(st.sampled_from(["127.0.0.1", "", "[::1]", "localhost", "0.0.0.0", "[::]"]))
    port = draw(st.integers(0, 65535))
    return f"{host}:{port}", (host.strip("[]") or "0.0.0.0", port)


@examples(300)
@given(sizes(), durations(), addresses())
def test_sizes_durations_and_addresses_read_as_written(
        size: tuple[Any, int], duration: tuple[Any, float],
        address: tuple[str, tuple[str, int]]) -> None:
    assert parse_size(size[0]) == size[1]
    assert math.isclose(parse_duration(duration[0]), duration[1], rel_tol=1e-12,
                        abs_tol=1e-12)
    assert parse_address(address[0]) == address[1]


LEVELS = st.sampled_from(["debug", "info", "warning", "error"])
MATCHES = st.sampled_from(["*", "level >= warn", "app == billing && !debug",
                           "(ERROR || WARN) && (user || auth)", "listener == http"])


@st.composite
def valid_documents(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """(document, {key path: the value it must load as})."""
    doc: dict[str, Any] = {}
    want: dict[str, Any] = {}

    def put(path: str, written: Any, loaded: Any) -> None:
        section, _, rest = path.partition(".")
        table = doc.setdefault(section, {})
        *names, key = rest.split(".")
        for name in names:
            table = table.setdefault(name, {})
        table[key] = written
        want[path] = loaded

    for key, strategy in [("shutdown_timeout", durations()), ("stats_interval", durations())]:
        if draw(st.booleans()):
            put(f"daemon.{key}", *draw(strategy))
    if draw(st.booleans()):
        level = draw(LEVELS)
        put("daemon.log_level", level, level)
    if draw(st.booleans()):
        put("daemon.metrics_address", *draw(addresses() | st.just(("", None))))

    put("listeners.emitters.type", "tcp", "tcp")
    put("listeners.emitters.address", *draw(addresses()))
    frame_written, frame = draw(sizes(lo=2))
    put("listeners.emitters.max_frame_bytes", frame_written, frame)
    pending_written, pending = draw(sizes(lo=frame + 4))
    if frame + 4 > 256 * 1024**2 or draw(st.booleans()):
        put("listeners.emitters.max_pending_bytes", pending_written, pending)
    if draw(st.booleans()):
        put("listeners.emitters.idle_timeout", *draw(durations()))
    framing = draw(st.sampled_from(["frames", "lines"]))
    put("listeners.emitters.framing", framing, framing)
    if draw(st.booleans()):
        put("listeners.http.type", "http", "http")
        put("listeners.http.max_body_bytes", *draw(sizes(lo=1024)))
        put("listeners.http.retry_after", *draw(durations()))

    put("outputs.files.type", "file", "file")
    path = draw(st.sampled_from(["/tmp/logd-props/{app}.log", "/tmp/{source}/{date}.log",
                                 "/tmp/{severity}-{event}.log", "/tmp/all.log"]))
    put("outputs.files.path", path, path)
    put("outputs.files.rotate_bytes", *draw(sizes()))
    put("outputs.files.buffer_size", *draw(sizes(lo=4096)))
    put("outputs.files.flush_interval", *draw(durations()))
    put("outputs.files.rotate_interval", *draw(durations()))
    max_bytes_written, max_bytes = draw(sizes(lo=4096))
    doc["outputs"]["files"]["buffer"] = {"max_bytes": max_bytes_written}
    want["outputs.files.buffer.max_bytes"] = max_bytes
    if draw(st.booleans()):
        put("outputs.db.type", "kafka", "kafka")
        put("outputs.db.batch_bytes", *draw(sizes(lo=1024)))
        put("outputs.db.batch_timeout", *draw(durations()))
        doc["outputs"]["db"]["buffer"] = {"type": "disk", "memory_bytes": draw(sizes())[0]}
    for n in range(draw(st.integers(0, 2))):
        match = draw(MATCHES)
        put(f"routes.r{n}.match", match, match)
        put(f"routes.r{n}.to", ["files"], ("files",))
    return doc, want


def loaded(cfg: Config, path: str) -> Any:
    section, _, rest = path.partition(".")
    obj: Any = getattr(cfg, section)
    for part in rest.split("."):
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    return obj


@examples(200)
@given(valid_documents())
def test_valid_documents_load_their_values(case: tuple[dict[str, Any], dict[str, Any]]) -> None:
    doc, want = case
    cfg = loads(toml(doc))
    for path, value in want.items():
        got = loaded(cfg, path)
        if isinstance(value, float):
            assert math.isclose(got, value, rel_tol=1e-12, abs_tol=1e-12), path
        else:
            assert got == value, path
    assert isinstance(cfg.outputs["files"].buffer, MemoryBufferConfig)


def test_toml_writer_round_trips_through_tomllib() -> None:
    import tomllib
    doc = {"daemon": {"a b": "x\"\\\n\x7f", "n": -3, "f": 1e20, "t": True,
                      "when": datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(0)))},
           "outputs": {"x.y": {"buffer": {"max_bytes": [1, "2"]}}}}
    assert tomllib.loads(toml(doc)) == doc
