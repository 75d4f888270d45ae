"""faust's partition assignor, with the tenant's identity index weighted.

faust's leader places each copartitioned group's indices evenly over the workers (sticky,
with standby copies). This assignor then hands indices from the worker whose share weighs
most to the lightest (``pipeline/partition_balance.py``), where the index that carries the
tenant's identity requests weighs ``OMNISTITCH_IDENTITY_PARTITION_WEIGHT`` ordinary ones.
Only the group of the identity-requests topic is touched, on every topic of it alike (its
stage topics and every table's changelog), before faust derives which worker serves which
table key, so routed queries follow. ``weighted_assignor`` makes the class faust
instantiates (``App(PartitionAssignor=...)``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping
from typing import Any, ClassVar

from faust.assignor import PartitionAssignor
from faust.assignor.client_assignment import ClientAssignment

from .partition_balance import Placement, balance

log = logging.getLogger(__name__)


class WeightedAssignor(PartitionAssignor):
    """faust's assignor; ``weights`` (index → ordinary indices it weighs) apply to the
    copartitioned group of ``weighted_topic``."""

    weighted_topic: ClassVar[str] = ""
    weights: ClassVar[Mapping[int, float]] = {}

    # faust's hook between placing the copartitioned groups and deriving, from the
    # placement, which worker serves which table partition (private: the assignor tests in
    # tests/integration/test_weighted_assignor.py fail if a faust upgrade moves it).
    def _global_table_standby_assignments(
        self,
        assignments: MutableMapping[str, ClientAssignment],
        partitions_by_topic: Mapping[str, int],
    ) -> Any:
        rebalance(assignments, partitions_by_topic, self.weighted_topic, self.weights)
        return super()._global_table_standby_assignments(assignments, partitions_by_topic)


def rebalance(
    assignments: MutableMapping[str, ClientAssignment],
    partitions_by_topic: Mapping[str, int],
    topic: str,
    weights: Mapping[int, float],
) -> None:
    """Balance ``topic``'s copartitioned group in ``assignments`` (faust's, per member) by
    ``weights``, in place, on each of the group's topics alike."""
    n = partitions_by_topic.get(topic)
    if n is None or not weights or len(assignments) < 2:
        return
    group = sorted(t for t, count in partitions_by_topic.items() if count == n)
    placements: dict[str, Placement] = {}
    for member, assignment in assignments.items():
        actives = sorted(assignment.actives.get(topic, []))
        standbys = sorted(assignment.standbys.get(topic, []))
        for other in group:
            if (
                sorted(assignment.actives.get(other, [])) != actives
                or sorted(assignment.standbys.get(other, [])) != standbys
            ):
                # faust grouped them apart (members subscribed to different topics, as
                # during a rolling upgrade): keep its placement rather than split a group
                log.warning(
                    "partition weights not applied: %s and %s are not placed together on %s",
                    topic,
                    other,
                    member,
                )
                return
        placements[member] = Placement(set(actives), set(standbys))
    moves = balance(placements, weights)
    if not moves:
        return
    for member, placement in placements.items():
        assignment = assignments[member]
        for name in group:
            assignment.actives[name] = sorted(placement.actives)
            assignment.standbys[name] = sorted(placement.standbys)
    log.info(
        "partition weights: moved %s",
        ", ".join(f"{m.partition} from {m.source} to {m.target}" for m in moves),
    )


def weighted_assignor(topic: str, weights: Mapping[int, float]) -> type[WeightedAssignor]:
    """The assignor class for an app whose ``topic`` indices weigh ``weights``."""
    return type(
        "WeightedAssignor",
        (WeightedAssignor,),
        {"weighted_topic": topic, "weights": dict(weights), "__module__": __name__},
    )
