"""StridePicker: shares follow weights for any weights; changes take effect at once."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from logd.weighted import StridePicker, WeightError


def shares(picker: StridePicker, picks: int) -> dict[object, float]:
    counts = Counter(picker.pick() for _ in range(picks))
    return {k: n / picks for k, n in counts.items()}


@pytest.mark.parametrize("seed", range(5))
def test_any_weights_get_their_share_within_one_percent(seed: int) -> None:
    rng = random.Random(seed)
    weights = {i: rng.uniform(0.001, 10) for i in range(rng.randrange(2, 40))}
    picker = StridePicker()
    for k, w in weights.items():
        picker.add(k, w)
    got = shares(picker, 100_000)
    total = sum(weights.values())
    for k, w in weights.items():
        assert abs(got.get(k, 0.0) - w / total) <= 0.01


def test_raising_a_tiny_weight_takes_effect_at_once() -> None:
    picker = StridePicker()
    picker.add("a", 1.0)
    picker.add("b", 0.001)
    for _ in range(2000):
        picker.pick(64)  # b takes one step at weight 0.001: far in the future
    picker.set_weight("b", 1.0)
    got = shares(picker, 10_000)
    assert abs(got["b"] - 0.5) <= 0.01


def test_weight_zero_drains_and_comes_back_without_debt() -> None:
    picker = StridePicker()
    picker.add("a", 1.0)
    picker.add("b", 1.0)
    picker.set_weight("b", 0)
    assert set(shares(picker, 1000)) == {"a"}
    picker.set_weight("b", 1.0)
    got = shares(picker, 1000)
    assert abs(got["b"] - 0.5) <= 0.01, "no burst to make up for the drain"


def test_suspended_members_are_skipped_and_resume() -> None:
    picker = StridePicker()
    for k in "abc":
        picker.add(k, 1.0)
    picker.suspend("a")
    assert "a" not in shares(picker, 300)
    picker.resume("a")
    assert "a" in shares(picker, 300)
    assert picker.eligible == 3


def test_no_eligible_member_picks_none_and_bad_weights_are_refused() -> None:
    picker = StridePicker()
    assert picker.pick() is None
    picker.add("a", 0)
    assert picker.pick() is None
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(WeightError):
            picker.set_weight("a", bad)


def test_heap_stays_bounded_through_churn() -> None:
    picker = StridePicker()
    for i in range(100):
        picker.add(i, 1.0 + i % 7)
    for step in range(20_000):
        picker.pick(3)
        if step % 10 == 0:
            picker.set_weight(step % 100, 1.0 + step % 5)
    assert len(picker._heap) <= 4 * 100 + 64
