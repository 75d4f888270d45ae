from __future__ import annotations

from collections.abc import Iterator, MutableMapping

import pytest

from pipeline.identity import Decision, IdentityEngine, IdentityTables
from pipeline.rules import HubRule, Rules
from pipeline.write_behind import WriteBehind
from tests.unit.test_identity import obs


class CountingTable(MutableMapping[str, str]):
    """A dict that counts reads and writes, standing in for a faust table."""

    def __init__(self, **rows: str) -> None:
        self.rows = dict(rows)
        self.reads = self.writes = self.deletes = 0

    def __getitem__(self, key: str) -> str:
        self.reads += 1
        return self.rows[key]

    def __setitem__(self, key: str, value: str) -> None:
        self.writes += 1
        self.rows[key] = value

    def __delitem__(self, key: str) -> None:
        self.deletes += 1
        del self.rows[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)


def test_reads_are_served_from_memory_after_the_first() -> None:
    table = CountingTable(a="1")
    tier: WriteBehind[str] = WriteBehind(table, hot_rows=10)
    assert tier.get("a") == "1"
    assert tier["a"] == "1"
    assert "a" in tier
    assert tier.get("missing") is None
    assert "missing" not in tier
    assert table.reads == 2  # the table was asked once for each row, present or absent
    with pytest.raises(KeyError):
        tier["missing"]
    assert tier.get("missing", "default") == "default"
    tier["b"] = "2"
    del tier["b"]  # removed in this batch: absent without asking the table
    assert tier.get("b", "gone") == "gone"
    assert table.reads == 2  # "b" was written by this batch: never asked of the table


def test_a_batch_writes_each_changed_row_once_when_flushed() -> None:
    table = CountingTable(a="1", gone="x")
    tier: WriteBehind[str] = WriteBehind(table, hot_rows=10)
    for value in ("2", "3", "4"):
        tier["a"] = value
    tier["b"] = "new"
    del tier["gone"]
    assert table.rows == {"a": "1", "gone": "x"}  # nothing written before the flush
    assert tier["a"] == "4"
    assert tier["b"] == "new"
    assert "gone" not in tier
    assert sorted(tier) == ["a", "b"]
    assert len(tier) == 2
    assert tier.unwritten == 3
    assert tier.flush() == 3
    assert table.rows == {"a": "4", "b": "new"}
    assert (table.writes, table.deletes) == (2, 1)
    assert tier.flush() == 0  # nothing changed since
    with pytest.raises(KeyError):
        del tier["never"]
    assert tier.pop("never", None) is None


def test_a_row_written_then_removed_in_one_batch_is_removed() -> None:
    table = CountingTable(a="1")
    tier: WriteBehind[str] = WriteBehind(table, hot_rows=10)
    tier["a"] = "2"
    tier.pop("a")
    tier.flush()
    assert table.rows == {}


def test_forget_rereads_the_table_but_keeps_the_batch_in_progress() -> None:
    table = CountingTable(a="1")
    tier: WriteBehind[str] = WriteBehind(table, hot_rows=10)
    assert tier["a"] == "1"
    tier["b"] = "mine"
    table.rows["a"] = "changed underneath"  # as a recovery after a rebalance would
    tier.forget()
    assert tier["a"] == "changed underneath"
    tier.flush()
    assert table.rows["b"] == "mine"


def test_flush_through_put_and_reads_through_read() -> None:
    """How the worker uses the tier: misses read by ``read`` (straight from RocksDB), the
    batch's rows handed to ``put`` (the table writer), removals as None; the table itself
    is neither read nor written."""
    table = CountingTable(a="1", gone="x")
    below = {"a": "1", "gone": "x"}
    asked: list[str] = []

    def read(key: str) -> str | None:
        asked.append(key)
        return below.get(key)

    tier: WriteBehind[str] = WriteBehind(table, hot_rows=10, read=read)
    assert tier["a"] == "1"
    assert tier.get("nope") is None
    tier["a"] = "2"
    del tier["gone"]
    put: dict[str, str | None] = {}
    assert tier.flush(put.__setitem__) == 2
    assert put == {"a": "2", "gone": None}
    assert asked == ["a", "nope", "gone"]  # each missing row read once, absent ones too
    assert (table.reads, table.writes, table.deletes) == (0, 0, 0)


def test_the_hot_tier_is_bounded() -> None:
    table = CountingTable(**{f"k{i}": str(i) for i in range(100)})
    tier: WriteBehind[str] = WriteBehind(table, hot_rows=8)
    for _ in range(2):
        for i in range(100):
            assert tier[f"k{i}"] == str(i)
    assert table.reads == 200  # a scan larger than the tier misses every time


def test_the_identity_engine_over_the_tier_decides_as_over_plain_dicts() -> None:
    def run(wrap: bool) -> tuple[list[Decision], dict[str, dict[str, object]]]:
        plain = IdentityTables.in_memory()
        names = ("owners", "parents", "nodes", "hubs", "suppressed")
        tiers = {n: WriteBehind(getattr(plain, n), hot_rows=4) for n in names}
        tables = IdentityTables(**tiers) if wrap else plain
        engine = IdentityEngine(Rules(hub=HubRule(max_customers=2)), tables)
        decisions = []
        for i in range(40):
            keys = [f"anonymous_id:a{i}", f"email:u{i % 7}@x.com"]
            if i % 5 == 0:
                keys.append("phone:+14155550100")
            decisions.append(engine.resolve(obs(f"e{i}", i, *keys)))
            if wrap and i % 6 == 5:  # batches of six
                for tier in tiers.values():
                    tier.flush()
        for tier in tiers.values():
            tier.flush()
        return decisions, {n: dict(getattr(plain, n)) for n in names}

    assert run(wrap=True) == run(wrap=False)
