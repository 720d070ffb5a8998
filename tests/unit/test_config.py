"""logd.config.loads: validation, key paths in errors, every error reported at once."""

from __future__ import annotations

import pytest

from logd.config import (
    BufferConfig,
    ConfigError,
    DatabaseBufferConfig,
    MemoryBufferConfig,
    loads,
)

LISTENER = """
[listeners.emitters]
type = "tcp"
address = "127.0.0.1:0"
"""

OUTPUT = """
[outputs.files]
type = "file"
path = "/tmp/logd-unit/{app}.log"
"""


def problems_of(text: str) -> dict[str, str]:
    """The problems `loads` reports for `text`, by key path (it must reject the text)."""
    with pytest.raises(ConfigError) as info:
        loads(text)
    return dict(info.value.problems)


def test_minimal_config_loads_with_defaults() -> None:
    cfg = loads(LISTENER + OUTPUT)
    listener = cfg.listeners["emitters"]
    output = cfg.outputs["files"]
    assert listener.name == "emitters"
    assert listener.address == ("127.0.0.1", 0)
    assert listener.framing == "frames"
    assert output.name == "files"
    assert output.path == "/tmp/logd-unit/{app}.log"
    assert output.format == "raw"
    assert output.buffer == MemoryBufferConfig()
    assert cfg.routes == {}
    assert cfg.daemon.shutdown_timeout == 30.0


def test_unknown_top_level_section_is_named() -> None:
    problems = problems_of(LISTENER + OUTPUT + "\n[plugins]\nx = 1\n")
    assert list(problems) == ["plugins"]
    assert "unknown section" in problems["plugins"]
    assert "listeners" in problems["plugins"]


def test_unknown_listener_key_names_its_full_path() -> None:
    problems = problems_of(LISTENER + "bogus = 1\n" + OUTPUT)
    assert list(problems) == ["listeners.emitters.bogus"]
    assert "unknown key" in problems["listeners.emitters.bogus"]
    assert "max_connections" in problems["listeners.emitters.bogus"]


def test_wrong_type_is_reported_with_expected_type() -> None:
    problems = problems_of(LISTENER + 'max_connections = "x"\n' + OUTPUT)
    assert list(problems) == ["listeners.emitters.max_connections"]
    assert "expected an integer, got a string" in problems["listeners.emitters.max_connections"]


def test_bad_size_names_key_path_and_value() -> None:
    problems = problems_of(LISTENER + OUTPUT + 'rotate_bytes = "12 parsecs"\n')
    assert list(problems) == ["outputs.files.rotate_bytes"]
    assert "12 parsecs" in problems["outputs.files.rotate_bytes"]


def test_bad_duration_names_key_path() -> None:
    problems = problems_of(LISTENER + OUTPUT + 'flush_interval = "soon"\n')
    assert list(problems) == ["outputs.files.flush_interval"]
    assert "duration" in problems["outputs.files.flush_interval"]


def test_unknown_component_type_lists_valid_types() -> None:
    text = LISTENER.replace('"tcp"', '"udp"') + OUTPUT.replace('"file"', '"s3"')
    problems = problems_of(text)
    assert "unknown type 'udp'" in problems["listeners.emitters.type"]
    assert "tcp" in problems["listeners.emitters.type"]
    assert "unknown type 's3'" in problems["outputs.files.type"]
    assert "file" in problems["outputs.files.type"]


def test_non_string_component_type_is_a_config_error() -> None:
    # A TOML array or inline table as `type` must be reported like any other bad value.
    text = LISTENER.replace('"tcp"', '["tcp"]') + OUTPUT
    problems = problems_of(text)
    assert "listeners.emitters.type" in problems


def test_route_to_missing_output_names_known_outputs() -> None:
    text = LISTENER + OUTPUT + '\n[routes.errors]\nto = ["archive"]\nmatch = "level >= warn"\n'
    problems = problems_of(text)
    assert list(problems) == ["routes.errors.to"]
    assert "'archive'" in problems["routes.errors.to"]
    assert "files" in problems["routes.errors.to"]


def test_route_with_bad_match_expression_is_reported() -> None:
    text = LISTENER + OUTPUT + '\n[routes.r]\nto = "files"\nmatch = "level >= bogus"\n'
    problems = problems_of(text)
    assert list(problems) == ["routes.r.match"]
    assert "bogus" in problems["routes.r.match"]


def test_bad_match_shows_the_message_on_the_key_line_and_a_caret_below() -> None:
    text = (LISTENER + OUTPUT + '\n[routes.important]\nto = "files"\n'
            'match = "level >= warn && (user || "\n')
    with pytest.raises(ConfigError) as info:
        loads(text, source="logd.toml")
    assert info.value.render().splitlines() == [
        "logd.toml: routes.important.match: expected a word, a quoted string, '(' or '!' "
        "at column 27",
        "    level >= warn && (user || ",
        "                              ^",
    ]


