"""A bounded least-recently-used mapping for the stages' hot rows, on ``OrderedDict``.

The stages read and write a dozen cached rows per event (identity tiers, redirects, the
parsed-context cache). cachetools' ``LRUCache`` does this in Python around an
``OrderedDict`` and a size accounting: 0.6 µs a read and 2.7 µs a write once full,
measured on this machine; here a read is one dict look-up and a ``move_to_end`` (0.2 µs)
and a write one insertion and, when full, a ``popitem`` (0.5 µs), both in C.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar, overload

K = TypeVar("K")
V = TypeVar("V")
D = TypeVar("D")


class Lru(Generic[K, V]):
    """At most ``maxsize`` entries; a read or a write makes an entry the newest, and the
    oldest goes when a write would exceed ``maxsize``."""

    __slots__ = ("_data", "maxsize")

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self.maxsize = maxsize
        self._data: OrderedDict[K, V] = OrderedDict()

    @overload
    def get(self, key: K) -> V | None: ...
    @overload
    def get(self, key: K, default: D) -> V | D: ...
    def get(self, key: K, default: D | None = None) -> V | D | None:
        data = self._data
        try:
            value = data[key]
        except KeyError:
            return default
        data.move_to_end(key)
        return value

    def __setitem__(self, key: K, value: V) -> None:
        data = self._data
        data[key] = value
        data.move_to_end(key)
        if len(data) > self.maxsize:
            data.popitem(last=False)

    def pop(self, key: K, default: D | None = None) -> V | D | None:
        return self._data.pop(key, default)

    def clear(self) -> None:
        self._data.clear()

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)


class WeightedLru(Generic[K, V]):
    """At most ``maxsize`` entries weighing at most ``max_weight`` in all (a weight per
    entry, given when it is put: its encoded size, say); the oldest go first. An entry
    heavier than ``max_weight`` alone is not kept.

    For values whose memory varies by orders of magnitude, as a parsed customer context
    does with its history (a few KB for a page view, ~300 KB for 200 chat messages), where
    a count alone bounds nothing."""

    __slots__ = ("_data", "max_weight", "maxsize", "weight")

    def __init__(self, maxsize: int, max_weight: int) -> None:
        if maxsize < 1 or max_weight < 1:
            raise ValueError(f"maxsize and max_weight must be positive: {maxsize}, {max_weight}")
        self.maxsize = maxsize
        self.max_weight = max_weight
        self.weight = 0  # of the entries held
        self._data: OrderedDict[K, tuple[V, int]] = OrderedDict()

    def get(self, key: K) -> V | None:
        data = self._data
        try:
            value, _ = data[key]
        except KeyError:
            return None
        data.move_to_end(key)
        return value

    def put(self, key: K, value: V, weight: int) -> None:
        data = self._data
        old = data.pop(key, None)
        if old is not None:
            self.weight -= old[1]
        if weight > self.max_weight:
            return
        data[key] = (value, weight)
        self.weight += weight
        while len(data) > self.maxsize or self.weight > self.max_weight:
            self.weight -= data.popitem(last=False)[1][1]

    def weight_of(self, key: K) -> int | None:
        """The weight ``key`` was put with (None: not held); not a use."""
        entry = self._data.get(key)
        return None if entry is None else entry[1]

    def pop(self, key: K) -> V | None:
        old = self._data.pop(key, None)
        if old is None:
            return None
        self.weight -= old[1]
        return old[0]

    def clear(self) -> None:
        self._data.clear()
        self.weight = 0

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)
