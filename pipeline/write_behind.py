"""An in-memory tier in front of a table: hot reads from memory, writes coalesced per batch.

The identity stage reads several rows per event (an identifier's owner, the parent chain,
the customer's node, hub state, suppression) and writes one or two. Through a faust table
each read costs a store lookup plus deserialisation, and each write a RocksDB put plus a
changelog record. :class:`WriteBehind` keeps

* a bounded LRU of rows read or written recently (absent rows too, since most identifiers
  an event carries are either new or already owned), and
* the rows written since the last :meth:`flush`, each written to the table once when the
  stage's batch ends, however often the batch changed it.

It is correct only while its owner is the table's sole writer, which the identity stage
is for its tenant's partition; :meth:`forget` must be called whenever partitions move
(faust then recovers or hands over the table underneath). No Kafka import: plain mappings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Final, Generic, TypeVar

from pipeline.lru import Lru

V = TypeVar("V")


class _Absent:
    """A row known not to exist (cached), or removed in this batch (to write)."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Final = _Absent()


class WriteBehind(MutableMapping[str, V], Generic[V]):
    """A mapping over ``table`` with a hot read tier and batch-coalesced writes."""

    def __init__(
        self,
        table: MutableMapping[str, V],
        hot_rows: int,
        read: Callable[[str], V | None] | None = None,
    ) -> None:
        """``read``: how a row missing from the tier is read (the table's ``get``)."""
        self.table = table
        self._read = table.get if read is None else read
        self._hot: Lru[str, V | _Absent] = Lru(hot_rows)
        self._dirty: dict[str, V | _Absent] = {}

    # -- reads ------------------------------------------------------------------------------
    def _row(self, key: str) -> V | _Absent:
        if (row := self._dirty.get(key, None)) is not None:
            return row
        if (row := self._hot.get(key)) is not None:
            return row
        found = self._read(key)
        row = ABSENT if found is None else found
        self._hot[key] = row
        return row

    def __getitem__(self, key: str) -> V:
        row = self._row(key)
        if isinstance(row, _Absent):
            raise KeyError(key)
        return row

    def get(self, key: str, default: V | None = None) -> V | None:  # type: ignore[override]
        # Mapping.get goes through __getitem__ and a KeyError for every absent row, and
        # most rows an event asks for (a new identifier's owner, its hub) are absent.
        row = self._row(key)
        return default if isinstance(row, _Absent) else row

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and not isinstance(self._row(key), _Absent)

    def __iter__(self) -> Iterator[str]:
        """Every key, this batch's writes included (a full scan: not for the hot path)."""
        for key in self.table:
            if not isinstance(self._dirty.get(key), _Absent):
                yield key
        for key, row in list(self._dirty.items()):
            if not isinstance(row, _Absent) and key not in self.table:
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)

    # -- writes -----------------------------------------------------------------------------
    def __setitem__(self, key: str, value: V) -> None:
        self._dirty[key] = value
        self._hot[key] = value

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self._dirty[key] = ABSENT
        self._hot[key] = ABSENT

    @property
    def unwritten(self) -> int:
        """Rows changed since the last flush."""
        return len(self._dirty)

    def flush(self, put: Callable[[str, V | None], None] | None = None) -> int:
        """Write every row changed since the last flush, once: to the table, or through
        ``put(key, value)`` (``None``: remove the row) when given; returns how many."""
        dirty, self._dirty = self._dirty, {}
        for key, row in dirty.items():
            if put is not None:
                put(key, None if isinstance(row, _Absent) else row)
            elif isinstance(row, _Absent):
                self.table.pop(key, None)
            else:
                self.table[key] = row
        return len(dirty)

    def forget(self) -> None:
        """Drop the hot tier (partitions moved: the table underneath may have been recovered
        or changed by another worker). Rows the batch in progress wrote stay, to be flushed
        by it, as they would have been written without this tier."""
        self._hot.clear()