def test_bad_field_filter_shows_what_was_expected_under_its_route_key() -> None:
    text = (LISTENER + OUTPUT + '\n[routes.slow]\nto = "files"\n'
            "match = 'level >= warn && duration_ms > \"250\"'\n")
    with pytest.raises(ConfigError) as info:
        loads(text, source="logd.toml")
    assert info.value.render().splitlines() == [
        "logd.toml: routes.slow.match: '>' compares numbers; expected a number at column 33, "
        "found '250' (a quoted value is text)",
        "    level >= warn && duration_ms > \"250\"",
        "                                    ^",
    ]


def test_valid_route_loads_with_single_string_destination() -> None:
    cfg = loads(LISTENER + OUTPUT + '\n[routes.r]\nto = "files"\nmatch = "ERROR || WARN"\n')
    assert cfg.routes["r"].to == ("files",)
    assert cfg.routes["r"].match == "ERROR || WARN"


def test_unknown_path_template_field_is_reported() -> None:
    problems = problems_of(LISTENER + OUTPUT.replace("{app}", "{nope}"))
    assert list(problems) == ["outputs.files.path"]
    assert "{nope}" in problems["outputs.files.path"]
    assert "{app}" in problems["outputs.files.path"]


def test_invalid_toml_message_mentions_line() -> None:
    with pytest.raises(ConfigError) as info:
        loads(LISTENER + "address = \n", source="logd.toml")
    assert "invalid TOML" in str(info.value)
    assert "line 5" in str(info.value)
    assert str(info.value).startswith("logd.toml: ")


def test_several_errors_are_all_reported_together() -> None:
    text = (
        LISTENER + 'max_connections = "x"\nbogus = true\n'
        + OUTPUT + 'rotate_bytes = "12 parsecs"\nflush_interval = "1x"\n'
        + '\n[daemon]\nlog_level = "loud"\n'
        + '\n[routes.r]\nto = "files"\nmatch = "(a"\n'
    )
    problems = problems_of(text)
    assert {
        "listeners.emitters.max_connections",
        "listeners.emitters.bogus",
        "outputs.files.rotate_bytes",
        "outputs.files.flush_interval",
        "daemon.log_level",
        "routes.r.match",
    } <= set(problems)


def test_nested_buffer_table_is_parsed() -> None:
    text = LISTENER + OUTPUT + 'buffer = { max_bytes = "1MiB", when_full = "drop_newest" }\n'
    buffer = loads(text).outputs["files"].buffer
    assert buffer == MemoryBufferConfig(type="memory", max_bytes=1024**2,
                                        when_full="drop_newest")


def test_a_disk_buffer_is_for_database_outputs_only() -> None:
    problems = problems_of(LISTENER + OUTPUT + 'buffer = { type = "disk" }\n')
    assert list(problems) == ["outputs.files.buffer.type"]
    assert "ClickHouse" in problems["outputs.files.buffer.type"]
    ch = LISTENER + """
[outputs.ch]
type = "clickhouse"
buffer = { type = "disk", max_bytes = "10GiB", path = "/var/spool/ch", fsync_interval = "0s" }
"""
    buffer = loads(ch).outputs["ch"].buffer
    assert buffer == DatabaseBufferConfig(type="disk", max_bytes=10 * 1024**3,
                                          path="/var/spool/ch", fsync_interval=0.0)


def test_database_outputs_spool_on_disk_unless_told_otherwise() -> None:
    def buffer_of(table: str) -> BufferConfig:
        return loads(LISTENER + f"[outputs.pg]\ntype = \"postgres\"\n{table}").outputs["pg"].buffer

    assert (buffer_of("").type, buffer_of("").max_bytes) == ("disk", 1024**3)
    memory = buffer_of('buffer = { type = "memory" }')
    assert (memory.type, memory.max_bytes) == ("memory", 64 * 1024**2)
    sized = buffer_of('buffer = { max_bytes = "5GiB", when_full = "drop_newest" }')
    assert (sized.type, sized.max_bytes, sized.when_full) == ("disk", 5 * 1024**3,
                                                              "drop_newest")


def test_bad_when_full_names_nested_key_path() -> None:
    problems = problems_of(LISTENER + OUTPUT + 'buffer = { when_full = "drop_oldest" }\n')
    assert list(problems) == ["outputs.files.buffer.when_full"]
    assert '"block", "drop_newest"' in problems["outputs.files.buffer.when_full"]


