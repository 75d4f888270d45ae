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
SPLITS = Counter("omnistitch_identity_splits_total", "Operator splits carried out.")
ERASURES = Counter("omnistitch_identity_erasures_total", "Customers erased on request.")
REJECTED_LINKS = Counter(
    "omnistitch_identity_rejected_links_total",
    "Identifiers the guard rails kept out of a match.",
    ["reason"],
)
QUARANTINES = Counter("omnistitch_identity_quarantines_total", "Identifiers quarantined as hubs.")
SUPPRESSED = Counter(
    "omnistitch_identity_suppressed_identifiers_total",
    "Identifiers dropped because their person was erased.",
)
FAILED_REQUESTS = Counter(
    "omnistitch_identity_failed_requests_total",
    "Operator requests that named no such customer or link.",
    ["op"],
)
