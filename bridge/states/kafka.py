"""The state stream's Kafka edge: where states go, its own producer, and reading topics back.

The follower writes with a producer of its own: never transactional (state records are not part
of a command's transaction, and the outbox's transactional producer may not send outside one),
idempotent where the broker supports it, ``acks=all``. It reads topics with group-less
consumers: from the beginning to the end offsets it found on start (recovery), then onwards
(the results tail), ``read_committed`` when results are written in transactions.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from bridge.config import Settings
from bridge.errors import KafkaUnavailable
from bridge.pipeline.kafka_io import client_options, make_admin

#: Longest wait for one fetch while reading a topic.
_FETCH_MS = 500


def state_topic(settings: Settings) -> str:
    """Where state records go: ``BRIDGE_TOPICS__STATES``, else the output topic."""
    return settings.topics.states or settings.topics.output


def make_producer(settings: Settings) -> AIOKafkaProducer:
    kafka = settings.kafka
    return AIOKafkaProducer(
        acks="all",
        linger_ms=5,
        enable_idempotence=bool(kafka.idempotent_producer or kafka.transactional_id),
        **client_options(kafka),
    )


def make_reader(settings: Settings) -> AIOKafkaConsumer:
    kafka = settings.kafka
    return AIOKafkaConsumer(
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed" if kafka.transactional_id else "read_uncommitted",
        **client_options(kafka),
    )


def parse(record: ConsumerRecord[bytes, bytes]) -> dict[str, Any] | None:
    """The JSON object a record of the output or states topic holds, or None."""
    try:
        value = json.loads(record.value or b"")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


async def partitions_of(settings: Settings, topic: str) -> list[TopicPartition]:
    """Every partition of ``topic`` (described by an admin client: a group-less consumer's
    metadata need not hold a topic it has not assigned yet)."""
    admin = make_admin(settings)
    try:
        await admin.start()
        described = await admin.describe_topics([topic])
    except KafkaError as exc:
        raise KafkaUnavailable(f"cannot describe {topic}: {exc}") from exc
    finally:
        await admin.close()
    found = [
        TopicPartition(topic, int(partition["partition"]))
        for entry in described
        if not entry.get("error_code")
        for partition in entry.get("partitions", ())
    ]
    if not found:
        raise KafkaUnavailable(f"topic {topic} does not exist")
    return sorted(found)


class TopicReader:
    """Reads one topic's partitions in order: to the end found at start, then on."""

    def __init__(
        self, consumer: AIOKafkaConsumer, topic: str, partitions: list[TopicPartition]
    ) -> None:
        self._consumer = consumer
        self._topic = topic
        self._partitions = partitions

    async def start(self, since: datetime | None = None) -> None:
        """Assign every partition of the topic, from the beginning or from the first record
        written at ``since`` or later (the broker's time index: older records are not read)."""
        consumer = self._consumer
        try:
            consumer.assign(self._partitions)
            if since is None:
                await consumer.seek_to_beginning(*self._partitions)
                return
            millis = int(since.timestamp() * 1000)
            found = await consumer.offsets_for_times(dict.fromkeys(self._partitions, millis))
            ends = await consumer.end_offsets(self._partitions)
            for tp in self._partitions:
                at = found.get(tp)
                consumer.seek(tp, ends[tp] if at is None else at.offset)
        except KafkaError as exc:
            raise KafkaUnavailable(f"cannot read {self._topic}: {exc}") from exc

    async def read_to_end(self, handle: Callable[[ConsumerRecord[bytes, bytes]], None]) -> int:
        """Hand every record up to the end offsets of now to ``handle``; returns how many."""
        consumer = self._consumer
        try:
            ends = await consumer.end_offsets(self._partitions)
            count = 0
            while True:
                behind = [tp for tp in self._partitions if await consumer.position(tp) < ends[tp]]
                if not behind:
                    return count
                batches = await consumer.getmany(*behind, timeout_ms=_FETCH_MS)
                for records in batches.values():
                    for record in records:
                        handle(record)
                        count += 1
        except KafkaError as exc:
            raise KafkaUnavailable(f"cannot read {self._topic}: {exc}") from exc

    async def read_more(self, handle: Callable[[ConsumerRecord[bytes, bytes]], None]) -> int:
        """One fetch of what arrived since; returns how many records."""
        try:
            batches = await self._consumer.getmany(timeout_ms=_FETCH_MS)
        except KafkaError as exc:
            raise KafkaUnavailable(f"cannot read {self._topic}: {exc}") from exc
        count = 0
        for records in batches.values():
            for record in records:
                handle(record)
                count += 1
        return count
