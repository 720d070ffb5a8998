"""Figures in at most 6 columns."""

from __future__ import annotations

import pytest

from logd.top import human


@pytest.mark.parametrize(("n", "text"), [
    (0, "0"), (0.5, "0.5"), (7, "7"), (999, "999"), (999.6, "1.0k"), (1234, "1.2k"),
    (99_949, "99.9k"), (456_000, "456k"), (1_200_000, "1.2M"), (3.4e9, "3.4G"),
])
def test_count(n: float, text: str) -> None:
    assert human.count(n) == text


@pytest.mark.parametrize(("n", "text"), [
    (0, "0B"), (512, "512B"), (1000, "1.0KiB"), (1536, "1.5KiB"),
    (340 * 2**20, "340MiB"), (1023 * 2**20, "1.0GiB"), (5 * 2**40, "5.0TiB"),
])
def test_size(n: float, text: str) -> None:
    assert human.size(n) == text


def test_every_figure_below_a_pebibyte_fits_six_columns() -> None:
    for exponent in range(0, 50):
        for mantissa in (1.0, 4.99, 9.96, 99.96, 999.4, 999.6):
            n = mantissa * 2**exponent
            assert len(human.count(n)) <= 6, n
            assert len(human.size(n)) <= 6, n


def test_exact_and_duration() -> None:
    assert human.exact(3000, 7) == "3000" and human.exact(12_345_678, 7) == "12.3M"
    assert human.duration(65) == "1m05s"
    assert human.duration(3 * 3600 + 125) == "3h02m"
    assert human.duration(4 * 86400 + 7 * 3600 + 59) == "4d07h"
