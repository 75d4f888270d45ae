"""Typed wire contracts of omnistitch: the raw-event envelope and the customer context.

Every value on a Kafka topic is JSON described by one of these pydantic models; the JSON
Schemas exported from them live in ``schemas/json/`` (``omnistitch schemas export``).
"""

from schemas.context import CustomerContext, TimelineEntry, TraitValue
from schemas.events import Channel, Identifier, RawEvent
from schemas.identity import Evidence, IdentityView, Link, Merge, RejectedLink, Split

__all__ = [
    "Channel",
    "CustomerContext",
    "Evidence",
    "Identifier",
    "IdentityView",
    "Link",
    "Merge",
    "RawEvent",
    "RejectedLink",
    "Split",
    "TimelineEntry",
    "TraitValue",
]
