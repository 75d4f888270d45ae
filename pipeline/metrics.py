"""The worker's Prometheus metrics (served at ``/metrics`` by the query API)."""

from __future__ import annotations

from prometheus_client import Counter

STAGE_EVENTS = Counter(
    "omnistitch_stage_messages_total", "Messages a pipeline stage processed.", ["stage"]
)
DEAD_LETTERS = Counter(
    "omnistitch_dead_letters_total", "Records sent to a dead-letter topic.", ["stage", "reason"]
)
CUSTOMERS_CREATED = Counter(
    "omnistitch_identity_customers_created_total", "New customers minted by the identity stage."
)
MERGES = Counter("omnistitch_identity_merges_total", "Customers merged into an older customer.")
