"""The Kafka edge: client settings, and aiokafka's errors mapped into the bridge's tree."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from bridge.config import Settings
from bridge.errors import KafkaUnavailable
from bridge.pipeline.translate import OutRecord


def _security(settings: Settings) -> dict[str, Any]:
    kafka = settings.kafka
    options: dict[str, Any] = {"security_protocol": kafka.security_protocol}
    if kafka.sasl_mechanism is not None:
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        if kafka.sasl_password is not None:
            options["sasl_plain_password"] = kafka.sasl_password.get_secret_value()
    return options


def make_consumer(settings: Settings) -> AIOKafkaConsumer:
    """A group member with manual commits: offsets move only past answered commands."""
    kafka = settings.kafka
    return AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=kafka.group_id,
        client_id=kafka.client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed" if kafka.transactional_id else "read_uncommitted",
        session_timeout_ms=kafka.session_timeout_ms,
        heartbeat_interval_ms=kafka.heartbeat_interval_ms,
        max_poll_interval_ms=kafka.max_poll_interval_ms,
        **_security(settings),
    )


def make_producer(settings: Settings) -> AIOKafkaProducer:
    """``acks=all``; idempotent where the broker supports it; transactional when configured."""
    kafka = settings.kafka
    options: dict[str, Any] = {}
    if kafka.transactional_id:
        options["transactional_id"] = kafka.transactional_id
        options["enable_idempotence"] = True
    elif kafka.idempotent_producer:
        options["enable_idempotence"] = True
    return AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap_servers,
        client_id=kafka.client_id,
        acks="all",
        linger_ms=5,
        # Results are small and many: a 16 KiB batch per partition (the default) fills at once
        # and makes every worker wait for it to drain.
        max_batch_size=256 * 1024,
        max_request_size=2 * 1024 * 1024,
        **options,
        **_security(settings),
    )


async def send(producer: AIOKafkaProducer, topic: str, record: OutRecord) -> asyncio.Future[Any]:
    """Queue ``record``; the returned future resolves once the broker has it."""
    value = record.value
    if value is None and record.key is None:
        # aiokafka cannot write a record without key and value (other clients can, so such a
        # command may arrive and be dead-lettered); an empty value stands in for it.
        value = b""
    try:
        future: asyncio.Future[Any] = await producer.send(
            topic, value=value, key=record.key, headers=list(record.headers)
        )
    except KafkaError as exc:
        raise KafkaUnavailable(f"could not write to {topic}: {exc}") from exc
    return future


async def acknowledged(futures: list[asyncio.Future[Any]]) -> None:
    """Wait until every queued record is on the broker; raise :class:`KafkaUnavailable` if not."""
    try:
        await asyncio.gather(*futures)
    except KafkaError as exc:
        raise KafkaUnavailable(f"the broker did not take a record: {exc}") from exc
