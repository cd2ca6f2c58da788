"""Running the real bridge in a test: settings for the session broker and the emulator, a bridge
task owned by a context manager, and a reader of the output and dead-letter topics."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bridge.config import (
    CloudflareSettings,
    KafkaSettings,
    PipelineSettings,
    Settings,
    StateSettings,
    TopicSettings,
)
from bridge.local.emulator import Emulator
from bridge.pipeline.service import Bridge
from tests.support.kafka_harness import Flavour, KafkaBroker


@dataclass(frozen=True)
class Topics:
    commands: str
    output: str
    dlq: str


NewTopic = Callable[..., Awaitable[str]]


async def make_topics(new_topic: NewTopic, partitions: int = 3) -> Topics:
    """Fresh command and output topics with ``partitions`` partitions, and a one-partition DLQ."""
    return Topics(
        commands=await new_topic("cmd", partitions=partitions),
        output=await new_topic("out", partitions=partitions),
        dlq=await new_topic("dlq", partitions=1),
    )


def bridge_settings(
    broker: KafkaBroker,
    emulator: Emulator,
    topics: Topics,
    *,
    group: str,
    pipeline: PipelineSettings | None = None,
    states: StateSettings | None = None,
    **cloudflare: Any,
) -> Settings:
    """Settings for the session broker and ``emulator``. The state stream is off unless
    ``states`` turns it on: it polls the API, which would change the request counts that the
    command tests assert."""
    return Settings(
        kafka=KafkaSettings(
            bootstrap_servers=broker.bootstrap_servers,
            group_id=group,
            session_timeout_ms=2000,
            heartbeat_interval_ms=500,
            idempotent_producer=broker.flavour is not Flavour.TANSU,
        ),
        topics=TopicSettings(
            commands=[topics.commands],
            output=topics.output,
            dlq=topics.dlq,
            budget=f"{topics.commands}.budget",
        ),
        cloudflare=CloudflareSettings(
            account_id="test-account",
            api_token=emulator.config.token,
            base_url=emulator.base_url,
            **cloudflare,
        ),
        pipeline=pipeline
        or PipelineSettings(backoff_initial_seconds=0.05, backoff_max_seconds=0.5),
        states=states or StateSettings(enabled=False),
        log_format="json",
        health_port=0,
    )


@asynccontextmanager
async def running_bridge(settings: Settings) -> AsyncIterator[Bridge]:
    """A bridge serving in the background; stopped (drained) on exit, its errors re-raised."""
    bridge = Bridge(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(bridge.run(stop))
    ready = asyncio.create_task(bridge.ready.wait())
    await asyncio.wait({task, ready}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        task.result()
    assert bridge.ready.is_set(), "the bridge did not start within 60 s"
    try:
        yield bridge
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def send_commands(
    bootstrap: str, topic: str, commands: Sequence[dict[str, Any] | bytes]
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_request_size=4 * 1024 * 1024
    )
    await producer.start()
    try:
        futures = []
        for command in commands:
            if isinstance(command, bytes):
                futures.append(await producer.send(topic, command))
                continue
            key = command.get("instance_id")
            futures.append(
                await producer.send(
                    topic,
                    json.dumps(command).encode(),
                    key=key.encode() if isinstance(key, str) else None,
                )
            )
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


class OutputReader:
    """Reads every record of the output and dead-letter topics from the beginning; ``results``
    holds the command results, ``states`` the state records."""

    def __init__(
        self, bootstrap: str, topics: Topics, *, isolation_level: str = "read_uncommitted"
    ) -> None:
        self._topics = topics
        self._consumer = AIOKafkaConsumer(
            topics.output,
            topics.dlq,
            bootstrap_servers=bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            isolation_level=isolation_level,
        )
        self.results: list[dict[str, Any]] = []
        self.states: list[dict[str, Any]] = []
        self.dead_letters: list[Any] = []

    async def __aenter__(self) -> OutputReader:
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def until(self, *, results: int, dead_letters: int = 0, within: float = 60.0) -> None:
        """Read until at least this many records arrived; fail with what came otherwise."""
        deadline = time.monotonic() + within
        while len(self.results) < results or len(self.dead_letters) < dead_letters:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"got {len(self.results)}/{results} results and "
                    f"{len(self.dead_letters)}/{dead_letters} dead letters within {within}s"
                )
            batches = await self._consumer.getmany(timeout_ms=int(min(left, 0.5) * 1000))
            for records in batches.values():
                for record in records:
                    if record.topic == self._topics.dlq:
                        self.dead_letters.append(record)
                        continue
                    value = json.loads(record.value or b"null")
                    if isinstance(value, dict) and value.get("kind") == "state":
                        self.states.append(value)
                    else:
                        self.results.append(value)

    def answered(self) -> Counter[tuple[str, int, int]]:
        """Results per command record, by its (topic, partition, offset)."""
        return Counter(
            (r["source"]["topic"], r["source"]["partition"], r["source"]["offset"])
            for r in self.results
        )

    def by_command(self) -> dict[str, list[dict[str, Any]]]:
        grouped: dict[str, list[dict[str, Any]]] = {}
        for result in self.results:
            grouped.setdefault(result["command_id"], []).append(result)
        return grouped
