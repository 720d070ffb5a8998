"""HTTP batch validation: the column-wise check and the per-record one agree."""

from __future__ import annotations

import random
from typing import Any

import pytest

from logd.listeners.http import BadRequest, _checked_severities, _valid_severities


def check(objs: list[Any]) -> bytes | str:
    """Severities, or the error the per-record check names. The column-wise check gives the
    same severities, or None: always when the batch is bad, and for rare valid spellings it
    leaves to the per-record check."""
    fast = _valid_severities(objs)
    try:
        slow = _checked_severities(objs, "index", list(range(len(objs))))
    except BadRequest as e:
        assert fast is None
        return f"{e.status} {e.error} {e}"
    assert fast is None or fast == slow
    return slow


def test_levels_and_defaults() -> None:
    usual = [{"message": "a"}, {"message": "b", "level": "ERROR"}, {"message": "c", "level": 7},
             {"message": "d", "level": "warning"}, {"message": "e", "timestamp": 1.5}]
    assert _valid_severities(usual) == check(usual) == bytes([6, 3, 7, 4, 6])
    assert check([{"message": "a"}, {"message": "b", "level": "ERROR"},
                  {"message": "c", "level": "Warning"}, {"message": "d", "level": 7},
                  {"message": "e", "level": "5"}, {"message": "f", "level": "wArN"}]) == \
        bytes([6, 3, 4, 7, 5, 4])


def test_every_level_name_takes_the_column_wise_path() -> None:
    # Found by tests/unit/listeners/test_http_props.py: "panic", "emergency" and "informational" are
    # level names everywhere else, but the column-wise table lacked them, so a batch using
    # them was checked record by record (right answer, slower path).
    objs = [{"message": "m", "level": name} for name in
            ("panic", "emergency", "information", "informational", "Panic", "PANIC")]
    assert _valid_severities(objs) == bytes([0, 0, 6, 6, 0, 0])


@pytest.mark.parametrize(("record", "error"), [
    ({"level": "info"}, "422 missing_message index 0"),
    ({"message": "m", "level": "loud"}, "422 bad_level index 0"),
    ({"message": "m", "level": True}, "422 bad_level index 0"),
    ({"message": "m", "level": 1.0}, "422 bad_level index 0"),
    ({"message": "m", "level": 8}, "422 bad_level index 0"),
    ({"message": "m", "level": ["info"]}, "422 bad_level index 0"),
    ({"message": "m", "level": "\u1369"}, "422 bad_level index 0"),  # ፩: was a ValueError
    ({"message": "m", "level": "\u0663"}, "422 bad_level index 0"),  # ٣: was read as 3
    ({"message": "m", "timestamp": "noon"}, "422 bad_timestamp index 0"),
    ({"message": "m", "timestamp": True}, "422 bad_timestamp index 0"),
    ({"message": "m", "timestamp": [1]}, "422 bad_timestamp index 0"),
    ("text", "400 bad_record index 0"),
])
def test_each_bad_record_is_named(record: Any, error: str) -> None:
    assert check([record]).startswith(error)
    # the first bad record is the one named, wherever it is
    assert check([{"message": "ok"}] * 3 + [record]).startswith(error.replace("index 0", "index 3"))


def test_timestamps_that_are_fine() -> None:
    assert check([{"message": "m", "timestamp": t} for t in
                  (1, 1.5, "2026-11-23T10:00:00Z", "2026-11-23 10:00:00+01:00", None)]) == \
        bytes([6] * 5)


def test_random_batches_agree() -> None:
    rnd = random.Random(3)
    levels: list[Any] = ["info", "ERROR", "nope", 3, 9, True, None, 2.0, "7"]
    stamps: list[Any] = [1, 2.5, "2026-01-01T00:00:00Z", "x", None, False]
    for _ in range(500):
        objs: list[Any] = []
        for _ in range(rnd.randint(1, 5)):
            o: dict[str, Any] = {}
            if rnd.random() < 0.95:
                o["message"] = "m"
            if rnd.random() < 0.5:
                o["level"] = rnd.choice(levels)
            if rnd.random() < 0.5:
                o["timestamp"] = rnd.choice(stamps)
            objs.append(o if rnd.random() < 0.98 else [o])
        check(objs)
