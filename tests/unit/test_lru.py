"""The hot-row LRU: bounded, and a read or a write keeps an entry."""

from __future__ import annotations

import pytest

from pipeline.lru import Lru


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
