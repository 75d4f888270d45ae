"""The hot-row LRU: bounded, and a read or a write keeps an entry."""

from __future__ import annotations

import pytest

from pipeline.lru import Lru, WeightedLru


def test_the_least_recently_used_entry_goes_first() -> None:
    lru: Lru[str, int] = Lru(2)
    lru["a"], lru["b"] = 1, 2
    assert lru.get("a") == 1  # read: "a" is now the newest
    lru["c"] = 3
    assert "b" not in lru
    assert (lru.get("a"), lru.get("c"), len(lru)) == (1, 3, 2)
    lru["a"] = 10  # a write refreshes too
    lru["d"] = 4
    assert "c" not in lru
    assert (lru.get("a"), lru.get("d")) == (10, 4)


def test_missing_keys_pop_and_clear() -> None:
    lru: Lru[str, int] = Lru(3)
    assert lru.get("x") is None
    assert lru.get("x", -1) == -1
    lru["x"] = 0  # a falsy value is still a hit
    assert lru.get("x", -1) == 0
    assert lru.pop("x") == 0
    assert lru.pop("x", -1) == -1
    lru["y"] = 1
    lru.clear()
    assert len(lru) == 0


def test_a_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        Lru(0)


def test_a_weighted_lru_keeps_its_weight_under_the_bound_oldest_first() -> None:
    lru: WeightedLru[str, str] = WeightedLru(10, max_weight=100)
    lru.put("a", "A", 40)
    lru.put("b", "B", 40)
    assert lru.get("a") == "A"  # read: "a" is now the newest
    lru.put("c", "C", 40)  # 120 > 100: the oldest ("b") goes
    assert ("b" in lru, lru.get("a"), lru.get("c"), lru.weight) == (False, "A", "C", 80)
    lru.put("a", "A2", 10)  # a re-put replaces the entry's weight
    assert (lru.get("a"), lru.weight, lru.weight_of("a"), lru.weight_of("b")) == (
        "A2",
        50,
        10,
        None,
    )
    lru.put("d", "D", 90)  # 140: "c" (older than the re-put "a") goes; 100 is within
    assert ("c" in lru, lru.weight, lru.get("a"), lru.get("d")) == (False, 100, "A2", "D")
    lru.put("e", "E", 1)  # 101: "a" goes, the oldest since the reads above touched "d" last
    assert ("a" in lru, "d" in lru, lru.weight) == (False, True, 91)


def test_a_weighted_lru_is_bounded_in_entries_too_and_skips_what_alone_is_too_heavy() -> None:
    lru: WeightedLru[str, int] = WeightedLru(2, max_weight=1_000)
    for i in range(3):
        lru.put(str(i), i, 1)
    assert ("0" in lru, len(lru), lru.weight) == (False, 2, 2)
    lru.put("1", 1, 1_001)  # heavier than the whole cache: dropped, and its old entry too
    assert ("1" in lru, len(lru), lru.weight) == (False, 1, 1)
    assert lru.pop("2") == 2
    assert lru.pop("2") is None
    assert (len(lru), lru.weight) == (0, 0)
    lru.put("x", 0, 5)
    lru.clear()
    assert (len(lru), lru.weight, lru.get("x")) == (0, 0, None)
    with pytest.raises(ValueError, match="must be positive"):
        WeightedLru(1, max_weight=0)
