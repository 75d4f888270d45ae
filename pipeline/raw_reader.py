"""Re-reading a range of offsets of one partition, outside faust's consumer group.

Used by the ingest stage to fetch the raw records faust skipped (pipeline/offset_gaps.py).
A plain confluent-kafka consumer with ``assign`` at an explicit offset: it never joins the
workers' group and never commits, so it cannot move the group's offsets. Its calls block;
the worker runs them on a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition


class RangeReadError(RuntimeError):
    """The records could not be read (broker unreachable, offsets gone while reading)."""


@dataclass(frozen=True)
class RawRecord:
    offset: int
    key: bytes | None
    value: bytes | None


#: librdkafka settings of the reader on top of the cluster's (omnistitch.kafka_client).
READER_CONFIG: dict[str, Any] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "enable.partition.eof": True,
    # An offset deleted between the log-start query and the fetch is an error, not a
    # silent jump to another offset.
    "auto.offset.reset": "error",
    # What faust's own consumer sees (aiokafka's default without exactly-once).
    "isolation.level": "read_uncommitted",
}


class RangeReader:
    """Reads the records of ``topic[partition]`` whose offsets are in a given range."""

    def __init__(
        self,
        config: dict[str, Any],
        topic: str,
        partition: int,
        *,
        timeout_s: float = 30.0,
        batch_size: int = 500,
    ) -> None:
        self.topic, self.partition = topic, partition
        self.timeout_s, self.batch_size = timeout_s, batch_size
        self._consumer = Consumer({**config, **READER_CONFIG})
        self._stop = 0
        self._done = True

    def log_start(self) -> int:
        """The partition's first offset still on the broker."""
        tp, where = TopicPartition(self.topic, self.partition), f"{self.topic}[{self.partition}]"
        try:
            found = self._consumer.get_watermark_offsets(tp, timeout=self.timeout_s, cached=False)
        except KafkaException as exc:
            raise RangeReadError(f"no watermarks for {where}: {exc}") from exc
        if found is None:
            raise RangeReadError(f"no watermarks for {where}")
        return int(found[0])

    def start(self, offsets: range) -> None:
        """Position the reader at the first offset of ``offsets``."""
        self._stop, self._done = offsets.stop, not offsets
        if offsets:
            self._consumer.assign([TopicPartition(self.topic, self.partition, offsets.start)])

    def next_batch(self) -> list[RawRecord] | None:
        """The next records of the range, in offset order; None once the range is read.

        The range ends at the first record at or beyond its stop offset (the record being
        processed, so it exists) or at the end of the partition. Offsets without a data
        record (transaction markers) are simply not returned. Raises
        :class:`RangeReadError` on a read error or when no record comes within the timeout.
        """
        if self._done:
            return None
        out: list[RawRecord] = []
        deadline = time.monotonic() + self.timeout_s
        while not out and not self._done:
            if time.monotonic() > deadline:
                raise RangeReadError(
                    f"no record of {self.topic}[{self.partition}] within {self.timeout_s}s"
                )
            for msg in self._consumer.consume(self.batch_size, timeout=0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        self._done = True
                        break
                    raise RangeReadError(f"reading {self.topic}[{self.partition}]: {err.str()}")
                offset = msg.offset()
                assert offset is not None
                if offset >= self._stop:
                    self._done = True
                    break
                out.append(RawRecord(offset, msg.key(), msg.value()))
        return out

    def close(self) -> None:
        self._consumer.close()
