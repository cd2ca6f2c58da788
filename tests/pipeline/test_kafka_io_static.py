"""Static group membership (``BRIDGE_KAFKA__GROUP_INSTANCE_ID``, KIP-345) on Apache Kafka: a
member restarted within the session timeout gets its partitions back and the others see no
rebalance."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener

from bridge.config import CloudflareSettings, KafkaSettings, Settings, TopicSettings
from bridge.pipeline.kafka_io import make_consumer

pytestmark = pytest.mark.full_kafka


class _Events(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.log: list[tuple[str, frozenset[TopicPartition]]] = []
        self.changed = asyncio.Event()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.log.append(("revoked", frozenset(revoked)))
        self.changed.set()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.log.append(("assigned", frozenset(assigned)))
        self.changed.set()


def _settings(bootstrap: str, group: str, topic: str, instance: str) -> Settings:
    return Settings(
        kafka=KafkaSettings(
            bootstrap_servers=bootstrap,
            group_id=group,
            group_instance_id=instance,
            # The restart must land within the session timeout, however busy the machine is.
            session_timeout_ms=60_000,
            heartbeat_interval_ms=500,
        ),
        topics=TopicSettings(commands=[topic]),
        cloudflare=CloudflareSettings(account_id="a", api_token="t"),
    )


def _settled(events: _Events) -> bool:
    """Whether the member's last callback assigned it exactly one partition."""
    return bool(events.log) and events.log[-1][0] == "assigned" and len(events.log[-1][1]) == 1


async def _joined(consumer: AIOKafkaConsumer, topic: str, events: _Events) -> None:
    consumer.subscribe([topic], listener=events)
    await consumer.start()
    async with asyncio.timeout(60):
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)


async def test_a_static_member_restarts_without_a_rebalance(
    kafka_bootstrap: str, new_topic: Callable[..., object], unique_name: Callable[[str], str]
) -> None:
    topic = await new_topic("cmd", partitions=2)  # type: ignore[misc]
    group = unique_name("g")
    settings_a = _settings(kafka_bootstrap, group, topic, "replica-a")
    settings_b = _settings(kafka_bootstrap, group, topic, "replica-b")
    a_events, b_events = _Events(), _Events()
    b = make_consumer(settings_b)
    await _joined(b, topic, b_events)
    a = make_consumer(settings_a)
    try:
        await _joined(a, topic, a_events)
        async with asyncio.timeout(60):  # B gives up one partition to A
            # Wait for each member's own callback, not only its assignment: aiokafka updates the
            # assignment before it calls the listener, whose late call would look like a rebalance.
            while not (_settled(b_events) and _settled(a_events)):
                await asyncio.gather(a.getmany(timeout_ms=100), b.getmany(timeout_ms=100))
        held_by_a = a.assignment()
        b_events.log.clear()
    finally:
        await a.stop()  # a static member sends no LeaveGroup
    restarted = make_consumer(settings_a)
    try:
        await _joined(restarted, topic, _Events())
        assert restarted.assignment() == held_by_a
        # B keeps fetching through the restart and never rebalances.
        for _ in range(10):
            await b.getmany(timeout_ms=100)
        assert b_events.log == []
        assert len(b.assignment()) == 1
    finally:
        await restarted.stop()
        await b.stop()
