"""logd.units: sizes, durations and addresses as config files write them."""

from __future__ import annotations

import pytest

from logd.units import parse_address, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("64MiB", 64 * 1024**2),
        ("1GB", 1000**3),
        ("4096", 4096),
        (4096, 4096),
        ("1.5KiB", 1536),
        ("0", 0),
        (" 2 kib ", 2048),
    ],
)
def test_parse_size_accepts_units_numbers_and_fractions(text: object, expected: int) -> None:
    assert parse_size(text) == expected


def test_parse_size_of_a_fraction_is_exact() -> None:
    # Found by tests/unit/test_config_props.py ("2048.3tib" read one byte over): a float
    # product rounds either way, 2.01 * 1000 is 2009.9999999999998.
    assert parse_size("2.01KB") == 2010
    assert parse_size("8.19KB") == 8190
    assert parse_size("2048.3tib") == 2252129667173580  # 2048.3 * 1024**4 = ...580.8
    assert parse_size("0.5B") == 0


# "٣" is ARABIC-INDIC DIGIT THREE, "²" SUPERSCRIPT TWO: str.isdigit() and re's \d take
# them, and int() or float() read or refuse them; sizes, durations and ports are ASCII.
@pytest.mark.parametrize("bad", ["12XB", -1, True, "abc", "", 1.5, None, "-3MiB", "\u0663MiB",
                                 "1\u00b2KB"])
def test_parse_size_rejects_bad_values_with_accepted_forms(bad: object) -> None:
    with pytest.raises(ValueError, match=r"size"):
        parse_size(bad)


def test_parse_size_error_shows_the_offending_value() -> None:
    with pytest.raises(ValueError, match=r"'12XB'"):
        parse_size("12XB")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", 30.0),
        ("500ms", 0.5),
        ("1h30m", 5400.0),
        (2, 2.0),
        (0.25, 0.25),
        ("1d", 86400.0),
        (" 1m30s ", 90.0),
    ],
)
def test_parse_duration_accepts_units_and_compounds(text: object, expected: float) -> None:
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize("bad", ["30", "s", "1x", "", "1h30", "1hx30m", -1, True, None,
                                 "\u0663s", "1\u00b2s"])
def test_parse_duration_rejects_bad_values(bad: object) -> None:
    with pytest.raises(ValueError, match=r"duration"):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("[::1]:9000", ("::1", 9000)),
        (":8080", ("0.0.0.0", 8080)),
        ("example.org:0", ("example.org", 0)),
        ("10.0.0.1:65535", ("10.0.0.1", 65535)),
    ],
)
def test_parse_address_splits_host_and_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("bad", ["host", "1.2.3.4:99999", "::1:80", "1.2.3.4:", "h:-1", 8080,
                                 # found by tests/unit/test_config_props.py: a ValueError of
                                 # int() ("invalid literal") was the config error's message
                                 ":\u00b2", "127.0.0.1:\u0663"])
def test_parse_address_rejects_bad_values(bad: object) -> None:
    with pytest.raises(ValueError, match=r"address"):
        parse_address(bad)


@pytest.mark.parametrize("bad", [float("nan"), float("-inf"), 10**400, -10**400])
def test_parse_duration_rejects_non_finite_numbers(bad: float) -> None:
    # TOML has nan: `flush_interval = nan` must not become a duration no comparison can reach.
    with pytest.raises(ValueError, match=r"duration"):
        parse_duration(bad)


def test_integers_past_a_float_are_no_duration() -> None:
    # Found by tests/unit/test_config_props.py: tomllib reads `flush_interval = 1000...0`
    # (400 digits) as an int, and math.isfinite() raised OverflowError out of the loader.
    with pytest.raises(ValueError, match=r"finite duration"):
        parse_duration(10**400)
    assert parse_duration(2**63) == float(2**63)
