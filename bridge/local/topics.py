"""Create Kafka topics with a given number of partitions, tolerating ones that already exist."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import for_code

__all__ = ["TopicState", "ensure_topics"]

#: Kafka's TOPIC_ALREADY_EXISTS error code.
_TOPIC_ALREADY_EXISTS = 36


@dataclass(frozen=True, slots=True)
class TopicState:
    """What :func:`ensure_topics` found for one topic once it was usable."""

    name: str
    #: Partitions the topic has now. For a topic that already existed this may differ from the
    #: number asked for; the caller decides whether that matters.
    partitions: int
    #: ``True`` when this call created the topic, ``False`` when it already existed.
    created: bool


async def ensure_topics(
    bootstrap_servers: str,
    topics: Mapping[str, int],
    *,
    replication_factor: int = 1,
    configs: Mapping[str, Mapping[str, str]] | None = None,
    wait_seconds: float = 30.0,
) -> dict[str, TopicState]:
    """Create each ``{name: partitions}`` topic unless it exists, then wait until it is usable.

    "Usable" means the broker's metadata lists every partition of the topic with a leader, so a
    producer or consumer started right after this returns sees the whole topic. ``configs`` gives
    per-topic settings (``{"cmd": {"retention.ms": "60000"}}``). Errors other than "already
    exists" are raised as aiokafka's ``KafkaError`` subclasses; :class:`TimeoutError` is raised
    when the topics are not usable within ``wait_seconds``.
    """
    if not topics:
        return {}
    configs = configs or {}
    deadline = time.monotonic() + wait_seconds
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        client_id="workflows-bridge-topics",
        request_timeout_ms=max(1000, int(wait_seconds * 1000)),
    )
    try:
        await admin.start()
        response = await admin.create_topics(
            [
                NewTopic(
                    name=name,
                    num_partitions=partitions,
                    replication_factor=replication_factor,
                    topic_configs=dict(configs.get(name, {})),
                )
                for name, partitions in topics.items()
            ],
            timeout_ms=max(1000, int(wait_seconds * 1000)),
        )
        created: dict[str, bool] = {}
        for topic_error in response.topic_errors:
            name, code = topic_error[0], topic_error[1]
            message = topic_error[2] if len(topic_error) > 2 else None
            if code == 0:
                created[name] = True
            elif code == _TOPIC_ALREADY_EXISTS:
                created[name] = False
            else:
                raise for_code(code)(f"could not create topic {name!r}: {message or code}")
        partitions = await _wait_until_usable(admin, list(topics), deadline)
    finally:
        await admin.close()
    return {
        name: TopicState(name=name, partitions=partitions[name], created=created.get(name, False))
        for name in topics
    }


async def _wait_until_usable(
    admin: AIOKafkaAdminClient, names: list[str], deadline: float
) -> dict[str, int]:
    """Poll the metadata until every topic has all its partitions led; returns their counts."""
    delay = 0.01
    while True:
        described: list[dict[str, Any]] = await admin.describe_topics(names)
        counts: dict[str, int] = {}
        for topic in described:
            partitions = topic.get("partitions") or []
            if (
                topic.get("error_code", 0) == 0
                and partitions
                and all(
                    p.get("error_code", 0) == 0 and p.get("leader", -1) >= 0 for p in partitions
                )
            ):
                counts[topic["topic"]] = len(partitions)
        if all(name in counts for name in names):
            return counts
        if time.monotonic() >= deadline:
            missing = sorted(set(names) - set(counts))
            raise TimeoutError(f"topics not ready in time: {', '.join(missing)}")
        # Topic creation propagates asynchronously; the metadata is the only thing to watch.
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.2)
