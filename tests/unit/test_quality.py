"""The identity-quality benchmark: pairwise metrics, the journey generator, and the benchmark.

``pytest -s tests/unit/test_quality.py`` prints the benchmark report (rails on vs off).
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Hashable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from omnistitch.journeys import (
    _AREA_CODES,
    DETERMINISTIC_TRAPS,
    EPOCH,
    WINDOW,
    Dataset,
    LabelledEvent,
    Trap,
    _Generator,
    generate,
)
from omnistitch.quality import (
    QualityReport,
    bcubed,
    benchmark,
    evaluate,
    pair_counts,
    rails_off,
    trap_pair_counts,
)
from pipeline.identity import IdentityEngine, IdentityTables, Observation
from pipeline.normalize import normalise
from pipeline.rules import Rules, Trust
from schemas.events import Channel, Identifier
from schemas.identity import Evidence

# -- pairwise metrics on hand-made clusterings ----------------------------------------------


def test_pair_counts_of_a_hand_made_clustering() -> None:
    truth = ["a", "a", "a", "b", "b", "c"]
    predicted = [1, 1, 2, 2, 2, 3]
    counts = pair_counts(predicted, truth)
    # Predicted pairs: C(2,2) + C(3,2) = 4; true pairs: C(3,2) + C(2,2) = 4;
    # both: the two a's in cluster 1 and the two b's in cluster 2.
    assert (counts.predicted, counts.true, counts.both) == (4, 4, 2)
    assert counts.precision == 0.5
    assert counts.recall == 0.5
    assert counts.f1 == 0.5


def test_pair_counts_of_perfect_singleton_and_lumped_clusterings() -> None:
    truth = ["a", "a", "b"]
    perfect = pair_counts(["x", "x", "y"], truth)
    assert (perfect.precision, perfect.recall, perfect.f1) == (1.0, 1.0, 1.0)
    singletons = pair_counts([1, 2, 3], truth)
    assert (singletons.predicted, singletons.both) == (0, 0)
    assert (singletons.precision, singletons.recall, singletons.f1) == (1.0, 0.0, 0.0)
    lumped = pair_counts([0, 0, 0], truth)
    assert (lumped.predicted, lumped.true, lumped.both) == (3, 1, 1)
    assert lumped.precision == pytest.approx(1 / 3)
    assert lumped.recall == 1.0
    assert lumped.f1 == pytest.approx(0.5)
    with pytest.raises(ValueError, match="different numbers"):
        pair_counts([1], [])


def test_trap_pair_counts_only_count_pairs_touching_the_trap_people() -> None:
    truth = ["a", "a", "a", "b", "b", "c"]
    predicted = [1, 1, 2, 2, 2, 3]
    counts = trap_pair_counts(predicted, truth, {"b"})
    # Cluster 2 holds a, b, b: 3 pairs touch b, 1 of them is b-b, 2 are a-b.
    assert (counts.predicted, counts.true, counts.both) == (3, 1, 1)
    assert counts.predicted - counts.both == 2
    assert trap_pair_counts(predicted, truth, {"c"}).predicted == 0


def test_bcubed_of_a_hand_made_clustering() -> None:
    scores = bcubed([1, 1, 2, 2, 2, 3], ["a", "a", "a", "b", "b", "c"])
    # precision: 1 + 1 + 1/3 + 2/3 + 2/3 + 1 = 14/3 over 6 events; recall likewise.
    assert scores.precision == pytest.approx(7 / 9)
    assert scores.recall == pytest.approx(7 / 9)


def _brute_force(
    predicted: list[int], truth: list[int], involved: set[Hashable] | None = None
) -> tuple[int, int, int]:
    pred = tru = both = 0
    for i, j in itertools.combinations(range(len(truth)), 2):
        if involved is not None and truth[i] not in involved and truth[j] not in involved:
            continue
        same_cluster, same_person = predicted[i] == predicted[j], truth[i] == truth[j]
        pred += same_cluster
        tru += same_person
        both += same_cluster and same_person
    return pred, tru, both


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), max_size=40))
def test_pair_counts_agree_with_brute_force(labels: list[tuple[int, int]]) -> None:
    predicted, truth = [p for p, _ in labels], [t for _, t in labels]
    counts = pair_counts(predicted, truth)
    assert (counts.predicted, counts.true, counts.both) == _brute_force(predicted, truth)
    involved: set[Hashable] = {0, 3}
    trap = trap_pair_counts(predicted, truth, involved)
    assert (trap.predicted, trap.true, trap.both) == _brute_force(predicted, truth, involved)


# -- the journey generator ------------------------------------------------------------------


@pytest.fixture(scope="module")
def small() -> Dataset:
    return generate(customers=400, events=3_000, seed=11)


def test_generator_is_deterministic(small: Dataset) -> None:
    again = generate(customers=400, events=3_000, seed=11)
    assert again.events == small.events
    assert again.trap_people == small.trap_people
    assert again.fingerprint() == small.fingerprint()
    assert generate(customers=400, events=3_000, seed=12).fingerprint() != small.fingerprint()


def test_generator_is_deterministic_across_processes(small: Dataset) -> None:
    code = (
        "from omnistitch.journeys import generate; "
        "print(generate(customers=400, events=3_000, seed=11).fingerprint())"
    )
    for hash_seed in ("0", "4242"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.strip() == small.fingerprint()


def test_generator_shape(small: Dataset) -> None:
    events = small.events
    assert len(events) == 3_000
    assert len(small.people) == 400
    assert len({e.event_id for e in events}) == len(events)
    times = [e.occurred_at for e in events]
    assert times == sorted(times)
    assert all(t.tzinfo is UTC and EPOCH <= t < EPOCH + WINDOW + timedelta(days=1) for t in times)
    per_person = Counter(e.true_person for e in events)
    assert set(per_person) == set(small.people)  # everyone did something
    assert per_person.most_common(1)[0][1] >= 10 * (len(events) / len(small.people))  # skewed
    channels = Counter(e.channel for e in events)
    assert channels[Channel.WEB] + channels[Channel.APP] > len(events) / 2  # tracking-heavy
    assert {Channel.CHAT, Channel.VOICE, Channel.SMS, Channel.EMAIL} <= set(channels)


def test_every_trap_is_present_and_labelled(small: Dataset) -> None:
    trap_of = small.trap_of()
    assert sum(len(p) for p in small.trap_people.values()) == len(trap_of)  # disjoint
    for trap in Trap:
        people = small.trap_people[trap.value]
        carrying = [e for e in small.events if e.trap == trap.value]
        assert people, trap
        assert carrying, trap
        assert all(trap_of[e.true_person] == trap.value for e in carrying)
    # Shared identifiers really are shared by different people.
    for trap, id_type in (
        (Trap.SHARED_FAMILY_PHONE, "phone"),
        (Trap.CALL_CENTER_NUMBER, "phone"),
        (Trap.SHARED_DEVICE, "device_id"),
    ):
        owners: dict[str, set[str]] = {}
        for e in small.events:
            if e.trap == trap.value:
                for key in _keys(e, id_type):
                    owners.setdefault(key, set()).add(e.true_person)
        assert max(len(people) for people in owners.values()) >= 2, trap
    callers = {e.true_person for e in small.events if e.trap == Trap.CALL_CENTER_NUMBER}
    assert len(callers) >= 5


def test_identifiers_come_raw_as_connectors_send_them(small: Dataset) -> None:
    raw = [i for e in small.events for i in e.identifiers]
    emails = [i.value for i in raw if i.type == "email"]
    assert any(v != v.lower() for v in emails)
    placeholders = {e.identifiers[-1].value for e in small.events if e.trap == "test_email"}
    assert {"null", "N/A"} & placeholders
    # One person's number in several spellings, one canonical key.
    variants: dict[str, set[str]] = {}
    for e in small.events:
        if e.trap == Trap.PHONE_FORMAT_VARIANTS:
            for i in e.identifiers:
                if i.type == "phone":
                    variants.setdefault(e.true_person, set()).add(i.value)
    spellings = max(variants.values(), key=len)
    assert len(spellings) >= 3
    keys = {normalise([Identifier(type="phone", value=v)]).identifiers[0].key for v in spellings}
    assert len(keys) == 1


def test_typo_emails_belong_to_one_person_only(small: Dataset) -> None:
    typo_owner: dict[str, set[str]] = {}
    for e in small.events:
        for key in _keys(e, "email"):
            typo_owner.setdefault(key, set()).add(e.true_person)
    for e in small.events:
        if e.trap == Trap.TYPO_EMAIL:
            for key in _keys(e, "email"):
                assert typo_owner[key] == {e.true_person}


def test_generator_rejects_populations_too_small_for_the_traps() -> None:
    with pytest.raises(ValueError, match="at least"):
        generate(customers=10, events=100, seed=1)
    with pytest.raises(ValueError, match="too few"):
        generate(customers=400, events=500, seed=1)


def _keys(event: LabelledEvent, id_type: str) -> list[str]:
    mine = [i for i in event.identifiers if i.type == id_type]
    return [i.key for i in normalise(mine).identifiers]


# -- scoring a hand-made dataset ------------------------------------------------------------


def _event(n: int, person: str, *ids: tuple[str, str]) -> LabelledEvent:
    return LabelledEvent(
        event_id=f"h{n}",
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=n),
        channel=Channel.WEB,
        kind="page",
        identifiers=[Identifier(type=t, value=v) for t, v in ids],
        true_person=person,
    )


def test_evaluate_counts_unassigned_events_as_singletons() -> None:
    events = [
        _event(0, "ann", ("anonymous_id", "c1")),
        _event(1, "ann", ("anonymous_id", "c1"), ("email", "Ann@X.com")),
        _event(2, "ann", ("email", "ann@x.com")),
        _event(3, "ann", ("email", "null")),  # invalid: no usable identifier
        _event(4, "bob", ("email", "TEST@test.com")),  # blocked placeholder
        _event(5, "bob", ("anonymous_id", "c2"), ("email", "test@test.com")),
    ]
    dataset = Dataset(0, ("ann", "bob"), events, {t.value: () for t in Trap})
    on = evaluate(dataset, Rules())
    assert on.unassigned == 2
    assert on.invalid_identifiers == 3
    assert on.predicted_customers == 4  # ann's three events, two singletons, bob's cookie
    assert (on.true_pairs, on.predicted_pairs, on.true_positive_pairs) == (7, 3, 3)
    assert on.precision == 1.0
    assert on.recall == pytest.approx(3 / 7)
    off = evaluate(dataset, rails_off(Rules()), "rails off")
    assert off.unassigned == 1  # only "null" is not an email at all
    assert off.invalid_identifiers == 1
    assert (off.true_pairs, off.predicted_pairs, off.true_positive_pairs) == (7, 4, 4)


def test_rails_off_has_no_guard_rails() -> None:
    rules = rails_off(Rules())
    assert rules.blocked == []
    assert rules.blocked_patterns == []
    assert rules.hub.max_customers >= 1_000_000
    for name, rule in rules.types.items():
        assert rule.limit is None, name
        assert rule.trust is Trust.UNVERIFIED, name
        assert rule.merge, name
        assert rule.blocked == [], name
        assert rule.blocked_patterns == [], name
        assert rule.normaliser == Rules().types[name].normaliser
    assert rules.version != Rules().version


# -- the benchmark --------------------------------------------------------------------------

BENCH_CUSTOMERS = 20_000
BENCH_EVENTS = 100_000
BENCH_SEED = 7
#: Measured with the built-in rules on this dataset (seed 7): precision 0.999998, pairwise
#: recall 0.991097, B-cubed recall 0.898883. The floors sit a little under.
PRECISION_FLOOR = 0.99
RECALL_FLOOR = 0.985
BCUBED_RECALL_FLOOR = 0.89


@pytest.fixture(scope="module")
def report() -> QualityReport:
    started = time.perf_counter()
    result = benchmark(BENCH_CUSTOMERS, BENCH_EVENTS, BENCH_SEED)
    print(f"\n{result.table()}\n\nbenchmark wall time: {time.perf_counter() - started:.1f}s")
    return result


def test_benchmark_overall_quality(report: QualityReport) -> None:
    on = report.rails_on
    assert on.events >= 100_000
    assert on.people >= 20_000
    assert on.precision >= PRECISION_FLOOR
    assert on.recall >= RECALL_FLOOR
    assert on.bcubed_recall >= BCUBED_RECALL_FLOOR
    assert on.quarantined > 0  # the call-centre number, at least
    assert report.rails_off.precision < on.precision


@pytest.mark.parametrize("trap", DETERMINISTIC_TRAPS)
def test_benchmark_never_merges_two_people_on_a_deterministic_trap(
    report: QualityReport, trap: Trap
) -> None:
    score = report.rails_on.trap(trap.value)
    assert score.people > 0
    assert score.predicted_pairs > 0
    assert score.false_pairs == 0
    assert score.precision == 1.0


@pytest.mark.parametrize("trap", DETERMINISTIC_TRAPS)
def test_benchmark_without_rails_merges_people_on_every_deterministic_trap(
    report: QualityReport, trap: Trap
) -> None:
    on, off = report.rails_on.trap(trap.value), report.rails_off.trap(trap.value)
    assert off.false_pairs > 0
    assert off.precision < on.precision


def test_benchmark_typos_and_phone_formats(report: QualityReport) -> None:
    on = report.rails_on
    typo, phone = on.trap(Trap.TYPO_EMAIL), on.trap(Trap.PHONE_FORMAT_VARIANTS)
    assert typo.false_pairs == 0  # a typo joins nobody else
    assert phone.false_pairs == 0
    # Every event carrying the typo (or the number, in any format) ends with its person.
    assert typo.trap_event_recall == 1.0
    assert phone.trap_event_recall == 1.0


# -- engine weaknesses the benchmark found (minimal reproductions) --------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _resolve(engine: IdentityEngine, eid: str, minute: int, *keys: str) -> str | None:
    ids = [Identifier(type=k.partition(":")[0], value=k.partition(":")[2]) for k in keys]
    evidence = Evidence(
        event_id=eid,
        channel=Channel.VOICE,
        source="test",
        occurred_at=T0 + timedelta(minutes=minute),
        rule_version="test",
    )
    return engine.resolve(Observation(ids, evidence)).customer_id


def test_engine_a_company_number_never_merges_different_callers() -> None:
    engine = IdentityEngine(Rules(), IdentityTables.in_memory())
    for i in range(8):
        _resolve(engine, f"e{i}", i, f"email:caller{i}@x.com", "phone:+18005550199")
    owners = [engine.lookup(f"email:caller{i}@x.com") for i in range(8)]
    # Callers 0-4 shared one customer until the number was quarantined at the 8th call;
    # quarantining it took it out of their links, which undid those merges.
    assert len(set(owners)) == 8


@pytest.mark.xfail(
    strict=True,
    reason="engine weakness: when a hub outranks the identifiers it is seen with (a "
    "placeholder email not in the blocked list, with anonymous ids), the limit drops the "
    "new anonymous id instead of the hub, so the hub is never sighted or quarantined and "
    "every later event carrying it joins the same customer",
)
def test_engine_an_unlisted_placeholder_email_is_quarantined() -> None:
    engine = IdentityEngine(Rules(), IdentityTables.in_memory())
    for i in range(60):
        _resolve(engine, f"v{i}", i, f"anonymous_id:visitor{i}", "email:noemail@noemail.com")
    assert [q.identifier for q in engine.quarantined()] == ["email:noemail@noemail.com"]


def test_the_generator_never_runs_out_of_phone_numbers() -> None:
    """A population larger than the fictional 555-01XX range (~68,000 numbers) once made
    the generator loop for ever (found by ``bench --growth 10000,100000``)."""
    gen = _Generator(customers=40, events=80, seed=1)
    gen.phones.update(f"{a}5550{n}" for a in _AREA_CODES for n in range(100, 200))
    numbers = {gen._phone() for _ in range(1_000)}
    assert len(numbers) == 1_000
    for number in numbers:
        assert number[3:6] == "555"
        assert normalise([Identifier(type="phone", value=number)], Rules()).identifiers