def test_listener_and_output_may_not_share_a_name() -> None:
    problems = problems_of(LISTENER + OUTPUT.replace("files", "emitters"))
    assert "outputs.emitters" in problems


def test_errors_about_database_urls_never_show_their_passwords() -> None:
    got = problems_of(LISTENER + """
[outputs.ch]
type = "clickhouse"
url = "http://default:hunter2@127.0.0.1:8123/logs"

[outputs.pg]
type = "postgres"
dsn = "mysql://logd:hunter2@db/logd?password=hunter2"
""")
    assert "expected clickhouse://" in got["outputs.ch.url"]
    assert "expected postgresql://" in got["outputs.pg.dsn"]
    assert "hunter2" not in repr(got)
    assert "default:***@127.0.0.1" in got["outputs.ch.url"]


def test_listeners_listen_on_loopback_unless_an_address_opens_them() -> None:
    cfg = loads('[listeners.a]\ntype = "tcp"\n[listeners.b]\ntype = "http"\n'
                '[listeners.c]\ntype = "analyzer"\n')
    assert [c.address for c in cfg.listeners.values()] == [
        ("127.0.0.1", 8080), ("127.0.0.1", 3000), ("127.0.0.1", 8081)]


def test_kafka_broker_ports_are_ascii_digits() -> None:
    problems = problems_of(LISTENER + '\n[outputs.k]\ntype = "kafka"\n'
                           'brokers = ["127.0.0.1:\u0663"]\n')
    assert list(problems) == ["outputs.k.brokers"]
    assert "host:port" in problems["outputs.k.brokers"]


def test_numbers_past_a_float_are_config_errors() -> None:
    # Found by tests/unit/test_config_props.py: OverflowError escaped the loader.
    big = "1" + "0" * 400
    problems = problems_of(LISTENER + f"idle_timeout = {big}\n" + OUTPUT
                           + f'\n[routes.r]\nto = "files"\nweights = [{big}]\n')
    assert set(problems) == {"listeners.emitters.idle_timeout", "routes.r.weights"}
    assert "finite" in problems["listeners.emitters.idle_timeout"]
    assert "finite" in problems["routes.r.weights"]


def test_frame_limit_over_the_default_pending_names_the_key_written() -> None:
    # Found by tests/unit/test_config_props.py: with only max_frame_bytes = "1.5GB" written,
    # the problem named listeners.emitters.max_pending_bytes, a key the file does not have.
    problems = problems_of(LISTENER + 'max_frame_bytes = "1.5GB"\n' + OUTPUT)
    assert list(problems) == ["listeners.emitters.max_frame_bytes"]
    assert "max_pending_bytes" in problems["listeners.emitters.max_frame_bytes"]
    problems = problems_of(LISTENER + 'max_frame_bytes = "1.5GB"\nmax_pending_bytes = "1GB"\n'
                           + OUTPUT)
    assert list(problems) == ["listeners.emitters.max_pending_bytes"]
    cfg = loads(LISTENER + 'max_frame_bytes = "1.5GB"\nmax_pending_bytes = "2GB"\n' + OUTPUT)
    assert cfg.listeners["emitters"].max_pending_bytes == 2 * 1000**3


@pytest.mark.parametrize("path", ["/tmp/{app:{x}}.log", "/tmp/{app:d}.log", "/tmp/{app!x}.log",
                                  "/tmp/{app:>300000000000}.log", "/tmp/{date!s}.log"])
def test_path_template_fields_are_plain(path: str) -> None:
    # Found by tests/unit/test_config_props.py: these loaded, then str.format failed at
    # start or at every write (KeyError, ValueError, MemoryError for the last).
    problems = problems_of(LISTENER + OUTPUT.replace("/tmp/logd-unit/{app}.log", path))
    assert list(problems) == ["outputs.files.path"]
    assert "plain field" in problems["outputs.files.path"]


def test_path_template_may_escape_braces() -> None:
    cfg = loads(LISTENER + OUTPUT.replace("{app}.log", "{{app}}-{app}.log"))
    assert cfg.outputs["files"].path.format(app="a") == "/tmp/logd-unit/{app}-a.log"


def test_a_kafka_input_session_shorter_than_a_second_is_named() -> None:
    problems = problems_of('[listeners.k]\ntype = "kafka"\nsession_timeout = "200ms"\n'
                           + OUTPUT)
    assert list(problems) == ["listeners.k.session_timeout"]
    assert "at least 1s" in problems["listeners.k.session_timeout"]
    cfg = loads('[listeners.k]\ntype = "kafka"\nsession_timeout = "45s"\n' + OUTPUT)
    assert cfg.listeners["k"].session_timeout == 45.0
