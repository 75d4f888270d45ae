"""Identity quality: run a labelled dataset through the reference model and score it.

The reference model is the worker's logic without Kafka: ``normalise`` each event's
identifiers and ``IdentityEngine.resolve`` them, in event order, on in-memory tables.
Each event is then placed in the cluster of its customer's canonical id
(``engine.find``); an event with no usable identifier, or that resolved to no customer,
is *unassigned* and forms a cluster of its own.

Scores are **pairwise**: a pair of events is a predicted pair when both end in the same
cluster, a true pair when both come from the same person. Everything is computed from
contingency counts (sum of C(n, 2) over clusters, people and their intersections), in
linear time. The same dataset is also run with the guard rails off (``rails_off``), so
the report shows what the rails buy.

Per trap, the pairs counted are those in one cluster with at least one event of a person
in the trap: a *false pair* is such a pair of two different people. On a deterministic
trap there must be none.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from omnistitch.journeys import DETERMINISTIC_TRAPS, Dataset, Trap, generate
from pipeline.identity import IdentityEngine, IdentityTables, Observation
from pipeline.normalize import normalise
from pipeline.rules import HubRule, Rules, Trust, TypeRule
from schemas.identity import Evidence

SOURCE = "bench"


def pairs(n: int) -> int:
    """C(n, 2): the number of unordered pairs among ``n`` items."""
    return n * (n - 1) // 2


@dataclass(frozen=True)
class BCubed:
    """B-cubed precision and recall: per-event averages, so every event weighs the same."""

    precision: float
    recall: float


def bcubed(predicted: Sequence[Hashable], truth: Sequence[Hashable]) -> BCubed:
    """B-cubed scores of two labellings of the same items, in O(n)."""
    if len(predicted) != len(truth):
        raise ValueError("predicted and truth label different numbers of items")
    if not predicted:
        return BCubed(1.0, 1.0)
    clusters, people = Counter(predicted), Counter(truth)
    cells = Counter(zip(predicted, truth, strict=True))
    n = len(predicted)
    return BCubed(
        precision=sum(k * k / clusters[c] for (c, _), k in cells.items()) / n,
        recall=sum(k * k / people[p] for (_, p), k in cells.items()) / n,
    )


@dataclass(frozen=True)
class PairCounts:
    """Pairwise agreement of a predicted clustering with the truth."""

    predicted: int  # pairs in one predicted cluster
    true: int  # pairs of one true person
    both: int  # pairs that are both (true positives)

    @property
    def precision(self) -> float:
        return self.both / self.predicted if self.predicted else 1.0

    @property
    def recall(self) -> float:
        return self.both / self.true if self.true else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def pair_counts(predicted: Sequence[Hashable], truth: Sequence[Hashable]) -> PairCounts:
    """Pairwise counts of two labellings of the same items, in O(n)."""
    if len(predicted) != len(truth):
        raise ValueError("predicted and truth label different numbers of items")
    cells = Counter(zip(predicted, truth, strict=True))
    return PairCounts(
        predicted=sum(pairs(n) for n in Counter(predicted).values()),
        true=sum(pairs(n) for n in Counter(truth).values()),
        both=sum(pairs(n) for n in cells.values()),
    )


def trap_pair_counts(
    predicted: Sequence[Hashable], truth: Sequence[Hashable], involved: set[Hashable]
) -> PairCounts:
    """Pairwise counts restricted to pairs with at least one item of an ``involved`` person.

    ``predicted`` counts such pairs within a cluster, ``true`` the pairs of involved people,
    ``both`` the pairs of one involved person within a cluster; ``predicted - both`` is the
    number of false pairs that touch the involved people.
    """
    size: Counter[Hashable] = Counter()
    touched: Counter[Hashable] = Counter()
    for cluster, person in zip(predicted, truth, strict=True):
        size[cluster] += 1
        if person in involved:
            touched[cluster] += 1
    cells = Counter((c, p) for c, p in zip(predicted, truth, strict=True) if p in involved)
    people = Counter(p for p in truth if p in involved)
    return PairCounts(
        predicted=sum(pairs(size[c]) - pairs(size[c] - t) for c, t in touched.items()),
        true=sum(pairs(n) for n in people.values()),
        both=sum(pairs(n) for n in cells.values()),
    )


class TrapScore(BaseModel):
    """How the events of the people in one trap were clustered."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trap: str
    deterministic: bool = Field(description="No two people may ever be merged.")
    people: int
    trap_events: int = Field(description="Events that carry the trap's identifier.")
    predicted_pairs: int = Field(description="Pairs in one cluster touching a trap person.")
    false_pairs: int = Field(description="Of those, pairs of two different people.")
    precision: float
    recall: float = Field(description="Pairwise recall over all events of the trap's people.")
    trap_event_recall: float = Field(
        description="Pairwise recall over the events that carry the trap's identifier."
    )


