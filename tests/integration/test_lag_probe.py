"""The lag probe against the real broker: what one reading reports, and what it asks for.

A reading of groups that name their topics asks the broker for those topics' partitions
only, never the cluster's whole metadata (a Python object per topic and partition, taken
from the worker's stages every reading); a group watched without topics still reads every
topic.
"""

from __future__ import annotations

import uuid
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from omnistitch.lag import Partition
from omnistitch.lag_monitor import LagProbe, LagTarget


def _topic_with_records(bootstrap: str, name: str, partitions: int, records: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(30)
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(records):
        producer.produce(name, b"x", partition=i % partitions)
    assert producer.flush(30) == 0


def _commit(bootstrap: str, group: str, offsets: list[TopicPartition]) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        consumer.commit(offsets=offsets, asynchronous=False)
    finally:
        consumer.close()


class _CountingAdmin:
    """The probe's admin client, counting whole-cluster metadata requests."""

    def __init__(self, admin: AdminClient) -> None:
        self._admin = admin
        self.whole_cluster = 0

    def list_topics(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("topic") is None:
            self.whole_cluster += 1
        return self._admin.list_topics(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._admin, name)


def test_named_topics_are_read_without_the_clusters_metadata(kafka_bootstrap: str) -> None:
    run = uuid.uuid4().hex[:8]
    topic, missing, group = f"lagp-{run}", f"lagp-{run}-not-created", f"lagp-{run}-group"
    _topic_with_records(kafka_bootstrap, topic, partitions=2, records=10)
    _commit(kafka_bootstrap, group, [TopicPartition(topic, 0, 2), TopicPartition(topic, 1, 5)])
    probe = LagProbe({"bootstrap.servers": kafka_bootstrap}, timeout_s=10)
    counting = _CountingAdmin(probe._admin)
    probe._admin = counting  # type: ignore[assignment]
    try:
        snapshot = probe.read([LagTarget(group, (topic, missing))])
    finally:
        probe.close()
    records = {lag.partition: lag.records for lag in snapshot.lags}
    assert records == {Partition(topic, 0): 3, Partition(topic, 1): 0}
    assert counting.whole_cluster == 0
    # The topic named but absent is neither reported nor created by the reading.
    metadata = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10)
    assert missing not in metadata.topics


def test_a_group_without_topics_is_read_on_every_topic(kafka_bootstrap: str) -> None:
    run = uuid.uuid4().hex[:8]
    topic, group = f"lagp-{run}", f"lagp-{run}-group"
    _topic_with_records(kafka_bootstrap, topic, partitions=1, records=4)
    _commit(kafka_bootstrap, group, [TopicPartition(topic, 0, 1)])
    probe = LagProbe({"bootstrap.servers": kafka_bootstrap}, timeout_s=10)
    try:
        snapshot = probe.read([LagTarget(group)])
    finally:
        probe.close()
    assert {lag.partition: lag.records for lag in snapshot.lags} == {Partition(topic, 0): 3}
