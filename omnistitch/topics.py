"""omnistitch's public topic names and their creation through the Kafka admin API.

Names are dotted and lower case; a deployment-wide prefix (``OMNISTITCH_TOPIC_PREFIX``) is
prepended. Internal topics (faust changelogs and repartition topics) are named by faust
from the app id and are not listed here.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from omnistitch.kafka_client import client_config
from omnistitch.settings import KafkaSettings

log = logging.getLogger(__name__)

RAW_EVENTS = "raw.events"
RAW_EVENTS_DLQ = "raw.events.dlq"
CUSTOMER_CONTEXT = "customer.context"
IDENTITY_MERGES = "identity.merges"
IDENTITY_SPLITS = "identity.splits"
ENGAGEMENT_TRIGGERS = "engagement.triggers"
ROUTING_HINTS = "routing.hints"
#: Dead letters of the example routing consumer, created by it (omnistitch.routing_consumer).
ROUTING_HINTS_DLQ = "routing.hints.dlq"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def public_topics(settings: KafkaSettings) -> list[TopicSpec]:
    """Every topic omnistitch publishes to, with its partitioning and retention."""
    n = settings.raw_partitions
    return [
        TopicSpec(settings.topic(RAW_EVENTS), n),
        TopicSpec(settings.topic(RAW_EVENTS_DLQ), 1, {"retention.ms": str(30 * 86_400_000)}),
        TopicSpec(
            settings.topic(CUSTOMER_CONTEXT),
            n,
            {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"},
        ),
        TopicSpec(settings.topic(IDENTITY_MERGES), n),
        TopicSpec(settings.topic(IDENTITY_SPLITS), n),
        TopicSpec(settings.topic(ENGAGEMENT_TRIGGERS), n),
        TopicSpec(
            settings.topic(ROUTING_HINTS),
            n,
            {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"},
        ),
    ]


def internal_topic(settings: KafkaSettings, app_id: str, name: str) -> str:
    """A worker-internal topic (``<prefix><app id>-<name>``), as the faust app names it."""
    return f"{settings.topic_prefix}{app_id}-{name}"


def ingest_group(app_id: str) -> str:
    """The consumer group of the workers' ingest stage (raw events, read with confluent-kafka;
    faust's own group, the app id, uses faust's assignor, which other clients cannot join)."""
    return f"{app_id}-ingest"


def pipeline_groups(settings: KafkaSettings, app_id: str) -> dict[str, list[str]]:
    """The workers' consumer groups, each with the topics it reads and commits: the ingest
    stage's group the raw events, faust's group (the app id) the later stages' inputs."""
    return {
        ingest_group(app_id): [settings.topic(RAW_EVENTS)],
        app_id: [
            internal_topic(settings, app_id, "identity-requests"),
            internal_topic(settings, app_id, "customer-ops"),
        ],
    }


def unique_topics(*groups: list[TopicSpec]) -> list[TopicSpec]:
    """Each topic once, its first spec winning. A worker's ``customer.context`` is both a
    public topic and a table's changelog; naming a topic twice in one CreateTopics request
    makes the broker answer "duplicate topic", and librdkafka 2.16 then crashes (SIGSEGV in
    ``rd_kafka_topic_result_error_string``): a worker on an empty cluster died silently."""
    specs: dict[str, TopicSpec] = {}
    for spec in (s for group in groups for s in group):
        specs.setdefault(spec.name, spec)
    return list(specs.values())


def ensure_topics(
    settings: KafkaSettings, extra: list[TopicSpec] | None = None, timeout_s: float = 30.0
) -> None:
    """Create missing topics (idempotent) and wait until the broker's metadata lists them.

    Raises if the broker refuses or is unreachable. ``extra`` adds topics of a process's
    own, e.g. a worker's internal topics, which must exist before its consumer subscribes.
    """
    admin = AdminClient(client_config(settings))
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    missing = [
        t for t in unique_topics(public_topics(settings), extra or []) if t.name not in existing
    ]
    if not missing:
        return
    futures = admin.create_topics(
        [NewTopic(t.name, num_partitions=t.partitions, config=t.config) for t in missing],
        operation_timeout=timeout_s,
        request_timeout=timeout_s,
    )
    for name, fut in futures.items():
        try:
            fut.result()
            log.info("created topic %s", name)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise
    deadline = time.monotonic() + timeout_s
    names = {t.name for t in missing}
    while not names <= set(admin.list_topics(timeout=timeout_s).topics):
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics not visible in metadata after {timeout_s}s: {names}")
        time.sleep(0.2)