class MixedCluster(BaseModel):
    """A predicted customer holding events of more than one person (a bad merge)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    customer_id: str
    events: int
    false_pairs: int
    people_count: int
    people: dict[str, int] = Field(description="Person -> events (largest first, at most 6).")
    traps: list[str] = Field(description="Traps its people are in.")


class RunScore(BaseModel):
    """The score of one rule set on one dataset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str
    rule_version: str
    events: int
    people: int
    predicted_customers: int = Field(description="Distinct clusters, unassigned included.")
    true_pairs: int
    predicted_pairs: int
    true_positive_pairs: int
    precision: float
    recall: float
    f1: float
    bcubed_precision: float = Field(description="Per-event average; every event weighs 1.")
    bcubed_recall: float
    merges: int
    rejected: dict[str, int] = Field(description="Rejected links by reason.")
    quarantined: int = Field(description="Identifiers quarantined as hubs.")
    unassigned: int = Field(description="Events with no usable identifier or no customer.")
    invalid_identifiers: int = Field(description="Identifiers dropped by normalisation.")
    elapsed_s: float = Field(description="Normalising and resolving, seconds.")
    events_per_s: float
    traps: list[TrapScore]
    mixed_clusters: list[MixedCluster] = Field(description="The worst bad merges, if any.")

    def trap(self, name: str) -> TrapScore:
        """The score of one trap."""
        return next(t for t in self.traps if t.trap == name)


