"""Publish-then-ack, shared by every connector: key, publish, measure, count.

A connector answers its sender only after :meth:`Delivery.publish` returned; when it
raises :class:`~connectors.publisher.PublishUnavailable` the sender is told to retry
(HTTP 503 with ``Retry-After``, SMTP 451).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from connectors.publisher import Publisher
from schemas.events import RawEvent

#: Partition-key preference: the sender's most stable identifier first (as the rules rank).
KEY_PRIORITY = (
    "user_id",
    "account_id",
    "crm_id",
    "email",
    "phone",
    "whatsapp",
    "messenger_psid",
    "instagram",
    "x",
    "device_id",
    "anonymous_id",
    "cookie",
)
REJECT_REASONS = (
    "invalid_request",
    "unauthorized",
    "signature",
    "forbidden",
    "too_large",
    "unsupported_media_type",
    "not_mail",
    "unavailable",
)


class ConnectorMetrics:
    """One connector's Prometheus metrics, in a registry of its own (label ``connector``)."""

    def __init__(self, connector: str, kinds: Iterable[str] = ()) -> None:
        self.connector = connector
        self.registry = CollectorRegistry(auto_describe=True)
        self.accepted = Counter(
            "omnistitch_connector_events_accepted",
            "Events acknowledged by the broker, by kind.",
            ["connector", "kind"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "omnistitch_connector_requests_rejected",
            "Requests (or mails) refused, by reason.",
            ["connector", "reason"],
            registry=self.registry,
        )
        self.signature_failures = Counter(
            "omnistitch_connector_signature_failures",
            "Requests whose signature (or verify token, or identity hash) did not verify.",
            ["connector"],
            registry=self.registry,
        )
        self.publish_seconds = Histogram(
            "omnistitch_connector_publish_seconds",
            "Time from producing a request's events to the broker's last ack.",
            ["connector"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "omnistitch_connector_queue_depth",
            "Events handed to the producer and not yet acknowledged by the broker.",
            ["connector"],
            registry=self.registry,
        )
        for kind in kinds:
            self.accepted.labels(connector, kind)
        for reason in REJECT_REASONS:
            self.rejected.labels(connector, reason)
        self.signature_failures.labels(connector)
        self.publish_seconds.labels(connector)
        self.queue_depth.labels(connector)

    def reject(self, reason: str) -> None:
        """Count one refused request; a ``signature`` refusal is a signature failure too."""
        self.rejected.labels(self.connector, reason).inc()
        if reason == "signature":
            self.signature_failures.labels(self.connector).inc()


def partition_key(event: RawEvent) -> str:
    """The sender's best identifier as ``type:value``; the event id when it has none."""
    by_type = {i.type: i for i in reversed(event.identifiers)}
    for kind in KEY_PRIORITY:
        if kind in by_type:
            return by_type[kind].key
    return event.identifiers[0].key if event.identifiers else event.event_id


class Delivery:
    """Publishes a request's events to one topic and waits for the broker's ack."""

    def __init__(self, topic: str, publisher: Publisher, metrics: ConnectorMetrics) -> None:
        self.topic = topic
        self.publisher = publisher
        self.metrics = metrics

    async def publish(self, events: Sequence[RawEvent]) -> None:
        """Return once every event is acknowledged; raises ``PublishUnavailable``."""
        if not events:
            return
        records = [(partition_key(e), e.model_dump_json().encode()) for e in events]
        name = self.metrics.connector
        depth = self.metrics.queue_depth.labels(name)
        depth.inc(len(records))
        started = time.perf_counter()
        try:
            await self.publisher.publish(self.topic, records)
        finally:
            depth.dec(len(records))
            self.metrics.publish_seconds.labels(name).observe(time.perf_counter() - started)
        for event in events:
            self.metrics.accepted.labels(name, event.kind).inc()