class QualityReport(BaseModel):
    """Rails on versus rails off on one generated dataset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int
    customers: int
    events: int
    generated_s: float
    rails_on: RunScore
    rails_off: RunScore

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    def table(self) -> str:
        """The report as fixed-width text."""
        on, off = self.rails_on, self.rails_off
        head = (
            f"omnistitch identity quality: seed={self.seed} people={self.customers:,} "
            f"events={self.events:,} (generated in {self.generated_s:.1f}s)"
        )
        rows: list[tuple[str, str, str]] = [
            ("", "rails on", "rails off"),
            ("pairwise precision", f"{on.precision:.6f}", f"{off.precision:.6f}"),
            ("pairwise recall", f"{on.recall:.6f}", f"{off.recall:.6f}"),
            ("pairwise F1", f"{on.f1:.6f}", f"{off.f1:.6f}"),
            ("B-cubed precision", f"{on.bcubed_precision:.6f}", f"{off.bcubed_precision:.6f}"),
            ("B-cubed recall", f"{on.bcubed_recall:.6f}", f"{off.bcubed_recall:.6f}"),
            ("true pairs", f"{on.true_pairs:,}", f"{off.true_pairs:,}"),
            ("predicted pairs", f"{on.predicted_pairs:,}", f"{off.predicted_pairs:,}"),
            ("predicted customers", f"{on.predicted_customers:,}", f"{off.predicted_customers:,}"),
            ("merges", f"{on.merges:,}", f"{off.merges:,}"),
        ]
        for reason in sorted({*on.rejected, *off.rejected}):
            rows.append(
                (
                    f"rejected links: {reason}",
                    f"{on.rejected.get(reason, 0):,}",
                    f"{off.rejected.get(reason, 0):,}",
                )
            )
        rows += [
            ("quarantined identifiers", f"{on.quarantined:,}", f"{off.quarantined:,}"),
            (
                "invalid identifiers dropped",
                f"{on.invalid_identifiers:,}",
                f"{off.invalid_identifiers:,}",
            ),
            ("unassigned events", f"{on.unassigned:,}", f"{off.unassigned:,}"),
            ("elapsed (s)", f"{on.elapsed_s:.1f}", f"{off.elapsed_s:.1f}"),
            ("events/s", f"{on.events_per_s:,.0f}", f"{off.events_per_s:,.0f}"),
        ]
        lines = [head, ""] + [f"{a:<30}{b:>16}{c:>16}" for a, b, c in rows]
        lines += [
            "",
            "per trap: pairs touching the trap's people; * = deterministic (false pairs must be 0)",
            "recall: over all their events; trap recall: over the events carrying the trap",
            f"{'':<38}  {'rails on':-^41}  {'rails off':-^41}",
            f"{'trap':<24}{'people':>7}{'events':>7}"
            + f"  {'false pairs':>11}{'precision':>11}{'recall':>8}{'trap rec':>9}" * 2,
        ]
        for t_on in on.traps:
            t_off = off.trap(t_on.trap)
            name = f"{t_on.trap}{' *' if t_on.deterministic else ''}"
            cells = "".join(
                f"  {t.false_pairs:>11,}{t.precision:>11.6f}{t.recall:>8.4f}"
                f"{t.trap_event_recall:>9.4f}"
                for t in (t_on, t_off)
            )
            lines.append(f"{name:<24}{t_on.people:>7}{t_on.trap_events:>7}{cells}")
        for run in (on, off):
            if run.mixed_clusters:
                lines += ["", f"worst mixed clusters, {run.label}:"]
                for m in run.mixed_clusters:
                    lines.append(
                        f"  {m.customer_id}: {m.events} events of {m.people_count} people, "
                        f"{m.false_pairs:,} false pairs, traps={','.join(m.traps) or '-'}"
                    )
        return "\n".join(lines)


def rails_off(rules: Rules) -> Rules:
    """``rules`` without guard rails: no limits, trust, no-merge types, blocks or hubs."""
    types = {
        name: TypeRule.model_validate(
            {
                **rule.model_dump(),
                "limit": None,
                "limit_window_days": None,
                "trust": Trust.UNVERIFIED,
                "merge": True,
                "blocked": [],
                "blocked_patterns": [],
            }
        )
        for name, rule in rules.types.items()
    }
    return Rules(
        version=f"{rules.version}+rails-off",
        default_region=rules.default_region,
        unknown_types=rules.unknown_types,
        hub=HubRule(max_customers=1_000_000_000, window_days=rules.hub.window_days),
        blocked=[],
        blocked_patterns=[],
        types=types,
    )


def evaluate(dataset: Dataset, rules: Rules, label: str = "rails on") -> RunScore:
    """Resolve every event of ``dataset`` under ``rules`` and score the clustering."""
    engine = IdentityEngine(rules, IdentityTables.in_memory())
    assigned: list[str | None] = []
    accepted: list[list[str]] = []
    merges = invalid = 0
    rejected: Counter[str] = Counter()
    started = time.perf_counter()
    for event in dataset.events:
        result = normalise(event.identifiers, rules)
        invalid += len(result.rejected)
        if not result.identifiers:
            assigned.append(None)
            accepted.append([])
            continue
        evidence = Evidence(
            event_id=event.event_id,
            channel=event.channel,
            source=SOURCE,
            occurred_at=event.occurred_at,
            rule_version=rules.version,
        )
        decision = engine.resolve(Observation(result.identifiers, evidence))
        assigned.append(decision.customer_id)
        accepted.append([i.key for i in result.identifiers if i.key in decision.accepted])
        merges += len(decision.merges)
        rejected.update(r.reason for r in decision.rejected)
    elapsed = time.perf_counter() - started

    # An event belongs to the customer now holding its identifiers (splits and quarantines
    # move events the way the context stage does: by the first identifier still held);
    # unassigned events are singletons, labelled so they cannot collide with customer ids.
    def final(cid: str | None, keys: list[str], event_id: str) -> str:
        if cid is None:
            return f"~{event_id}"
        held = (root for k in keys if (root := engine.lookup(k)) is not None)
        return next(held, engine.find(cid))

    predicted = [
        final(cid, keys, event.event_id)
        for cid, keys, event in zip(assigned, accepted, dataset.events, strict=True)
    ]
    truth = [e.true_person for e in dataset.events]
    total = pair_counts(predicted, truth)
    b3 = bcubed(predicted, truth)
    trap_of = dataset.trap_of()
    traps = []
    for trap in Trap:
        involved: set[Hashable] = set(dataset.trap_people[trap.value])
        counts = trap_pair_counts(predicted, truth, involved)
        carrying = [i for i, e in enumerate(dataset.events) if e.trap == trap.value]
        on_trap = pair_counts([predicted[i] for i in carrying], [truth[i] for i in carrying])
        traps.append(
            TrapScore(
                trap=trap.value,
                deterministic=trap in DETERMINISTIC_TRAPS,
                people=len(involved),
                trap_events=len(carrying),
                predicted_pairs=counts.predicted,
                false_pairs=counts.predicted - counts.both,
                precision=counts.precision,
                recall=counts.recall,
                trap_event_recall=on_trap.recall,
            )
        )
    return RunScore(
        label=label,
        rule_version=rules.version,
        events=len(dataset.events),
        people=len(dataset.people),
        predicted_customers=len(set(predicted)),
        true_pairs=total.true,
        predicted_pairs=total.predicted,
        true_positive_pairs=total.both,
        precision=total.precision,
        recall=total.recall,
        f1=total.f1,
        bcubed_precision=b3.precision,
        bcubed_recall=b3.recall,
        merges=merges,
        rejected=dict(sorted(rejected.items())),
        quarantined=len(engine.quarantined()),
        unassigned=sum(1 for cid in assigned if cid is None),
        invalid_identifiers=invalid,
        elapsed_s=round(elapsed, 3),
        events_per_s=round(len(dataset.events) / elapsed, 1) if elapsed else 0.0,
        traps=traps,
        mixed_clusters=_mixed_clusters(predicted, truth, trap_of),
    )


def _mixed_clusters(
    predicted: Sequence[str], truth: Sequence[str], trap_of: dict[str, str], keep: int = 5
) -> list[MixedCluster]:
    """The ``keep`` clusters with the most false pairs."""
    members: dict[str, Counter[str]] = {}
    for cluster, person in zip(predicted, truth, strict=True):
        members.setdefault(cluster, Counter())[person] += 1
    mixed = []
    for cluster, people in members.items():
        if len(people) < 2:
            continue
        size = sum(people.values())
        false = pairs(size) - sum(pairs(n) for n in people.values())
        top = dict(people.most_common(6))
        traps = sorted({trap_of[p] for p in people if p in trap_of})
        mixed.append(
            MixedCluster(
                customer_id=cluster,
                events=size,
                false_pairs=false,
                people_count=len(people),
                people=top,
                traps=traps,
            )
        )
    mixed.sort(key=lambda m: (-m.false_pairs, m.customer_id))
    return mixed[:keep]


def benchmark(
    customers: int = 20_000, events: int = 100_000, seed: int = 7, rules: Rules | None = None
) -> QualityReport:
    """Generate a dataset; score ``rules`` (default: built-in) with rails on and off."""
    rules = rules or Rules()
    started = time.perf_counter()
    dataset = generate(customers, events, seed)
    generated = time.perf_counter() - started
    return QualityReport(
        seed=seed,
        customers=customers,
        events=events,
        generated_s=round(generated, 3),
        rails_on=evaluate(dataset, rules, "rails on"),
        rails_off=evaluate(dataset, rails_off(rules), "rails off"),
    )
